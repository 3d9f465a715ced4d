"""peftzoo command line: demo | methods | bench | table | d90.

Exit status: 0 done (bench: every run ok or skipped); 2 bad input or setting, or an output that could not be
written (nothing half-done is left; earlier results are intact); 3 bench finished but some runs are recorded as
failed (rerun with --retry-failed after fixing the cause).
"""
from __future__ import annotations

import argparse
import os
import sys


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
    print(f"model: {path}\n{total:,} parameters; {args.method} trains {ad.num_trainable():,} "
          f"({ad.summary()['adapter']:,} adapter + {ad.summary()['train_modules']:,} head)")
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

    from peftzoo.bench import protocol, ray_executor
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
    plan = protocol.make_plan(preset, tasks=tasks, methods=args.methods, seeds=args.seeds,
                              skip_bad_rows=args.skip_bad_rows)
    s1, s2 = plan.stage1(), plan.stage2(None)
    if args.dry_run:
        for stage, specs in (("stage 1", s1), ("stage 2", s2)):
            for s in specs:
                try:
                    s = s.bind_data(args.data_dir)
                except (OSError, ValueError):
                    pass  # the id printed is then the one before the data is known
                lr = "lr=<selected on validation>" if stage == "stage 2" else f"lr={s.lr:g}"
                print(stage, s.suite, s.task, s.method, s.cell, lr, f"s{s.seed}", s.skip_reason or "")
        print(f"{len(s1) + len(s2)} runs: stage 1 (LR sweep) {len(s1)}, stage 2 (selected LR) {len(s2)}; "
              f"{len(plan.tasks)} tasks, {len(plan.cells)} (method, budget) cells, {len(plan.seeds)} seeds")
        return 0
    out = run_protocol(plan, root=args.results, data_dir=args.data_dir, device=args.device, quiet=args.quiet,
                       retry_failed=args.retry_failed, ray=ray)
    for line in failed_before(out, args.results):
        print(line, file=sys.stderr)
    print(out.summary(f"{args.results}/{preset.suite}/runs"))
    return EXIT_SOME_FAILED if out.failed else 0


def _table(args):
    from peftzoo.bench.table import write
    path = write(args.results, args.suite, optimistic=args.optimistic)
    print(path.read_text())


def _d90(args):
    from peftzoo.intrinsic.cli import run_d90
    run_d90(args)


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(prog="peftzoo", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="attach a method to the embedded MiniLM, train a few steps, merge")
    d.add_argument("--method", default="lora")
    d.add_argument("--steps", type=int, default=5)
    d.add_argument("--model", default=None)
    d.set_defaults(fn=_demo)
    m = sub.add_parser("methods", help="list the registered methods")
    m.add_argument("--verbose", "-v", action="store_true")
    m.set_defaults(fn=_methods)
    b = sub.add_parser("bench", help="train methods on GLUE tasks at matched parameter budgets")
    b.add_argument("--preset", default="quick", help="name of a benchmarks/*.json preset, or a path")
    b.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR, else the hub)")
    b.add_argument("--results", default="results")
    b.add_argument("--suite", default=None, help="results sub-folder (default: the preset's suite)")
    b.add_argument("--model", default=None, help="transformers id or path (default: the preset's)")
    b.add_argument("--tasks", nargs="*")
    b.add_argument("--methods", nargs="*")
    b.add_argument("--seeds", nargs="*", type=int)
    b.add_argument("--device", default=None)
    b.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    b.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out malformed data rows (counted, recorded in every run) instead of stopping")
    b.add_argument("--dry-run", action="store_true", help="print the planned runs and their count, and exit")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress bars (for logs)")
    from peftzoo.bench.ray_executor import add_arguments as executor_arguments
    executor_arguments(b)
    b.set_defaults(fn=_bench)
    t = sub.add_parser("table", help="write results/<suite>/leaderboard.{md,csv,png}")
    t.add_argument("--suite", default="quick")
    t.add_argument("--results", default="results")
    t.add_argument("--optimistic", action="store_true", help="OPTIMISTIC view: LR and epoch picked on the dev set "
                   "it reports (biased upward; written to leaderboard-optimistic.*)")
    t.set_defaults(fn=_table)
    i = sub.add_parser("d90", help="measure the intrinsic dimension d_90 of a task")
    from peftzoo.intrinsic.cli import add_arguments
    add_arguments(i)
    i.set_defaults(fn=_d90)
    from peftzoo.analysis.cli import register as register_analyze
    register_analyze(sub)
    args = p.parse_args(argv)
    try:
        return args.fn(args) or 0
    except (ValueError, OSError, RuntimeError, TypeError) as e:
        print(f"peftzoo {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
