"""Should ``precision: auto`` mean bf16 on a CPU with native bf16? The `cpu` leaderboard's selected configurations
re-run in fp32 and in bf16, same seeds, and compared.

For every chosen method (its row at ``--budget``; the baselines' only row) and task, the committed leaderboard
(``--results``/``--suite``, default results/cpu) gives the selected LR and epoch and the seeds run there; each of
those runs is trained again with ``precision`` "fp32" and "bf16" (nothing else changed; the two alternate in order,
so load on the machine hits both alike). Printed per (task, method): the dev scores at the selected epoch per
precision, fp32's mean and 95% t-interval over seeds, whether bf16's mean lies inside it, the committed score
(the fp32 re-run should reproduce it: "auto" is fp32 on a CPU), and bf16 / fp32 of the median training step and of
the training loop's time. The decision line holds when every bf16 mean lies inside fp32's interval.

Resumable: each run is a JSON under ``--out``/<suite>/runs/<task>/ named by its run id; a finished one is read
back, not run again. ``--smoke`` shrinks every run (32 training rows, 1 epoch, 24 dev rows) to check the code
path; its numbers mean nothing.

    python benchmarks/bf16_decision.py --threads 2            # 6 methods x 2 tasks x 3 seeds x 2 precisions
    python benchmarks/bf16_decision.py --methods lora head --tasks SST-2 --smoke --out /tmp/bf16-smoke
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

from peftzoo.bench import leaderboard, stats, store
from peftzoo.bench.runner import execute

REPO = Path(__file__).resolve().parents[1]
METHODS = ("full", "head", "lora", "dora", "vera", "adalora")
PRECISIONS = ("fp32", "bf16")
SMOKE = dict(max_train=32, epochs=1, max_eval=24, val_cap=16, batch_size=16, max_len=32)


def cells(board, methods, tasks, budget: str) -> list:
    """(task, row, selected) for each chosen method's row at ``budget`` (a baseline's only row) on each task."""
    out = []
    for m in methods:
        rows = [r for r in board.rows if r.method == m and r.label in (budget, "—")]
        if not rows:
            have = sorted({r.label for r in board.rows if r.method == m})
            raise SystemExit(f"{m}: no leaderboard row at budget {budget!r} (rows: {have or 'none'}); "
                             f"pass --budget LABEL or leave {m} out of --methods")
        for t in tasks:
            if t not in rows[0].tasks:
                raise SystemExit(f"{m} has no {t} cell on the leaderboard (tasks: {sorted(rows[0].tasks)})")
            out.append((t, rows[0], rows[0].tasks[t].sel))
    return out


def specs_for(sel, precision: str, args) -> list:
    """The selected runs' specs with ``precision`` (and the smoke / model overrides), labelled ``args.suite``, bound
    to the data they will read."""
    kw = dict(precision=precision, suite=args.suite, **(SMOKE if args.smoke else {}))
    if args.model:
        kw["model"] = args.model
    return [dataclasses.replace(r.spec, **kw).bind_data(args.data_dir) for r in sel.runs]  # ids name the data


def run_all(work: list, args) -> dict:
    """Run (or read back) every spec; {run_id: record}."""
    recs, todo = {}, []
    for spec in work:
        path = store.run_path(Path(args.out), args.suite, spec.task, spec.run_id)
        if store.is_finished(path):
            recs[spec.run_id] = store.read_record(path)[0]
        else:
            todo.append((spec, path))
    print(f"{len(work)} runs: {len(recs)} already under {args.out}, {len(todo)} to run", flush=True)
    for i, (spec, path) in enumerate(todo, 1):
        rec = execute(spec, data_dir=args.data_dir, progress=False)
        store.write_record(path, rec)
        recs[spec.run_id] = rec
        print(f"[{i}/{len(todo)}] {spec.label} {spec.precision}: {rec.status}"
              + (f" ({rec.error})" if rec.error else f", step {rec.median_step_s * 1e3:.0f} ms"), flush=True)
    return recs


def summarise(plan: list, recs: dict, smoke: bool = False) -> list:
    """One row per (task, method): scores per precision, fp32's interval, the verdict and the time ratios."""
    rows = []
    for task, row, sel, by_prec in plan:
        got = {p: [recs[s.run_id] for s in specs] for p, specs in by_prec.items()}
        if not all(r.ok for rs in got.values() for r in rs):
            bad = [f"{r.spec.precision} s{r.spec.seed}: {r.error or r.reason}" for rs in got.values() for r in rs
                   if not r.ok]
            rows.append({"task": task, "method": row.method, "label": row.label, "failed": bad})
            continue
        epoch = min(sel.epoch, len(got["fp32"][0].history))
        score = {p: [r.history[epoch - 1].score for r in rs] for p, rs in got.items()}
        lo, hi = stats.t_interval(score["fp32"])
        mean = {p: statistics.mean(v) for p, v in score.items()}
        within = None if lo is None else bool(lo <= mean["bf16"] <= hi)
        ratio = {k: statistics.median([getattr(b, k) / getattr(f, k) for f, b in zip(got["fp32"], got["bf16"])])
                 for k in ("median_step_s", "train_s")}
        committed = None if smoke else sel.scores(epoch)  # smoke runs are other runs: nothing to compare
        rows.append({"task": task, "method": row.method, "label": row.label, "lr": sel.lr, "epoch": epoch,
                     "seeds": [r.spec.seed for r in got["fp32"]], "scores": score, "mean": mean,
                     "fp32_ci": [lo, hi], "bf16_within_fp32_ci": within, "committed": committed,
                     "fp32_reproduces": None if committed is None else max(
                         abs(a - b) for a, b in zip(score["fp32"], committed)),
                     "step_bf16_over_fp32": ratio["median_step_s"], "train_bf16_over_fp32": ratio["train_s"]})
    return rows


