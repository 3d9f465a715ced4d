"""`peftzoo table`: a suite's run records as leaderboard.{md,csv,png} and leaderboard-lr.png (the board's rows and
statistics: ``leaderboard``; one config per table: ``configs``; the Reproduce line: ``reproduce``; the HTML page,
``--html``: ``bench.html``), each file written atomically."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from peftzoo.bench import learned, plots, reproduce, store, ties
from peftzoo.bench.configs import check_configs, config_line
from peftzoo.bench.leaderboard import Board, at_edge, build, separation

SIG = ("**Bold**: not distinguishable from the column's best row (two-sided p ≥ 0.05 against it); `(a–b)`: the ranks "
       "the tests leave open to the row (1 = best; from 1 + the number of rows significantly above it to R − the "
       "number significantly below it, R the rows compared); rows are in the registry's order, not by score. `▲` / `▼`: above / below LoRA at "
       "the same budget (LoRA at the middle budget for baselines and paper settings) at p < 0.05. All from a "
       "two-level bootstrap (`peftzoo/bench/significance.py`, {n_boot:,} resamples): each resample draws the dev "
       "examples once per task, the same draw for every row (paired), and each row's seeds within the row, their "
       "spread scaled to the seed variance beyond dev sampling; a difference is tested as Δ / its bootstrap SE on "
       "Satterthwaite's degrees of freedom. `avg`: the mean over the tasks, ranked the same way (each task's draws "
       "independent).")
CELLS = ("Cells: each task's dev metric ×100 (a user-defined task's is said above), mean ± std over seeds (`(n=1)`: a single seed, so no std; MRPC: mean of F1 "
         "and accuracy; STS-B: of Pearson and Spearman; CoLA: Matthews corr.); the CSV adds the 95% t-interval. "
         "{sig} `budget`: the matched adapter-element count (achieved / target in `params`; AdaLoRA: its final "
         "budget) or `paper` (the method's paper setting). `LR / epoch`: selected on validation; `†`: the selected LR "
         "is an end point of the swept grid (a budget's own local grid, where the protocol says LR per budget), so "
         "the best LR may lie outside it. Step time is the median training "
         "step relative to head-only and to full fine-tuning (— where head-only's head is fitted on cached features: "
         "an L-BFGS iteration is no training step). `process peak MB`: ")


def _num(x, f="{:.2f}"):
    return "—" if x is None else f.format(x)


def lr_cell(row, tasks) -> str:
    """The LR / epoch column: one value for all tasks where they agree, else one per task."""
    got = {t: (f"{row.tasks[t].sel.lr:g}" + ("†" if at_edge(row.tasks[t].sel) else ""), row.tasks[t].sel.epoch)
           for t in tasks if t in row.tasks}
    if len({v for v in got.values()}) == 1:
        lr, ep = next(iter(got.values()))
        return f"{lr} / {ep}"
    return ", ".join(f"{t} {lr} / {ep}" for t, (lr, ep) in got.items())


def _n_dev(sizes: dict) -> int:
    return sum(x for k, x in sizes.items() if k not in ("train", "val") and not k.startswith("test"))


def _n_test(sizes: dict) -> str:
    n = sum(x for k, x in sizes.items() if k.startswith("test"))
    return f" / test {n:,}" if n else ""


def _user_tasks(b: Board) -> list:
    """The board's user-defined tasks (a task file's or a preset's definitions), in board order."""
    user = {r.task for r in b.ok if r.spec.task_def is not None}
    return [t for t in b.tasks if t in user]


def task_sentence(b: Board) -> str | None:
    """What the cells of user-defined tasks are (metric, classes) and that test splits are never selected on."""
    parts = []
    for t in _user_tasks(b):
        task = b.task_of[t]
        what = "regression" if task.regression else f"{task.num_labels} classes ({', '.join(task.labels)})"
        pos = f", positive class {task.positive!r}" if task.positive is not None else ""
        parts.append(f"{t}: {task.metric}{pos}, {what}")
    out = f"User-defined tasks: {'; '.join(parts)}." if parts else ""
    if b.test_tasks:
        out += (" `<task> test`: the test split's score at the LR and epoch selected on validation (mean ± std over "
                "seeds), shown beside dev and never used to select.")
    return out.strip() or None


