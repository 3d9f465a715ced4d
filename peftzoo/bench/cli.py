"""`peftzoo bench` and `peftzoo table`: their arguments, parsed and checked, and the library calls they make (the plan:
``bench.plan``; the sweep: ``bench.sweep``; the table's files: ``bench.table``). ``register(subparsers)`` adds them
to peftzoo's CLI, as ``intrinsic.cli`` and ``analysis.cli`` add theirs."""
from __future__ import annotations

import sys
from pathlib import Path

LOCAL_RESULTS = "local-results"  # bench/table's default results folder: the user's own (the committed one is results/)


def register(sub) -> None:
    b = sub.add_parser("bench", help="train methods on GLUE tasks, or your own, at matched parameter budgets")
    b.add_argument("--preset", default="quick", help="a shipped preset's name (quick, smoke, cpu, glue, ...), or a "
                   "path to a preset JSON file")
    b.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR, else the hub)")
    b.add_argument("--results", default=LOCAL_RESULTS, help="results folder, one JSON per run under <suite>/runs/; "
                   "--results results adds to the repository's committed results")
    b.add_argument("--suite", default=None, help="results sub-folder (default: the preset's suite)")
    b.add_argument("--model", default=None, help="transformers id or path of any sequence-classification "
                   "checkpoint, encoder or decoder (default: the preset's); budgets given relative to the model "
                   "(\"lora:r=8\") and a preset's default layers are resolved on it")
    b.add_argument("--task-file", action="append", metavar="FILE", help="a JSON file defining one task or a list "
                   "(docs/own-task.md); run on its tasks instead of the preset's (repeatable)")
    b.add_argument("--tasks", nargs="*", help="tasks to run: GLUE names and those of --task-file (default: the "
                   "preset's, or the task files')")
    b.add_argument("--methods", nargs="*", help="methods to run (default: the preset's)")
    b.add_argument("--seeds", nargs="*", type=int, help="seeds to run (default: the preset's)")
    b.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    b.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    b.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out malformed data rows (counted, recorded in every run) instead of stopping")
    b.add_argument("--skip-unreachable", action="store_true", help="run the other cells when some (method, budget) "
                   "cells cannot run on this model (listed, also with -q) instead of stopping before training")
    b.add_argument("--stage", default="all", choices=["all", "separation"], help="separation: only full FT and "
                   "head-only (sweep, selection, seeds) and whether each task separates them (protocol.separation)")
    b.add_argument("--ignore-separation", action="store_true", help="run the other methods also on a task where "
                   "full FT did not separate from head-only (protocol.separation; said per task)")
    b.add_argument("--save-adapters", action="store_true", help="keep each run's trained adapter (peftzoo's own "
                   "format, the head included) beside its JSON, <run id>.adapter/, named in the record "
                   "(saved_adapter); `peftzoo analyze --adapter RUN.json` reads it. Full FT keeps none (its adapter "
                   "is the whole model). Warns when the results folder would outgrow its size budget")
    b.add_argument("--dry-run", action="store_true", help="print the planned runs and their count, and exit")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress bars (for logs); problems are still said")
    b.add_argument("--stack", type=int, default=1, metavar="K", help="train up to K runs that share their batches "
                   "(same task and seed: an LR sweep) together over one frozen base, each its own record; LoRA, "
                   "rsLoRA, LoRA+ stack, other methods run one by one (said)")
    from peftzoo.bench.ray_executor import add_arguments as executor_arguments
    executor_arguments(b)
    b.set_defaults(fn=bench)
    t = sub.add_parser("table", help="write <results>/<suite>/leaderboard.{md,csv,png} and leaderboard-lr.png "
                       "(--html: and leaderboard.html)")
    t.add_argument("--suite", default="quick", help="the suite (results sub-folder) to tabulate")
    t.add_argument("--results", default=LOCAL_RESULTS, help="results folder bench wrote to; --results results "
                   "for the repository's committed leaderboards")
    t.add_argument("--optimistic", action="store_true", help="OPTIMISTIC view: LR and epoch picked on the dev set "
                   "it reports (biased upward; written to leaderboard-optimistic.*)")
    t.add_argument("--html", action="store_true", help="also write leaderboard.html: one self-contained page (the "
                   "sortable table, per task the Pareto and LR plots, each cell's runs linked)")
    t.set_defaults(fn=table)


