"""One command for results/claims/: the literature's claims about why low rank suffices, re-tested at CPU scale.

    PEFTZOO_DATA_DIR=../shared/data python benchmarks/claims/run.py

Trains the SST-2 runs (LoRA r = 4, 8, 64 and full fine-tuning, 3 seeds; cached under --work), runs the MNIST d_90
searches (peftzoo d90, one seed each), analyses everything with peftzoo.analysis and writes
results/claims/README.md, claims.json and one PNG per measured claim. Claims 1, 3 and 11 are read from the cpu
leaderboard's runs (lb.py); `--reuse-measured` recomputes only those, keeping the other rows of claims.json.

`--rows 12,13,14,15,16,17,18,19` runs the planned rows instead (plans.py, plans_b.py: cpu-preset bench runs,
resumable; verdicts.py, verdicts_b.py: their rules), printing each row's run count and estimated CPU time first;
`--dry-run` stops there and lists the runs, `--smoke` runs the same plans on a tiny random BERT and tiny sets in
seconds (no measurement).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lb  # noqa: E402
import lora_scaling  # noqa: E402
import measure  # noqa: E402
import mnist_d90  # noqa: E402
import pretrain_d90  # noqa: E402
import planrun  # noqa: E402
import plots  # noqa: E402
import plots_b  # noqa: E402
import rows  # noqa: E402
from sst2 import Setup, compare, run  # noqa: E402

from peftzoo.bench.store import write_text  # noqa: E402

SEEDS = (0, 1, 2)


def scaling(data: dict, args, out: Path) -> None:
    """Claims 2 and 6 (lora_scaling.py: LoRA/rsLoRA across ranks, LoRA on attention/MLP/all): runs what is missing."""
    if args.skip_scaling:
        return
    data["c2"] = lora_scaling.measure_c2(Path(args.work), args.data_dir)
    data["c6"] = lora_scaling.measure_c6(Path(args.work), args.data_dir)
    lora_scaling.plot_c2(data["c2"], out)


def redraw(out: Path) -> None:
    """Every figure of claims.json's measured claims, drawn again from the numbers it holds."""
    data = json.loads((out / "claims.json").read_text())
    data["c5"] = {int(k) if k.isdigit() else k: v for k, v in data["c5"].items()}  # JSON made the ranks strings
    plots.all_plots(data, out)
    if "c2" in data:
        lora_scaling.plot_c2(data["c2"], out)
    if "c9" in data:
        pretrain_d90.plot(data["c9"], out)
    plots_b.draw(data, out)  # the planned rows that have run
    print(f"redrew the figures under {out} from {out / 'claims.json'}")


