"""peftzoo command line: demo | methods | bench | table | d90 | analyze.

Exit status: 0 done (bench: every planned run ok); 2 bad input or setting (bench: also a planned cell that cannot
run, e.g. an unreachable budget: every one is listed), or an output that could not be written (nothing half-done is
left; earlier results are intact); 3 bench finished but some runs are recorded as failed (rerun with --retry-failed
after fixing the cause).
"""
from __future__ import annotations

import argparse
import os
import sys

LOCAL_RESULTS = "local-results"  # bench/table's default results folder: the user's own (the committed one is results/)


def _demo(args):
    import torch

    import peftzoo
    from peftzoo.bench.runner import default_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path = args.model or default_model()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tok = AutoTokenizer.from_pretrained(path)
    total = sum(p.numel() for p in model.parameters())
    # the method's own defaults (rank, subspace dimension, ...); per-layer methods adapt query and value
    ad = peftzoo.attach(model, args.method, targets=["query", "value"], train=["classifier"])
    s, cls = ad.summary(), type(ad)
    if cls.baseline:  # full, head: no adapter tensors, the model's own parameters train
        print(f"model: {path}\n{total:,} parameters; {args.method} is a baseline, no adapter: {cls.equation}; "
              f"it trains {ad.num_trainable():,} of the model's own parameters")
    else:
        print(f"model: {path}\n{total:,} parameters; {args.method} trains {ad.num_trainable():,} "
              f"({s['adapter']:,} adapter + {s['train_modules']:,} head)")
    batch = tok(["a gripping, beautiful film", "dull and far too long"] * 4, return_tensors="pt", padding=True)
    batch["labels"] = torch.tensor([1, 0] * 4)
    ad.set_total_steps(args.steps)
    opt = torch.optim.AdamW(ad.param_groups(lr=type(ad).default_lr))
    ad.model.train()
    for step in range(1, args.steps + 1):  # the adapter's hooks, as README's loop calls them
        loss = ad.model(**batch).loss
        extra = ad.extra_loss()
        (loss + extra if extra is not None else loss).backward()
        opt.step()
        ad.on_step(step)
        opt.zero_grad()
        print(f"step {step}: loss {loss.item():.4f}")
    ad.model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if cls.baseline:
        print("nothing to merge: a baseline has no adapter")
        return
    with torch.no_grad():
        before = ad.model(**inputs).logits
        ad.merge()
        after = ad.model(**inputs).logits
    print(f"merged: max |logits change| = {(before - after).abs().max().item():.2e}")


def _methods(args):
    import dataclasses

    from peftzoo import adapters
    for name in sorted(adapters.REGISTRY):
        cls = adapters.REGISTRY[name]
        print(f"{name:10s} {getattr(cls, 'equation', '')}   [{getattr(cls, 'formula', '')}]  {getattr(cls, 'paper', '')}")
        if args.verbose:
            for f in dataclasses.fields(cls.config_cls):
                print(f"    {f.name} = {f.default!r}")


def _bench(args):
    from dataclasses import replace

    from peftzoo.bench import plan as planner
    from peftzoo.bench import ray_executor
    from peftzoo.bench.preflight import preflight, preset_precisions
    from peftzoo.bench.preset import check_seeds, load_preset, normalise_tasks
    from peftzoo.bench.sweep import EXIT_SOME_FAILED, failed_before, run_protocol
    for flag in ("tasks", "methods", "seeds"):
        if getattr(args, flag) == []:
            raise ValueError(f"--{flag} was given without any value")
    if args.seeds:
        check_seeds(args.seeds, "--seeds")
    ray = ray_executor.options(args)
    preset = load_preset(args.preset)
    if args.suite:
        preset = replace(preset, suite=args.suite)
    if args.model:
        preset = replace(preset, model=args.model)
    tasks = normalise_tasks(args.tasks, "--tasks") if args.tasks else preset.tasks
    if not args.dry_run:
        preflight(preset.model, tasks, args.data_dir, args.results, preset.suite, args.device, args.skip_bad_rows,
                  precisions=preset_precisions(preset))
    request = {"preset": _preset_ref(args.preset), "skip_unreachable": args.skip_unreachable}
    plan = planner.make_plan(preset, tasks=tasks, methods=args.methods, seeds=args.seeds,
                             skip_bad_rows=args.skip_bad_rows, drop_unrunnable=args.skip_unreachable, request=request)
    s1, s2 = plan.stage1(), plan.stage2(None)
    if args.dry_run:
        if plan.sizes:
            print(f"budgets on model {planner.model_name(plan.preset)}: "
                  + ", ".join(f"{e} = {n:,}" for e, n in plan.sizes.items()))
        for stage, specs in (("stage 1", s1), ("stage 2", s2)):
            for s in specs:
                try:
                    s = s.bind_data(args.data_dir)
                except (OSError, ValueError):
                    pass  # the id printed is then the one before the data is known
                lr = "lr=<selected on validation>" if stage == "stage 2" else f"lr={s.lr:g}"
                print(stage, s.suite, s.task, s.method, s.cell, lr, f"s{s.seed}")
        for c, why in plan.dropped:
            print(f"left out (--skip-unreachable): {c.name}: {why}")
        print(f"{len(s1) + len(s2)} runs: stage 1 (LR sweep) {len(s1)}, stage 2 (selected LR) {len(s2)}; "
              f"{len(plan.tasks)} tasks, {len(plan.cells)} (method, budget) cells"
              + (f" ({len(plan.dropped)} left out)" if plan.dropped else "") + f", {len(plan.seeds)} seeds")
        return 0
    out = run_protocol(plan, root=args.results, data_dir=args.data_dir, device=args.device, quiet=args.quiet,
                       retry_failed=args.retry_failed, ray=ray)
    for line in failed_before(out, args.results):
        print(line, file=sys.stderr)
    print(out.summary(f"{args.results}/{preset.suite}/runs"))
    return EXIT_SOME_FAILED if out.failed else 0