def _plan(args):
    """The plan the arguments ask for (the preset narrowed and overridden by them), checked before anything runs."""
    from dataclasses import replace

    from peftzoo.bench.plan import make_plan
    from peftzoo.bench.preflight import preflight, preset_precisions
    from peftzoo.bench.preset import load_preset, normalise_tasks
    preset = load_preset(args.preset)
    preset = replace(preset, suite=args.suite or preset.suite, model=args.model or preset.model)
    if args.task_file:
        preset = preset.with_tasks(task_files(args.task_file))
    tasks = normalise_tasks(args.tasks, "--tasks", preset.defined) if args.tasks else preset.tasks
    if not args.dry_run:
        preflight(preset.model, [preset.task(t) for t in tasks], args.data_dir, args.results, preset.suite,
                  args.device, args.skip_bad_rows, precisions=preset_precisions(preset))
    request = {"preset": preset_ref(args.preset), "skip_unreachable": args.skip_unreachable,
               **({"ignore_separation": True} if args.ignore_separation else {}),  # recorded only where given
               **({"task_files": [str(Path(f).resolve()) for f in args.task_file]} if args.task_file else {})}
    return make_plan(preset, tasks=tasks, methods=args.methods, seeds=args.seeds, skip_bad_rows=args.skip_bad_rows,
                     drop_unrunnable=args.skip_unreachable, request=request)


def task_files(paths) -> dict:
    """{name: Task} of every --task-file, a name defined twice an error."""
    from peftzoo.bench.tasks import load_task_file
    out = {}
    for f in paths:
        out.update(load_task_file(f, taken=out))
    return out


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
    if args.stage == "separation":
        from peftzoo.bench.separation import BASELINES, check_plan
        plan = check_plan(plan).narrowed(methods=BASELINES)
    if args.dry_run:
        dry_run(plan, args.data_dir)
        return 0
    out = run_protocol(plan, root=args.results, data_dir=args.data_dir, device=args.device, quiet=args.quiet,
                       retry_failed=args.retry_failed, ray=ray, only_separation=args.stage == "separation",
                       ignore_separation=args.ignore_separation, save_adapters=args.save_adapters,
                       stack=args.stack)
    for line in failed_before(out, args.results):
        print(line, file=sys.stderr)
    print(out.summary(f"{args.results}/{plan.preset.suite}/runs"))
    return EXIT_SOME_FAILED if out.failed else 0


def dry_run(plan, data_dir) -> None:
    """The planned runs, one line each, and their count."""
    from peftzoo.bench.plan import model_name
    stages = {n: plan.stage(n, None) for n in plan.stages}
    if plan.sizes:
        print(f"budgets on model {model_name(plan.preset)}: " + ", ".join(f"{e} = {n:,}" for e, n in plan.sizes.items()))
    for n, specs in stages.items():
        for s in specs:
            try:
                s = s.bind_data(data_dir)
            except (OSError, ValueError):
                pass  # the id printed is then the one before the data is known
            lr = f"lr={s.lr:g}" if n == 1 else ("lr=<local grid around the selected>" if plan.group(n, s) else
                                                 "lr=<selected on validation>")
            print(f"stage {n}", s.suite, s.task, s.method, s.cell, lr, f"s{s.seed}")
    for c, why in plan.dropped:
        print(f"left out (--skip-unreachable): {c.name}: {why}")
    if plan.protocol.separation:
        print(f"protocol.separation = {plan.protocol.separation:g}: full and head run first (`--stage separation`); "
              f"a task's other methods run only once full FT beats head-only there by more than that × the larger "
              f"95% half-width")
    names = {1: "LR sweep", 2: "selected LR" if len(stages) == 2 else "selected LR, local grids", 3: "selected LR"}
    print(f"{sum(map(len, stages.values()))} runs: "
          + ", ".join(f"stage {n} ({names[n]}) {len(x)}" for n, x in stages.items())
          + f"; {len(plan.tasks)} tasks, {len(plan.cells)} (method, budget) cells"
          + (f" ({len(plan.dropped)} left out)" if plan.dropped else "") + f", {len(plan.seeds)} seeds")


def preset_ref(preset: str) -> str:
    """How the runs record their preset (the table's Reproduce line names it): a shipped name as given, a file by
    its absolute path (a relative one would not be found from another folder)."""
    return str(Path(preset).resolve()) if Path(preset).is_file() else preset


def table(args) -> int:
    from peftzoo.bench import html
    from peftzoo.bench.table import write
    written = []
    path = write(args.results, args.suite, optimistic=args.optimistic, written=written,
                 also=(html.write,) if args.html else ())
    print(path.read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
