"""The protocol's leaderboard: rows (method, budget), cells mean ± std over seeds at the LR and epoch selected on
validation, a t-interval in the CSV, and each method's difference from LoRA tested by a paired bootstrap.

``use="dev"`` builds the *optimistic* view instead (LR and epoch picked on the dev set it reports); it is written
to differently named files and says so in its title.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from peftzoo import adapters
from peftzoo.bench import learned, plots, stats, store
from peftzoo.bench.configs import check_configs, config_line
from peftzoo.bench.protocol import Protocol, selection
from peftzoo.bench.tasks import get_task

SIG = ("`*` / `**`: the difference from LoRA at the same budget (LoRA at the middle budget for baselines and paper "
       "settings) is significant at p < 0.05 / 0.01, paired bootstrap over dev examples (2,000 resamples, the same "
       "draw applied to every seed of both methods, scores averaged over seeds).")


def _order(row):
    """Rows in the registry's order (baselines first), a method's paper setting after its budgets."""
    order = list(adapters.REGISTRY)
    m = row["method"]
    return (order.index(m) if m in order else len(order), m, row["label"] == "paper", row["budget"] or 0)


def build(runs: list[dict], use: str = "val", n_boot: int = 2000) -> dict:
    ok = [r for r in runs if r.get("status") == "ok"]
    for r in ok:
        if "val_metrics" not in r["history"][0]:
            raise ValueError(f"run {r['task']}/{r['run_id']} has no validation scores: it predates the selection "
                             f"protocol (rerun it with `peftzoo bench`)")
    sel = selection(ok, use)
    tasks = sorted({t for t, _, _ in sel})
    rows: dict = {}
    for (t, m, k), s in sel.items():
        r0 = s["runs"][0]
        row = rows.setdefault((m, k), {"method": m, "hparams": r0["spec"]["hparams"], "budget": r0["spec"]["budget"],
                                       "label": r0["spec"].get("cell") or "—", "tasks": {}})
        scores = [r["history"][s["epoch"] - 1]["metrics"]["score"] for r in s["runs"]]
        mean, sd = stats.mean_std(scores)
        row["tasks"][t] = {"sel": s, "mean": mean, "std": sd, "ci": stats.t_interval(scores), "n": len(scores),
                           "diff": None, "p": None}
        for f in ("achieved", "trainable"):
            row.setdefault(f, r0["params"]["solver"] if f == "achieved" and r0["params"].get("solver") is not None
                           else r0["params"]["adapter" if f == "achieved" else "trainable"])
        row.setdefault("runs", []).extend(s["runs"])
    for (m, k), row in rows.items():
        for t, cell in row["tasks"].items():
            ref = _lora_ref(rows, t, row["budget"])
            if ref is None or ref is row or not all("dev_preds" in r["history"][0] for r in row["runs"] + ref["runs"]):
                continue  # no LoRA row, or runs without per-example predictions: no test
            a, b = cell["sel"], ref["tasks"][t]["sel"]
            labels = {sp: stats.decode_preds(x) for sp, x in a["runs"][0]["dev_labels"].items()}
            cell["diff"], cell["p"] = stats.paired_bootstrap(
                get_task(t).metric, _preds(a), _preds(b), labels, n_boot=n_boot)
            cell["ref"] = ref["label"]
    for row in rows.values():
        ms = [row["tasks"][t]["mean"] if t in row["tasks"] else None for t in tasks]
        row["avg"] = float(np.mean(ms)) if all(x is not None for x in ms) else None
        row["seeds"] = min(c["n"] for c in row["tasks"].values())
    _timing(rows, tasks)
    return {"tasks": tasks, "rows": sorted(rows.values(), key=_order), "selection": sel,
            "bad": [r for r in runs if r.get("status") != "ok"], "ok": ok}


def separation(b: dict, factor: float = 3.0) -> dict:
    """Per task with both baselines: does full FT beat head-only by more than ``factor`` × the larger 95% t-interval
    half-width of the two? (How a preset's tasks are chosen: a task where they do not differ cannot rank methods.)"""
    base = {r["method"]: r for r in b["rows"] if r["method"] in ("full", "head")}
    out = {}
    for t in b["tasks"]:
        cells = [base[m]["tasks"].get(t) for m in ("full", "head") if m in base]
        if len(cells) < 2 or None in cells or any(c["ci"][0] is None for c in cells):
            continue
        half = max((c["ci"][1] - c["ci"][0]) / 2 for c in cells)
        gap = cells[0]["mean"] - cells[1]["mean"]
        out[t] = {"gap": gap, "half_width": half, "separates": gap > factor * half}
    return out


def _preds(sel):
    return [{sp: stats.decode_preds(x) for sp, x in r["history"][sel["epoch"] - 1]["dev_preds"].items()}
            for r in sel["runs"]]


def _lora_ref(rows, task, budget):
    loras = [r for r in rows.values() if r["method"] == "lora" and task in r["tasks"]]
    same = [r for r in loras if budget is not None and r["budget"] == budget]
    if same:
        return same[0]
    swept = [r for r in loras if len(r["tasks"][task]["sel"]["per_lr"]) > 1]  # the middle budget ran the sweep
    return (swept or loras or [None])[0]


def _timing(rows, tasks):
    def med(m):
        return {t: np.median([r["median_step_s"] for row in rows.values() if row["method"] == m
                              for r in row["runs"] if r["task"] == t] or [np.nan]) for t in tasks}
    head, full = med("head"), med("full")
    for row in rows.values():
        rs = row["runs"]
        for name, ref in (("step_vs_head", head), ("step_vs_full", full)):
            xs = [r["median_step_s"] / ref[r["task"]] for r in rs if np.isfinite(ref[r["task"]])]
            row[name] = float(np.median(xs)) if xs else None
        row["peak_mem_mb"] = max(r["peak_mem_mb"] or 0 for r in rs)
        row["peak_mem_kind"] = rs[0].get("peak_mem_kind")
        row["file_kb"] = rs[0]["adapter_file_bytes"] / 1024


def _num(x, f="{:.2f}"):
    return "—" if x is None else f.format(x)


def at_edge(sel: dict) -> bool:
    """The selected LR is the largest or smallest of a swept grid (>= 3 points): the optimum may lie outside it."""
    lrs = sorted(lr for lr, v in sel["per_lr"].items() if v is not None)
    return len(lrs) >= 3 and sel["lr"] in (lrs[0], lrs[-1])


def _lrs(row, tasks):
    got = {t: (f"{row['tasks'][t]['sel']['lr']:g}" + ("†" if at_edge(row["tasks"][t]["sel"]) else ""),
               row["tasks"][t]["sel"]["epoch"]) for t in tasks if t in row["tasks"]}
    if len({v for v in got.values()}) == 1:
        lr, ep = next(iter(got.values()))
        return f"{lr} / {ep}"
    return ", ".join(f"{t} {lr} / {ep}" for t, (lr, ep) in got.items())


def _n_dev(sizes: dict) -> int:
    return sum(x for k, x in sizes.items() if k not in ("train", "val"))


def markdown(suite: str, b: dict, use: str) -> str:
    tasks, rows, ok = b["tasks"], b["rows"], b["ok"]
    prot = ok[0].get("protocol") if ok else None
    dev = sorted({r["device"] for r in ok})
    v, spec = ok[0]["versions"], ok[0]["spec"]
    sizes = {t: next((r["split_sizes"] for r in ok if r["task"] == t and "split_sizes" in r), None) for t in tasks}
    title = (f"# Leaderboard: `{suite}`" if use == "val" else
             f"# OPTIMISTIC leaderboard: `{suite}` (LR and epoch chosen on the dev set it reports: biased upward)")
    p = Protocol(**{k: (tuple(x) if k == "paper_settings" else x) for k, x in prot.items() if k != "stage"}) \
        if prot else None
    lines = [title, "", b.get("reproduce") or "Reproduce: not known (no runs were read from a results folder).", "",
             (p.describe(learned.swept(b)) if p else "Protocol: not recorded in these runs.")
             + (" THIS VIEW IGNORES IT: selection used the dev scores." if use == "dev" else ""), "",
             *([s, ""] if (s := learned.preset_sentence(b)) else []),
             f"Device: {', '.join(dev)}. Versions: {', '.join(f'{k} {x}' for k, x in v.items())}. "
             f"Model: `{spec.get('model') or 'all-MiniLM-L6-v2 (embedded)'}`. Config: {config_line(ok)} "
             "Examples (train / validation / dev): "
             + "; ".join(f"{t} {s['train']:,} / {s['val']:,} / {_n_dev(s):,}" if s else f"{t} not recorded"
                         for t, s in sizes.items()) + ".", "",
             "Cells: GLUE dev metric ×100, mean ± std over seeds (`(n=1)`: a single seed, so no std; MRPC: mean of F1 "
             "and accuracy; STS-B: of Pearson and Spearman; CoLA: Matthews corr.); the CSV adds the 95% t-interval. " + SIG + " `budget`: the "
             "matched adapter-element count (achieved / target in `params`; AdaLoRA: its final budget) or `paper` "
             "(the method's paper setting). `LR / epoch`: selected on validation; `†`: the selected LR is an end point of the swept grid, so the best LR may lie outside it. Step time is the median training "
             "step relative to head-only and to full fine-tuning. `process peak MB`: "
             f"{rows[0]['peak_mem_kind'] if rows else '—'} during training (weights, data and the sweep's earlier "
             "runs included). `step MB`: " + (b["step_memory"]["measured"] + f" (`{b['step_memory']['command']}`, "
             f"batch {b['step_memory']['batch_size']} × {b['step_memory']['max_len']})" if b.get("step_memory")
             else "not measured (run benchmarks/step_memory.py)") + ".", "",
             "| method | budget | hparams | " + " | ".join(tasks) + " | avg | LR / epoch | params | trainable "
             "| step / head | step / full | process peak MB | step MB | file KB | seeds |",
             "|" + "---|" * (len(tasks) + 14)]
    for r in rows:
        hp = ", ".join(f"{k}={x}" for k, x in r["hparams"].items()) or "—"
        cells = []
        for t in tasks:
            c = r["tasks"].get(t)
            spread = f" ± {100 * c['std']:.1f}" if c and c["n"] > 1 else " (n=1)"  # one seed has no spread
            cells.append("—" if c is None else f"{100 * c['mean']:.1f}{spread}{stats.significance_mark(c['p'])}")
        tgt = f" / {r['budget']:,}" if r["budget"] else ""
        lines.append(f"| {r['method']} | {r['label']} | {hp} | " + " | ".join(cells)
                     + f" | {_num(r['avg'] and 100 * r['avg'], '{:.1f}')} | {_lrs(r, tasks)} | {r['achieved']:,}{tgt} "
                     f"| {r['trainable']:,} | {_num(r['step_vs_head'])} | {_num(r['step_vs_full'])} "
                     f"| {r['peak_mem_mb']:.0f} | {_num(r.get('step_mb'), '{:.0f}')} | {r['file_kb']:.0f} | {r['seeds']} |")
    if (s := learned.not_learning(b)) is not None:
        lines += ["", s]
    sep = separation(b)
    if sep:
        lines += ["", "Separation (a task is in a preset only if full FT beats head-only by more than 3× the larger 95% "
                  "half-width): " + "; ".join(
                      f"{t} {100 * x['gap']:.1f} vs 3 × {100 * x['half_width']:.1f} = {300 * x['half_width']:.1f}: "
                      + ("separates" if x["separates"] else "DOES NOT SEPARATE") for t, x in sep.items()) + "."]
    if b["bad"]:
        lines += ["", "Runs not in the table:", ""]
        lines += [f"- {r['spec']['task']} {r['spec']['method']} lr={r['spec']['lr']:g} s{r['spec']['seed']}: "
                  f"{r['status']}: {r.get('reason') or r.get('error')}" for r in b["bad"]]
    if b.get("invalid"):
        lines += ["", "Invalid run records (skipped):", ""] + [f"- `{p}`: {why}" for p, why in b["invalid"]]
    return "\n".join(lines) + "\n"


def csv_text(b: dict) -> str:
    tasks = b["tasks"]
    per = ["mean", "std", "ci95_lo", "ci95_hi", "n_seeds", "lr", "lr_at_grid_edge", "epoch", "diff_vs_lora", "p_vs_lora"]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["method", "budget", "hparams", *[f"{t}_{k}" for t in tasks for k in per], "avg", "params_target",
                "params_achieved", "trainable", "step_vs_head", "step_vs_full", "peak_mem_mb", "step_mb", "file_kb"])
    for r in b["rows"]:
        vals = []
        for t in tasks:
            c = r["tasks"].get(t)
            vals += ([None] * len(per) if c is None else
                     [c["mean"], c["std"], *c["ci"], c["n"], c["sel"]["lr"], at_edge(c["sel"]), c["sel"]["epoch"],
                      c["diff"], c["p"]])
        w.writerow([r["method"], r["label"], store_hp(r["hparams"]), *vals, r["avg"], r["budget"], r["achieved"],
                    r["trainable"], r["step_vs_head"], r["step_vs_full"], r["peak_mem_mb"], r.get("step_mb"),
                    r["file_kb"]])
    return out.getvalue()