def _preset_ref(preset: str) -> str:
    """How the runs record their preset (the table's Reproduce line names it): a shipped name as given, a file by
    its absolute path (a relative one would not be found from another folder)."""
    from pathlib import Path
    return str(Path(preset).resolve()) if Path(preset).is_file() else preset


def _table(args):
    from peftzoo.bench.table import write
    written = []
    path = write(args.results, args.suite, optimistic=args.optimistic, written=written)
    print(path.read_text())
    print("wrote " + ", ".join(str(p) for p in written))


def _with_defaults(p: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default, unless the help already states it or there is none to state."""
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                _with_defaults(sp)
        elif (a.option_strings and a.default is not None and a.default is not False and a.default != argparse.SUPPRESS
              and "default" not in (a.help or "")):
            a.help = f"{a.help or ''} (default: %(default)s)".strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftzoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="attach a method to the embedded MiniLM, train a few steps, merge")
    d.add_argument("--method", default="lora", help="a method or baseline (peftzoo methods lists them)")
    d.add_argument("--steps", type=int, default=5, help="training steps on the demo batch")
    d.add_argument("--model", default=None, help="transformers id or path (default: the embedded all-MiniLM-L6-v2)")
    d.set_defaults(fn=_demo)
    m = sub.add_parser("methods", help="list the registered methods")
    m.add_argument("--verbose", "-v", action="store_true", help="also every option of each method and its default")
    m.set_defaults(fn=_methods)
    b = sub.add_parser("bench", help="train methods on GLUE tasks at matched parameter budgets")
    b.add_argument("--preset", default="quick", help="name of a benchmarks/*.json preset, or a path")
    b.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR, else the hub)")
    b.add_argument("--results", default=LOCAL_RESULTS, help="results folder, one JSON per run under <suite>/runs/; "
                   "--results results adds to the repository's committed results")
    b.add_argument("--suite", default=None, help="results sub-folder (default: the preset's suite)")
    b.add_argument("--model", default=None, help="transformers id or path (default: the preset's); budgets given "
                   "relative to the model (\"lora:r=8\") are resolved on it")
    b.add_argument("--tasks", nargs="*", help="GLUE tasks to run (default: the preset's)")
    b.add_argument("--methods", nargs="*", help="methods to run (default: the preset's)")
    b.add_argument("--seeds", nargs="*", type=int, help="seeds to run (default: the preset's)")
    b.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    b.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    b.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out malformed data rows (counted, recorded in every run) instead of stopping")
    b.add_argument("--skip-unreachable", action="store_true", help="run the other cells when some (method, budget) "
                   "cells cannot run on this model (listed, also with -q) instead of stopping before training")
    b.add_argument("--dry-run", action="store_true", help="print the planned runs and their count, and exit")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress bars (for logs); problems are still said")
    from peftzoo.bench.ray_executor import add_arguments as executor_arguments
    executor_arguments(b)
    b.set_defaults(fn=_bench)
    t = sub.add_parser("table", help="write <results>/<suite>/leaderboard.{md,csv,png} and leaderboard-lr.png")
    t.add_argument("--suite", default="quick", help="the suite (results sub-folder) to tabulate")
    t.add_argument("--results", default=LOCAL_RESULTS, help="results folder bench wrote to; --results results "
                   "for the repository's committed leaderboards")
    t.add_argument("--optimistic", action="store_true", help="OPTIMISTIC view: LR and epoch picked on the dev set "
                   "it reports (biased upward; written to leaderboard-optimistic.*)")
    t.set_defaults(fn=_table)
    from peftzoo.analysis.cli import register as register_analyze
    from peftzoo.intrinsic.cli import register as register_d90
    register_d90(sub)
    register_analyze(sub)
    _with_defaults(p)
    return p


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (ValueError, OSError, RuntimeError, TypeError) as e:
        print(f"peftzoo {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