def header(suite: str, b: Board, use: str) -> list[str]:
    """The lines above the table (markdown): title, Reproduce, protocol, device and config, what the cells mean."""
    ok = b.ok
    prot = ok[0].spec.protocol if ok else None
    v, spec = ok[0].versions, ok[0].spec
    sizes = {t: next((r.split_sizes for r in ok if r.task == t and r.split_sizes), None) for t in b.tasks}
    title = (f"# Leaderboard: `{suite}`" if use == "val" else
             f"# OPTIMISTIC leaderboard: `{suite}` (LR and epoch chosen on the dev set it reports: biased upward)")
    sm = b.step_memory
    return [title, "", b.reproduce or "Reproduce: not known (no runs were read from a results folder).", "",
            (prot.describe(learned.swept(b)) if prot else "Protocol: not recorded in these runs.")
            + (" THIS VIEW IGNORES IT: selection used the dev scores." if use == "dev" else ""), "",
            *([s, ""] if (s := learned.preset_sentence(b)) else []),
            f"Device: {', '.join(sorted({r.device for r in ok}))}. Versions: {', '.join(f'{k} {x}' for k, x in v.items())}. "
            f"Model: `{spec.model or 'all-MiniLM-L6-v2 (embedded)'}`. {layers_line(ok)} Config: {config_line(ok)} "
            "Examples (train / validation / dev): "
            + "; ".join(f"{t} {s['train']:,} / {s['val']:,} / {_n_dev(s):,}{_n_test(s)}" if s else f"{t} not recorded"
                        for t, s in sizes.items()) + ".", "",
            *([m, ""] if (m := ties.mdd_sentence(b)) else []),
            *([s, ""] if (s := task_sentence(b)) else []),
            CELLS.replace("{sig}", _sig(b))
            + f"{b.rows[0].peak_mem_kind if b.rows else '—'} during training (weights, data and the sweep's "
            "earlier runs included). `step MB`: " + (sm["measured"] + f" (`{sm['command']}`, batch "
                                                     f"{sm['batch_size']} × {sm['max_len']})" if sm
                                                     else "not measured (run benchmarks/step_memory.py)") + ".", ""]


def layers_line(ok: list) -> str:
    """The layers the runs adapted and trained in full (a preset that names none gets its model's defaults)."""
    def names(v):
        return f"`{v}`" if isinstance(v, str) else ", ".join(f"`{x}`" for x in v) or "none"
    got = sorted({(json.dumps(r.spec.targets), json.dumps(r.spec.train_modules)) for r in ok})
    return " ".join(f"Adapted layers (targets): {names(json.loads(t))}; trained in full by every method (head): "
                    f"{names(json.loads(h))}." for t, h in got)


def _sig(b: Board) -> str:
    n_boot = next((x.n_boot for x in b.ties.values()), None)
    if n_boot is None:
        return "No significance: these runs keep no per-example dev predictions (rerun them with `peftzoo bench`)."
    return SIG.format(n_boot=n_boot)


def _ranked(text: str, group: bool | None, rank: tuple | None, bold: bool = True) -> str:
    """A value with the tie-aware marks: bold (markdown, unless ``bold=False``) in the best group, then its rank
    interval."""
    return (f"**{text}**" if group and bold else text) + (f" ({ties.rank_text(rank)})" if rank else "")


def cell_text(c, bold: bool = True) -> str:
    """A task cell: mean ± std over seeds ×100, bold in the best group, its rank interval, ▲/▼ against LoRA."""
    if c is None:
        return "—"
    spread = f" ± {100 * c.std:.1f}" if c.n > 1 else " (n=1)"  # one seed has no spread
    vs_lora = "" if c.p is None or c.p >= 0.05 else ("▲" if c.diff > 0 else "▼")
    return _ranked(f"{100 * c.mean:.1f}{spread}", c.best_group, c.rank, bold) + vs_lora


def _spread(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else " (n=1)")  # one seed has no spread


