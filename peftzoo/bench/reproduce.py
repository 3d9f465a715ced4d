"""The leaderboard's ``Reproduce:`` line: the ``peftzoo bench`` and ``peftzoo table`` commands that remake a suite's
table from scratch, read from its runs (the preset each sweep recorded, the model, tasks, methods, seeds, suite,
results folder and flags), so that running it plans exactly the runs the table was built from."""
from __future__ import annotations

import shlex

from peftzoo import adapters
from peftzoo.bench.preset import load_preset

DATA_DIR = "$PEFTZOO_DATA_DIR"  # left for the shell to expand: the data's path is not part of a run's identity


def _preset(runs: list, suite: str):
    """(the preset's name or path, the loaded preset or None). Runs made before sweeps recorded their preset: the
    shipped preset named like the suite, if its suite is that one."""
    named = sorted({(r.spec.request or {}).get("preset") for r in runs} - {None})
    name = named[0] if named else suite
    try:
        p = load_preset(name)
    except (OSError, ValueError):
        return (name if named else None), None
    return (name, p) if named or p.suite == suite else (None, None)


def description(runs: list, suite: str) -> str | None:
    """The description of the preset the runs were made with (as ``_preset`` finds it), if it has one."""
    return getattr(_preset(runs, suite)[1], "description", None) or None


def _seeds(runs: list) -> list[int]:
    """The seeds in plan order: the LR sweep's seeds (stage 1) first, as the plan takes the first ones for it."""
    sweep = sorted({r.seed for r in runs if r.spec.stage == 1})
    return sweep + sorted({r.seed for r in runs} - set(sweep))


def bench_args(runs: list, root, suite: str) -> list[str]:
    """``peftzoo bench`` arguments (without the program name) that plan the runs of ``runs``."""
    name, preset = _preset(runs, suite)
    spec = runs[0].spec
    order = list(adapters.REGISTRY)
    tasks = sorted({r.task for r in runs})
    methods = sorted({r.method for r in runs}, key=lambda m: (order.index(m) if m in order else len(order), m))
    seeds = _seeds(runs)
    args = ["bench", "--preset", name or "PRESET"]
    if spec.model:
        args += ["--model", spec.model]
    files = sorted({f for r in runs for f in (r.spec.request or {}).get("task_files", [])})
    for f in files:
        args += ["--task-file", f]
    if preset is None or files or set(tasks) != set(preset.tasks):
        args += ["--tasks", *tasks]
    if preset is None or set(methods) != set(preset.methods):
        args += ["--methods", *methods]
    if preset is None or seeds != list(preset.seeds):
        args += ["--seeds", *map(str, seeds)]
    args += ["--suite", suite, "--results", str(root)]
    if any(r.spec.skip_bad_rows for r in runs):
        args.append("--skip-bad-rows")
    for flag in ("skip_unreachable", "ignore_separation"):
        if any((r.spec.request or {}).get(flag) for r in runs):
            args.append("--" + flag.replace("_", "-"))
    if str(spec.data or "").startswith("local:"):
        args += ["--data-dir", DATA_DIR]
    return args


def table_args(root, suite: str, optimistic: bool = False) -> list[str]:
    return ["table", "--suite", suite, "--results", str(root)] + (["--optimistic"] if optimistic else [])


def _join(args: list[str]) -> str:
    return " ".join(["peftzoo"] + [a if a == DATA_DIR else shlex.quote(a) for a in args])


def line(runs: list, root, suite: str, optimistic: bool = False) -> str:
    """``Reproduce: `peftzoo bench ... && peftzoo table ...```, with a note when the preset is not recorded."""
    b = bench_args(runs, root, suite)
    note = "" if b[2] != "PRESET" else (" (these runs do not record their preset: put its name or path for PRESET)")
    return f"Reproduce: `{_join(b)} && {_join(table_args(root, suite, optimistic))}`{note}"
