"""d_90 of the embedded all-MiniLM-L6-v2 on SST-2 and MRPC (issue 22): SAID and DID, 3 seeds, the `gap` and
`relative` definitions, each search a resumable `peftzoo d90` whose JSON caches every scored point.

    python benchmarks/lm_d90.py --smoke     # about a minute: one short SAID point per task, timed; the plan's cost
    python benchmarks/lm_d90.py --dry-run   # the searches it would run
    python benchmarks/lm_d90.py             # the measurement (killed? run it again: it resumes)

First, per task, full fine-tuning's 3 seeds are trained and checked against the trivial score (the best constant
prediction on the dev split): a task where full FT does not clearly beat it is reported and skipped, since its d_90
would be vacuous (``--allow-uninformative`` runs it anyway, marked). Then SAID, then DID; DID is given the SAID
file's full-FT scores (``--baseline``) instead of training them again. At the end: ``lm-d90.md`` (one row per search
and definition) and a SAID-vs-DID plot per task, in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# per task: what full FT needs to learn it (1,500 SST-2 sentences for 2 epochs: full FT 0.807 against the trivial
# 0.509, far enough above it at half the cost of 3,000 x 3; all of MRPC's 3,668 pairs less the 367 the protocol
# holds out for validation, for 5 epochs) and what its texts need (MRPC's pairs are longer)
TASKS = {"SST-2": {"max_train": 1500, "epochs": 2, "max_len": 64},
         "MRPC": {"max_train": None, "epochs": 5, "max_len": 128}}
METHODS = {"said": 0.02, "did": 0.02}  # subspace lr: the one the earlier SAID searches used
COMMON = ["--seeds", "0", "1", "2", "--definition", "gap", "relative", "--dmin", "200", "--dmax", "100000",
          "--per-decade", "2", "--fine-per-decade", "4", "--max-ratio", "1.3", "--batch-size", "16",
          "--full-lr", "5e-5", "-q"]
SPEED = {"full": 1 / 1.40, "said": 1.0, "did": 1.44 / 1.40}  # step cost vs SAID's: README, results/speed/said_cpu.json


def d90_argv(task: str, method: str, out: Path, extra=()) -> list[str]:
    t = TASKS[task]
    return ["--task", task, "--method", method, "--lr", str(METHODS[method]), "--epochs", str(t["epochs"]),
            "--max-len", str(t["max_len"]), *(["--max-train", str(t["max_train"])] if t["max_train"] else []),
            *COMMON, "--out", str(out), *extra]


def parse(argv: list[str]):
    from peftzoo.intrinsic.cli import add_arguments
    p = argparse.ArgumentParser(prog="peftzoo d90")
    add_arguments(p)
    return p.parse_args(argv)


def path_of(task: str, method: str, out: Path) -> Path:
    return out / f"{task.lower()}-minilm-{method}.json"


def check_task(task: str, out: Path, allow: bool) -> bool:
    """Phase 1: full FT's seeds (cached in the SAID file) against the trivial score; True when informative."""
    from peftzoo.intrinsic.cli import run_d90
    from peftzoo.intrinsic.d90 import Uninformative
    try:
        run_d90(parse(d90_argv(task, "said", out, ["--baseline-only"] + (["--allow-uninformative"] * allow))))
    except Uninformative as e:
        print(f"{task}: skipped, {e}", file=sys.stderr)
        return False
    return True


def search(task: str, out: Path, allow: bool) -> None:
    """Phase 2: SAID (its file holds full FT's scores), then DID given those scores."""
    from peftzoo.intrinsic.cli import run_d90
    extra = ["--allow-uninformative"] if allow else []
    run_d90(parse(d90_argv(task, "said", out, extra)))
    scores = json.loads(path_of(task, "said", out).read_text())["scores"]
    base = [str(scores[f"full/{s}"]) for s in (0, 1, 2)]
    run_d90(parse(d90_argv(task, "did", out, extra + ["--baseline", *base])))


def report(out: Path) -> None:
    from peftzoo.intrinsic.report import plot, table
    found = {p.stem: json.loads(p.read_text()) for t in TASKS for m in METHODS if (p := path_of(t, m, out)).is_file()}
    done = {k: r for k, r in found.items() if "by_definition" in r}
    if not done:
        return
    (out / "lm-d90.md").write_text("# d_90 of all-MiniLM-L6-v2 (benchmarks/lm_d90.py)\n\n" + table(done))
    for t in TASKS:
        rs = {k: r for k, r in done.items() if k.startswith(t.lower() + "-")}
        if rs:
            plot(rs, out / f"{t.lower()}-minilm-said-vs-did.png", title=f"{t} all-MiniLM-L6-v2")
    print(f"wrote {out / 'lm-d90.md'}")