def _row_line(r, tasks, test_tasks=()) -> str:
    hp = ", ".join(f"{k}={x}" for k, x in r.hparams.items()) or "—"
    cells = []
    for t in tasks:
        c = r.tasks.get(t)
        cells.append(cell_text(c))
        if t in test_tasks:  # the test split at the validation-selected LR and epoch: reported, never tested
            cells.append("—" if c is None or c.test is None else _spread(c.test, c.test_std, c.n))
    avg = "—" if r.avg is None else _ranked(f"{100 * r.avg:.1f}", r.avg_group, r.avg_rank)
    tgt = f" / {r.budget:,}" if r.budget else ""
    return (f"| {r.method} | {r.label} | {hp} | " + " | ".join(cells)
            + f" | {avg} | {lr_cell(r, tasks)} | {r.achieved:,}{tgt} "
            f"| {r.trainable:,} | {_num(r.step_vs_head)} | {_num(r.step_vs_full)} "
            f"| {r.peak_mem_mb:.0f} | {_num(r.step_mb, '{:.0f}')} | {r.file_kb:.0f} | {r.seeds} |")


def markdown(suite: str, b: Board, use: str) -> str:
    tasks, test = b.tasks, b.test_tasks
    cols = [c for t in tasks for c in ([t, f"{t} test"] if t in test else [t])]
    lines = header(suite, b, use) + [
        "| method | budget | hparams | " + " | ".join(cols) + " | avg | LR / epoch | params | trainable "
        "| step / head | step / full | process peak MB | step MB | file KB | seeds |",
        "|" + "---|" * (len(cols) + 14)] + [_row_line(r, tasks, test) for r in b.rows]
    for s in notes(b):
        lines += ["", *s]
    return "\n".join(lines) + "\n"


def notes(b: Board) -> list[list[str]]:
    """The paragraphs under the table (markdown; a list item is a line starting "- "): rows that did not learn, one
    seed, separation, runs not in the table, records that did not read."""
    out = [[s] for s in (ties.groups_sentence(b), learned.not_learning(b), learned.one_seed(b)) if s is not None]
    sep = separation(b)
    if sep:
        out += [["Separation (a task is in a preset only if full FT beats head-only by more than 3× the larger 95% "
                  "half-width): " + "; ".join(
                      f"{t} {100 * x['gap']:.1f} vs 3 × {100 * x['half_width']:.1f} = {300 * x['half_width']:.1f}: "
                      + ("separates" if x["separates"] else "DOES NOT SEPARATE") for t, x in sep.items()) + "."]]
    if b.bad:
        out += [["Runs not in the table:"],
                [f"- {r.task} {r.method} lr={r.spec.lr:g} s{r.seed}: {r.status}: {r.why}" for r in b.bad]]
    if b.invalid:
        out += [["Invalid run records (skipped):"], [f"- `{p}`: {why}" for p, why in b.invalid]]
    return out


def csv_text(b: Board) -> str:
    tasks, test = b.tasks, b.test_tasks
    per = ["mean", "std", "ci95_lo", "ci95_hi", "n_seeds", "lr", "lr_at_grid_edge", "epoch", "diff_vs_lora",
           "p_vs_lora", "best_group", "rank_lo", "rank_hi"]
    per_test = ["test_mean", "test_std"]  # tasks with a test split only
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["method", "budget", "hparams", *[f"{t}_{k}" for t in tasks for k in per + per_test * (t in test)],
                "avg", "avg_best_group", "avg_rank_lo", "avg_rank_hi", "params_target",
                "params_achieved", "trainable", "step_vs_head", "step_vs_full", "peak_mem_mb", "step_mb", "file_kb"])
    for r in b.rows:
        vals = []
        for t in tasks:
            c = r.tasks.get(t)
            vals += ([None] * len(per) if c is None else
                     [c.mean, c.std, *c.ci, c.n, c.sel.lr, at_edge(c.sel), c.sel.epoch, c.diff, c.p, c.best_group,
                      *(c.rank or (None, None))])
            if t in test:
                vals += [None, None] if c is None else [c.test, c.test_std]
        w.writerow([r.method, r.label, store_hp(r.hparams), *vals, r.avg, r.avg_group,
                    *(r.avg_rank or (None, None)), r.budget, r.achieved, r.trainable,
                    r.step_vs_head, r.step_vs_full, r.peak_mem_mb, r.step_mb, r.file_kb])
    return out.getvalue()


def add_step_memory(b: Board, path: Path) -> None:
    """Each row's ``step_mb`` from ``benchmarks/step_memory.py``'s file (matched on method and hparams), if any."""
    if not path.exists():
        return
    sm = json.loads(path.read_text())
    got = {(x["method"], json.dumps(x["hparams"], sort_keys=True)): x["step_peak_mb"] for x in sm["rows"]}
    for r in b.rows:
        r.step_mb = got.get((r.method, json.dumps(r.hparams, sort_keys=True)))
    b.step_memory = sm