def report(rows: list, command: str) -> str:
    def pct(xs):
        return " ".join(f"{100 * x:.1f}" for x in xs)
    lines = ["# bf16 vs fp32 on the cpu leaderboard's selected configurations", "", f"Reproduce: `{command}`", "",
             "| task | method | budget | LR / epoch | fp32 ×100 (seeds) | bf16 ×100 (seeds) | fp32 mean [95% CI] | "
             "bf16 mean | inside | max \\|committed − fp32 rerun\\| | step bf16/fp32 | train bf16/fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['task']} | {r['method']} | {r['label']} | failed: {'; '.join(r['failed'])} |")
            continue
        lo, hi = r["fp32_ci"]
        ci = f"{100 * r['mean']['fp32']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else \
            f"{100 * r['mean']['fp32']:.1f} (one seed: no interval)"
        rep = "—" if r["fp32_reproduces"] is None else f"{100 * r['fp32_reproduces']:.2f}"
        lines.append(f"| {r['task']} | {r['method']} | {r['label']} | {r['lr']:g} / {r['epoch']} | "
                     f"{pct(r['scores']['fp32'])} | {pct(r['scores']['bf16'])} | {ci} | "
                     f"{100 * r['mean']['bf16']:.1f} | {_yes(r['bf16_within_fp32_ci'])} | {rep} | "
                     f"{r['step_bf16_over_fp32']:.2f} | {r['train_bf16_over_fp32']:.2f} |")
    done = [r for r in rows if "failed" not in r]
    inside = [r for r in done if r["bf16_within_fp32_ci"]]
    steps = [r["step_bf16_over_fp32"] for r in done]
    verdict = ("holds: every bf16 mean lies inside fp32's seed interval" if done and len(inside) == len(done)
               else f"does not hold: {len(done) - len(inside)} of {len(done)} cells outside (or without) fp32's "
                    "seed interval" + (f", {len(rows) - len(done)} failed" if len(rows) > len(done) else ""))
    lines += ["", f"Decision (bf16 as `auto` on such a CPU): {verdict}."
              + (f" Median step time bf16 / fp32 over the cells: {statistics.median(steps):.2f} "
                 f"({min(steps):.2f}..{max(steps):.2f})." if steps else "")]
    return "\n".join(lines) + "\n"


def _yes(v):
    return "—" if v is None else ("yes" if v else "no")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--tasks", nargs="+", default=None, help="default: every task of the leaderboard")
    ap.add_argument("--budget", default="73,728", help="the leaderboard row (budget label) of each method")
    ap.add_argument("--results", default=str(REPO / "results"), help="where the committed leaderboard's runs are")
    ap.add_argument("--suite", default="cpu", help="the leaderboard read (and the suite name of the new runs)")
    ap.add_argument("--out", default=str(REPO / "results" / "bf16-decision"), help="run JSONs and the report")
    ap.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR)")
    ap.add_argument("--model", default=None, help="another model for every run (tests: a tiny one)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--smoke", action="store_true", help="tiny runs to check the code path; numbers mean nothing")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bf16_decision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(command, flush=True)
    board = leaderboard.build(store.read_runs(Path(args.results), args.suite), n_boot=10)
    if not board.rows:
        raise SystemExit(f"no runs of suite {args.suite!r} under {args.results}")
    plan = [(t, row, sel, {p: specs_for(sel, p, args) for p in PRECISIONS})
            for t, row, sel in cells(board, args.methods, args.tasks or board.tasks, args.budget)]
    work = _alternate([s for _, _, _, by in plan for pair in zip(*by.values()) for s in pair])
    rows = summarise(plan, run_all(work, args), args.smoke)
    md = report(rows, command)
    print(md)
    out = Path(args.out) / args.suite
    store.write_text(out / "bf16_decision.md", md)
    store.write_json(out / "bf16_decision.json", {"command": command, "rows": rows, "smoke": args.smoke,
                                                   "threads": torch.get_num_threads()})


def _alternate(work: list) -> list:
    """(fp32, bf16) pairs with every other pair reversed, so neither precision always runs first."""
    pairs = [work[i:i + 2] for i in range(0, len(work), 2)]
    return [s for k, p in enumerate(pairs) for s in (p if k % 2 == 0 else p[::-1])]


if __name__ == "__main__":
    main()