def planned_points(centre: float) -> int:
    """Points one search of this plan scores (both definitions) when its relative d_90 is near 10**centre: the
    search run on sigmoid curves in log d (trivial 0.5, full FT 0.9, seeds 0.05 decade apart; the gap target then
    crosses 0.32 decade higher), counting its calls."""
    from peftzoo.intrinsic.d90 import Definition, Search, log_grid
    calls = []

    def f(d, s):  # 0.5 + 0.4 σ(3 (log10 d − c)) reaches 0.81 (0.9 x 0.9) at log10 d = c + 0.412
        calls.append((d, s))
        return 0.5 + 0.4 / (1 + math.exp(-3 * (math.log10(d) - (centre - 0.412) - 0.05 * s)))
    a = parse(COMMON + ["--task", "SST-2"])
    Search(f, baseline=0.9, seeds=a.seeds, trivial=0.5, definitions=[Definition(n) for n in a.definition]).run(
        log_grid(a.dmin, a.dmax, a.per_decade), a.bisect, fine_per_decade=a.fine_per_decade, max_ratio=a.max_ratio)
    return len(calls)


def smoke(out: Path, n_train: int = 96) -> None:
    """One SAID point per task at d = 1000 on ``n_train`` examples for one epoch, timed; extrapolated to the
    plan's settings and multiplied by the points the plan scores."""
    from peftzoo.bench.runner import execute
    from peftzoo.bench.tasks import get_task, load_task, split_indices
    from peftzoo.intrinsic.cli import config
    from peftzoo.intrinsic.point import point_spec
    import torch
    total = {}
    for task, t in TASKS.items():
        cfg = config(parse(d90_argv(task, "said", out)))
        short = {**cfg, "max_train": n_train, "epochs": 1}
        t0, c0 = time.perf_counter(), os.times()
        rec = execute(point_spec(short, 1000, 0), progress=False)
        c1 = os.times()
        share = (c1.user + c1.system - c0.user - c0.system) / (time.perf_counter() - t0)
        if not rec.ok:
            raise SystemExit(f"{task}: the smoke point failed: {rec.error}")
        step, steps = rec.median_step_s, rec.steps
        setup, evaluate = rec.wall_s - rec.train_s, rec.train_s - steps * step
        n = len(split_indices(len(load_task(get_task(task))["train"].labels), t["max_train"])[0])
        real_steps = math.ceil(n / 16) * t["epochs"]
        point = setup + real_steps * step + t["epochs"] * evaluate
        sizes = rec.split_sizes
        print(f"{task}: measured one SAID point (d = 1000, seed 0, {steps} steps on {n_train} examples, 1 epoch): "
              f"wall {rec.wall_s:.1f} s = setup {setup:.1f} s + steps {steps} x {step:.3f} s (median) + "
              f"evaluation of {sizes['val']} validation and {sizes['dev']} dev rows {evaluate:.1f} s; this process "
              f"had {share:.2f} cores ({torch.get_num_threads()} torch threads)")
        print(f"{task}: a plan point ({n} examples x {t['epochs']} epochs = {real_steps} steps): ~{point / 60:.1f} "
              f"min for SAID (full FT x{SPEED['full']:.2f}, DID x{SPEED['did']:.2f}, step ratios of the README)")
        total[task] = point
    for label, centre in (("near the bottom (10^2.5)", 2.5), ("mid-grid (10^3.5)", 3.5), ("high (10^4.5)", 4.5)):
        pts = planned_points(centre)
        hours = sum(3 * p * SPEED["full"] + pts * p * (SPEED["said"] + SPEED["did"]) for p in total.values()) / 3600
        print(f"crossing {label}: {pts} points per search; {len(TASKS)} tasks x (3 full FT + SAID + DID): "
              f"~{hours:.1f} h on this machine")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "results" / "intrinsic")  # resumes the committed searches
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--smoke", action="store_true", help="time one short point per task and print the plan's cost")
    p.add_argument("--dry-run", action="store_true", help="print the searches and stop")
    p.add_argument("--allow-uninformative", action="store_true", help="search tasks that fail the check, marked")
    args = p.parse_args(argv)
    if not os.environ.get("PEFTZOO_DATA_DIR"):
        raise SystemExit("set PEFTZOO_DATA_DIR to the folder holding glue/SST-2 and glue/MRPC")
    if args.smoke:
        smoke(args.out)
        return 0
    if args.dry_run:
        for t in args.tasks:
            for m in METHODS:
                print("peftzoo d90 " + " ".join(d90_argv(t, m, args.out)) + ("  --baseline <SAID's>" * (m == "did")))
        return 0
    # every task's full-FT check first (minutes each), so an uninformative task is known before hours of search
    keep = [t for t in args.tasks if check_task(t, args.out, args.allow_uninformative) or args.allow_uninformative]
    for task in keep:
        search(task, args.out, args.allow_uninformative)
    report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