def store_hp(hp: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(hp.items()))


def suites(root) -> list[str]:
    """The suites under a results folder: its sub-folders holding a runs/ folder."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if (p / "runs").is_dir()) if root.is_dir() else []


def _no_runs(root, suite: str, invalid: list) -> FileNotFoundError:
    what = f" ({len(invalid)} invalid records)" if invalid else ""
    have = suites(root)
    where = (f"the suites under {root} are {', '.join(have)} (choose one with --suite)" if have else
             (f"{root} holds no suite yet" if Path(root).is_dir() else f"there is no folder {root}")
             + f"; `peftzoo bench --results {root}` writes runs there (the committed results: --results results)")
    return FileNotFoundError(f"no runs under {Path(root) / suite / 'runs'}{what}: {where}")


def _read(root, suite: str) -> tuple[list, list]:
    """(the suite's records, [(path, problem)] of those that did not read); an error when none can be tabled."""
    invalid = []
    runs = store.read_runs(Path(root), suite, invalid)
    for p, problem in invalid:
        print(f"peftzoo table: skipping invalid run record {p}: {problem}", file=sys.stderr)
    if not runs:
        raise _no_runs(root, suite, invalid)
    if not any(r.ok for r in runs):
        bad = [r for r in runs if not r.ok]
        listed = "\n".join(f"  {r.task} {r.method} s{r.seed}: {r.status}: {r.why}" for r in bad[:20])
        raise ValueError(f"no successful run in {Path(root) / suite / 'runs'} ({len(bad)} runs, none ok), so no "
                         f"table; nothing was written:\n{listed}\nFix the cause, then `peftzoo bench --retry-failed`.")
    check_configs([r for r in runs if r.ok])
    return runs, invalid


LR_YLABEL = {"val": "validation score ×100", "dev": "dev score ×100 (optimistic)"}


def lr_curves(b: Board, task: str | None = None) -> list[dict]:
    """The swept groups' selection score per LR (``plots.lr_curves``'s curves), methods in the table's order."""
    order = {r.method: i for i, r in reversed(list(enumerate(b.rows)))}
    return sorted(({"task": t, "method": m, "per_lr": s.per_lr, "selected": s.lr}
                   for (t, m, _), s in b.selection.items() if len(s.per_lr) > 1 and task in (None, t)),
                  key=lambda c: (order.get(c["method"], len(order)), c["task"]))


def write(root, suite: str, optimistic: bool = False, n_boot: int = 2000, written: list | None = None,
          also: tuple = ()) -> Path:
    """The table's files under <root>/<suite>/ (``optimistic=True``: the flagged best-on-dev view); returns the .md
    path and appends every path written to ``written``. ``also``: more writers of the same board, each called as
    ``w(suite, board, use, folder)`` and returning the paths it wrote (``--html``: ``bench.html.write``)."""
    runs, invalid = _read(root, suite)
    out, use = Path(root) / suite, "dev" if optimistic else "val"
    b = build(runs, use, n_boot)
    b.invalid, b.reproduce = invalid, reproduce.line(runs, root, suite, optimistic=use == "dev")
    b.description = reproduce.description(runs, suite)
    add_step_memory(b, out / "step_memory.json")
    stem = "leaderboard" if use == "val" else "leaderboard-optimistic"
    paths = [out / f"{stem}{x}" for x in (".md", ".csv", ".png", "-lr.png")]
    # each file atomic: a failed write leaves the old file whole
    store.write_text(paths[0], markdown(suite, b, use))
    store.write_text(paths[1], csv_text(b))
    pts = [{"task": t, "method": r.method, "x": r.trainable, "mean": c.mean, "std": c.std}
           for r in b.rows for t, c in r.tasks.items()]
    titles = {t: f"{t} ({b.task_of[t].metric})" for t in _user_tasks(b)}
    plots.pareto(paths[2], b.tasks, pts, "optimistic (selected on dev)" if use == "dev" else "", titles)
    plots.lr_curves(paths[3], b.tasks, lr_curves(b), LR_YLABEL[use])
    for w in also:
        paths += w(suite, b, use, out)
    if written is not None:
        written += paths
    return paths[0]
