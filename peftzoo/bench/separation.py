"""The separation gate (``protocol.separation``): a task can rank methods only where full FT beats head-only by more
than ``separation`` × the larger 95% t half-width of the two over seeds (``leaderboard.separation``).

With it set, ``sweep.run_protocol`` runs the baselines' own protocol (sweep, selection, seeds) first: that is the
cheap first stage, runnable alone (``peftzoo bench --stage separation``). A task's other methods then run only if its
baselines separate; a task that does not (or whose baseline runs are not all done) is refused, said with its numbers
and the ways out, unless ``--ignore-separation``.
"""
from __future__ import annotations

BASELINES = ("full", "head")
ANYWAY = "runs anyway (--ignore-separation)"  # how a line ends where the check was overridden
DEFAULT = 3.0  # the factor `--stage separation` uses for a preset without protocol.separation


def factor(plan) -> float:
    return plan.protocol.separation or DEFAULT


def check_plan(plan):
    """``plan`` itself, once it holds both baselines (they decide which tasks run); a ValueError says the fix."""
    missing = [m for m in BASELINES if m not in {c.method for c in plan.cells}]
    if missing:
        raise ValueError(f"the preset's protocol.separation (or --stage separation) needs the baselines "
                         f"{' and '.join(BASELINES)} in the plan: they decide which tasks the other methods run on; "
                         f"add {', '.join(missing)} to --methods (their runs already recorded are not run again)")
    return plan


def verdicts(records: list, k: float) -> dict:
    """{task: {"gap", "half_width", "separates"}} from the baselines' records (tasks with both at >= 2 seeds)."""
    from peftzoo.bench.leaderboard import build, separation
    ok = [r for r in records if r.ok and r.method in BASELINES]
    return separation(build(ok), k) if ok else {}


def gate(plan, records: list, ignore: bool = False) -> tuple[list, list]:
    """(the tasks whose other methods may run, one line per task saying its verdict)."""
    k = factor(plan)
    got, tasks, lines = verdicts(records, k), [], []
    for t in plan.tasks:
        v = got.get(t)
        if v and v["separates"]:
            tasks.append(t)
            lines.append(f"{t}: separates: full FT beats head-only by {100 * v['gap']:.1f} points > {k:g} × "
                         f"{100 * v['half_width']:.1f} (the larger 95% half-width)")
            continue
        if v is None:
            why = ("no verdict yet: its full FT and head-only runs are not all recorded (failed, or held by another "
                   "sweep: see above), or ran one seed (no interval)")
        else:
            why = (f"DOES NOT SEPARATE: full FT - head-only = {100 * v['gap']:.1f} points, not more than {k:g} × "
                   f"{100 * v['half_width']:.1f} = {100 * k * v['half_width']:.1f} (the larger 95% half-width): "
                   f"this task cannot rank methods")
        if ignore:
            tasks.append(t)
            lines.append(f"{t}: {why}; its other methods {ANYWAY}")
        else:
            lines.append(f"{t}: {why}; its other methods are NOT run. Enlarge the task (max_train, epochs in the "
                         f"preset's task_overrides), leave it out (--tasks), or pass --ignore-separation")
    return tasks, lines
