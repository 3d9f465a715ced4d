"""`peftzoo bench` and `peftzoo table`: their arguments, parsed and checked, and the library calls they make (the plan:
``bench.plan``; the sweep: ``bench.sweep``; the table's files: ``bench.table``). ``register(subparsers)`` adds them
to peftzoo's CLI, as ``intrinsic.cli`` and ``analysis.cli`` add theirs."""
from __future__ import annotations

import sys
from pathlib import Path

LOCAL_RESULTS = "local-results"  # bench/table's default results folder: the user's own (the committed one is results/)


def register(sub) -> None:
    b = sub.add_parser("bench", help="train methods on GLUE tasks at matched parameter budgets")
    b.add_argument("--preset", default="quick", help="a shipped preset's name (quick, smoke, cpu, glue, ...), or a "
                   "path to a preset JSON file")
    b.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR, else the hub)")
    b.add_argument("--results", default=LOCAL_RESULTS, help="results folder, one JSON per run under <suite>/runs/; "
                   "--results results adds to the repository's committed results")
    b.add_argument("--suite", default=None, help="results sub-folder (default: the preset's suite)")
    b.add_argument("--model", default=None, help="transformers id or path of any sequence-classification "
                   "checkpoint, encoder or decoder (default: the preset's); budgets given relative to the model "
                   "(\"lora:r=8\") and a preset's default layers are resolved on it")
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
    b.add_argument("--stack", type=int, default=1, metavar="K", help="train up to K runs that share their batches "
                   "(same task and seed: an LR sweep) together over one frozen base, each its own record; LoRA, "
                   "rsLoRA, LoRA+ stack, other methods run one by one (said)")
    from peftzoo.bench.ray_executor import add_arguments as executor_arguments
    executor_arguments(b)
    b.set_defaults(fn=bench)
    t = sub.add_parser("table", help="write <results>/<suite>/leaderboard.{md,csv,png} and leaderboard-lr.png")
    t.add_argument("--suite", default="quick", help="the suite (results sub-folder) to tabulate")
    t.add_argument("--results", default=LOCAL_RESULTS, help="results folder bench wrote to; --results results "
                   "for the repository's committed leaderboards")
    t.add_argument("--optimistic", action="store_true", help="OPTIMISTIC view: LR and epoch picked on the dev set "
                   "it reports (biased upward; written to leaderboard-optimistic.*)")
    t.set_defaults(fn=table)


def _plan(args):
    """The plan the arguments ask for (the preset narrowed and overridden by them), checked before anything runs."""
    from dataclasses import replace

    from peftzoo.bench.plan import make_plan
    from peftzoo.bench.preflight import preflight, preset_precisions
    from peftzoo.bench.preset import load_preset, normalise_tasks
    preset = load_preset(args.preset)
    preset = replace(preset, suite=args.suite or preset.suite, model=args.model or preset.model)
    tasks = normalise_tasks(args.tasks, "--tasks") if args.tasks else preset.tasks
    if not args.dry_run:
        preflight(preset.model, tasks, args.data_dir, args.results, preset.suite, args.device, args.skip_bad_rows,
                  precisions=preset_precisions(preset))
    request = {"preset": preset_ref(args.preset), "skip_unreachable": args.skip_unreachable}
    return make_plan(preset, tasks=tasks, methods=args.methods, seeds=args.seeds, skip_bad_rows=args.skip_bad_rows,
                     drop_unrunnable=args.skip_unreachable, request=request)


def _check_flags(args) -> None:
    from peftzoo.bench.preset import check_seeds
    for flag in ("tasks", "methods", "seeds"):
        if getattr(args, flag) == []:
            raise ValueError(f"--{flag} was given without any value")
    if args.seeds:
        check_seeds(args.seeds, "--seeds")


def bench(args) -> int:
    from peftzoo.bench import ray_executor
    from peftzoo.bench.sweep import EXIT_SOME_FAILED, failed_before, run_protocol
    _check_flags(args)
    if args.stack < 1 or (args.stack > 1 and args.executor == "ray"):
        raise ValueError(f"--stack {args.stack}: give K >= 1, and not with --executor ray (a stack trains in one "
                         "process)")
    ray = ray_executor.options(args)
    plan = _plan(args)
    if args.dry_run:
        dry_run(plan, args.data_dir)
        return 0
    out = run_protocol(plan, root=args.results, data_dir=args.data_dir, device=args.device, quiet=args.quiet,
                       retry_failed=args.retry_failed, ray=ray, stack=args.stack)
    for line in failed_before(out, args.results):
        print(line, file=sys.stderr)
    print(out.summary(f"{args.results}/{plan.preset.suite}/runs"))
    return EXIT_SOME_FAILED if out.failed else 0


def dry_run(plan, data_dir) -> None:
    """The planned runs, one line each, and their count."""
    from peftzoo.bench.plan import model_name
    s1, s2 = plan.stage1(), plan.stage2(None)
    if plan.sizes:
        print(f"budgets on model {model_name(plan.preset)}: " + ", ".join(f"{e} = {n:,}" for e, n in plan.sizes.items()))
    for stage, specs in (("stage 1", s1), ("stage 2", s2)):
        for s in specs:
            try:
                s = s.bind_data(data_dir)
            except (OSError, ValueError):
                pass  # the id printed is then the one before the data is known
            lr = "lr=<selected on validation>" if stage == "stage 2" else f"lr={s.lr:g}"
            print(stage, s.suite, s.task, s.method, s.cell, lr, f"s{s.seed}")
    for c, why in plan.dropped:
        print(f"left out (--skip-unreachable): {c.name}: {why}")
    print(f"{len(s1) + len(s2)} runs: stage 1 (LR sweep) {len(s1)}, stage 2 (selected LR) {len(s2)}; "
          f"{len(plan.tasks)} tasks, {len(plan.cells)} (method, budget) cells"
          + (f" ({len(plan.dropped)} left out)" if plan.dropped else "") + f", {len(plan.seeds)} seeds")


def preset_ref(preset: str) -> str:
    """How the runs record their preset (the table's Reproduce line names it): a shipped name as given, a file by
    its absolute path (a relative one would not be found from another folder)."""
    return str(Path(preset).resolve()) if Path(preset).is_file() else preset


def table(args) -> int:
    from peftzoo.bench.table import write
    written = []
    path = write(args.results, args.suite, optimistic=args.optimistic, written=written)
    print(path.read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