def rows_planned(args, out: Path) -> None:
    """--rows: the planned rows' runs and verdicts; a real (not smoke) run also writes them into the report."""
    if not args.data_dir:
        raise SystemExit("--rows needs GLUE data: pass --data-dir or set PEFTZOO_DATA_DIR")
    rows_ = [r.strip() for r in args.rows.split(",")]
    bad = [r for r in rows_ if r not in planrun.DECIDE]
    if bad:
        raise SystemExit(f"--rows: no plan for {', '.join(bad)} (planned: {', '.join(planrun.DECIDE)})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU: one thread beats two that spin against other jobs
    try:
        got = planrun.main(args, rows_)
    finally:
        torch.set_num_threads(threads)
    if got and not args.smoke and (out / "claims.json").is_file():
        data = json.loads((out / "claims.json").read_text())
        data["c5"] = {int(k) if k.isdigit() else k: v for k, v in data["c5"].items()}
        data.update({f"c{r}": v for r, v in got.items()})
        write_text(out / "claims.json", json.dumps(data, indent=1, default=str))
        plots_b.draw(data, out)
        write_text(out / "README.md", rows.readme(data))
        print(f"wrote rows {', '.join(got)} into {out / 'README.md'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="local-results/claims", help="cache of trained runs and adapters")
    p.add_argument("--out", default="results/claims")
    p.add_argument("--data-dir", default=os.environ.get("PEFTZOO_DATA_DIR"))
    p.add_argument("--skip-d90", action="store_true", help="leave claim 10 out (its searches take the longest)")
    p.add_argument("--skip-scaling", action="store_true", help="leave claims 2 and 6 out (48 SST-2 runs)")
    p.add_argument("--leaderboard", default="results", help="results root holding the cpu leaderboard's runs "
                   "(claims 1, 3, 11)")
    p.add_argument("--reuse-measured", action="store_true", help="take claims 4, 5, 7, 8, 10 from the existing "
                   "claims.json (an earlier full invocation) and recompute only the leaderboard's claims")
    p.add_argument("--plots-only", action="store_true", help="redraw every figure from the existing claims.json "
                   "(no training, no search; e.g. after a colour change) and exit")
    p.add_argument("--rows", help="run the planned rows instead (comma list of 12, 13, 14, 15, 16, 17, 18, 19; "
                   "resumable: finished run JSONs under --work/plans are read back, the leaderboard's runs reused "
                   "where the spec is theirs); "
                   "prints each row's run count and estimated CPU time first, then the verdicts")
    p.add_argument("--dry-run", action="store_true", help="with --rows: list the runs still to do and their "
                   "estimated cost; run nothing")
    p.add_argument("--smoke", action="store_true", help="with --rows: a tiny random BERT on tiny sets (seconds; every "
                   "code path, no measurement; SST-2 data only), under --work/smoke")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.rows:
        rows_planned(args, out)
        return
    if args.plots_only:
        redraw(out)
        return
    if args.reuse_measured:
        t0 = time.perf_counter()
        data = json.loads((out / "claims.json").read_text())
        data["c5"] = {int(k) if k.isdigit() else k: v for k, v in data["c5"].items()}  # JSON made the ranks strings
        data["leaderboard_rows"] = lb.rows(args.leaderboard)
        scaling(data, args, out)
        if not args.skip_d90:  # claim 9: reads its searches, runs the missing ones
            data["c9"] = pretrain_d90.run_all(out / "d90", args.data_dir, cache=Path(args.work) / "pretrain")
            pretrain_d90.plot(data["c9"], out)
        write_text(out / "claims.json", json.dumps(data, indent=1, default=str))
        write_text(out / "README.md", rows.readme(data))
        print(f"wrote {out / 'README.md'} (leaderboard claims only, {time.perf_counter() - t0:.0f} s)")
        return
    if not args.data_dir:
        p.error("needs GLUE and MNIST: pass --data-dir or set PEFTZOO_DATA_DIR")
    torch.set_num_threads(1)  # a shared CPU: one thread beats two that spin against other jobs
    t0 = time.perf_counter()
    setup, work = Setup(), Path(args.work)
    runs = {(m, r, s): run(m, s, r, setup, work, args.data_dir)
            for s in SEEDS for m, r in (("lora", 8), ("lora", 64), ("lora", 4), ("full", None))}
    lora = {r: [runs[("lora", r, s)] for s in SEEDS] for r in (4, 8, 64)}
    full = [runs[("full", None, s)] for s in SEEDS]
    # r = 8 seed s against r = 64 seed s+1: independent initialisations (same seed would share rows of A)
    pairs = [compare(lora[8][i], lora[64][(i + 1) % len(SEEDS)], setup, args.data_dir) for i in range(len(SEEDS))]
    data = {"setup": setup.describe(), "sst2_train_s": sum(x["train_s"] for x in runs.values()),
            "scores": {**{f"lora r={r}": [x["score"] for x in lora[r]] for r in lora}, "full": [x["score"] for x in full]},
            "c4": measure.subspace(pairs), "c5": measure.amplification(lora[4], lora[64]),
            "c7": measure.intruders({"LoRA r=4": lora[4], "LoRA r=8": lora[8], "LoRA r=64": lora[64], "full FT": full}),
            "c8": measure.grad_rank(full)}
    if not args.skip_d90:
        data["c10"] = measure.d90(mnist_d90.run_all(out / "d90", args.data_dir))
        data["c9"] = pretrain_d90.run_all(out / "d90", args.data_dir, cache=work / "pretrain")
    out.mkdir(parents=True, exist_ok=True)
    plots.all_plots(data, out)
    if "c9" in data:
        pretrain_d90.plot(data["c9"], out)
    data["leaderboard_rows"] = lb.rows(args.leaderboard)
    scaling(data, args, out)
    data["wall_s"] = time.perf_counter() - t0
    write_text(out / "claims.json", json.dumps(data, indent=1, default=str))
    write_text(out / "README.md", rows.readme(data))
    print(f"wrote {out / 'README.md'} ({data['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