def add_step_memory(b: dict, path: Path) -> None:
    """Each row's ``step_mb`` from ``benchmarks/step_memory.py``'s file (matched on method and hparams), if any."""
    if not path.exists():
        return
    sm = json.loads(path.read_text())
    got = {(x["method"], json.dumps(x["hparams"], sort_keys=True)): x["step_peak_mb"] for x in sm["rows"]}
    for r in b["rows"]:
        r["step_mb"] = got.get((r["method"], json.dumps(r["hparams"], sort_keys=True)))
    b["step_memory"] = sm


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


def write(root, suite: str, optimistic: bool = False, n_boot: int = 2000, written: list | None = None) -> Path:
    """The table's files under <root>/<suite>/; returns the .md path and appends every path written to ``written``."""
    from peftzoo.bench import reproduce
    invalid = []
    runs = store.read_runs(Path(root), suite, invalid)
    for p, problem in invalid:
        print(f"peftzoo table: skipping invalid run record {p}: {problem}", file=sys.stderr)
    out = Path(root) / suite
    if not runs:
        raise _no_runs(root, suite, invalid)
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        bad = [r for r in runs if r.get("status") != "ok"]
        listed = "\n".join(f"  {r['task']} {r['method']} s{r['seed']}: {r['status']}: "
                            f"{r.get('reason') or r.get('error')}" for r in bad[:20])
        raise ValueError(f"no successful run in {out / 'runs'} ({len(bad)} runs, none ok), so no table; "
                         f"nothing was written:\n{listed}\nFix the cause, then `peftzoo bench --retry-failed`.")
    check_configs(ok)
    use = "dev" if optimistic else "val"
    b = {**build(runs, use, n_boot), "invalid": invalid,
         "reproduce": reproduce.line(runs, root, suite, optimistic=use == "dev"),
         "description": reproduce.description(runs, suite)}
    add_step_memory(b, out / "step_memory.json")
    stem = "leaderboard" if use == "val" else "leaderboard-optimistic"
    paths = [out / f"{stem}{x}" for x in (".md", ".csv", ".png", "-lr.png")]
    # each file atomic: a failed write leaves the old file whole
    store.write_text(paths[0], markdown(suite, b, use))
    store.write_text(paths[1], csv_text(b))
    pts = [{"task": t, "method": r["method"], "x": r["trainable"], "mean": c["mean"], "std": c["std"]}
           for r in b["rows"] for t, c in r["tasks"].items()]
    plots.pareto(paths[2], b["tasks"], pts, "optimistic (selected on dev)" if use == "dev" else "")
    curves = [{"task": t, "method": m, "per_lr": s["per_lr"], "selected": s["lr"]}
              for (t, m, _), s in b["selection"].items() if len(s["per_lr"]) > 1]
    plots.lr_curves(paths[3], b["tasks"], curves,
                    "validation score ×100" if use == "val" else "dev score ×100 (optimistic)")
    if written is not None:
        written += paths
    return paths[0]
