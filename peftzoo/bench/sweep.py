"""The sweep executes the unfinished RunSpecs of a plan (``plan.make_plan``), one JSON each.

Each run is claimed before it executes (``claim.acquire``), so several sweeps on one results folder split the work.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from peftzoo.bench import claim, store
from peftzoo.bench.plan import make_plan
from peftzoo.bench.runner import execute
from peftzoo.bench.spec import RunSpec

EXIT_SOME_FAILED = 3  # `peftzoo bench` exit status when any run of the plan is recorded as failed


def plan(preset, tasks=None, methods=None, seeds=None, skip_bad_rows: bool = False) -> list[RunSpec]:
    """The preset's runs that need no LR selection: the LR sweep (stage 1 of ``protocol``), and the other seeds and
    budgets of methods whose grid is a single LR. ``run_protocol`` runs the whole plan."""
    return make_plan(preset, tasks, methods, seeds, skip_bad_rows=skip_bad_rows).known()


@dataclass
class Outcome:
    """What a sweep did, for its summary and exit status."""
    total: int = 0
    done_before: int = 0
    written: list = field(default_factory=list)  # paths
    failed: list = field(default_factory=list)  # (spec, record) of every run of the plan recorded as failed
    busy: list = field(default_factory=list)  # (spec, claim info): being run by another sweep
    invalid: list = field(default_factory=list)  # (path, problem): invalid records that were re-run
    not_run: list = field(default_factory=list)  # lines: planned runs that could not be run (no LR was selected)
    dropped: list = field(default_factory=list)  # lines: cells left out by --skip-unreachable

    def summary(self, where) -> str:
        s = f"{len(self.written)} runs written under {where} ({self.total} in the plan, {self.done_before} done before)"
        if self.dropped:
            s += f"; {len(self.dropped)} (method, budget) cells left out (--skip-unreachable; listed above)"
        if self.not_run:
            s += f"; {len(self.not_run)} (task, method) pairs got no stage 2 (listed above)"
        if self.busy:
            s += f"; {len(self.busy)} left to another sweep that holds them ({claim.describe(self.busy[0][1], age=False)})"
        if self.failed:
            s += (f"; {len(self.failed)} failed (listed above): fix the cause, then rerun with --retry-failed "
                  f"to run them again")
        return s


def _say(msg: str) -> None:
    from tqdm.auto import tqdm
    tqdm.write(msg, file=sys.stderr)


def sweep(specs: list[RunSpec], root="results", data_dir=None, device=None, quiet=False, retry_failed=False,
          executor=None, ray=None, stack: int = 1) -> Outcome:
    """Run every unfinished spec, writing one JSON each as it finishes (an invalid record counts as unfinished).
    ``ray``: a ``ray_executor.RayOptions`` to run them as Ray tasks (written here all the same); ``stack`` > 1:
    up to that many runs that share their batches train together over one frozen base (``bench.stacked``)."""
    from tqdm.auto import tqdm
    executor = executor or execute
    bound = {}
    for s in specs:  # the data's identity is part of each run's; duplicates collapse here
        s = s.bind_data(data_dir)
        bound.setdefault(s.run_id, s)
    out = Outcome(total=len(bound))
    todo = []
    for s in bound.values():
        path = store.run_path(root, s.suite, s.task, s.run_id)
        if store.is_finished(path, retry_failed):
            out.done_before += 1
            continue
        if path.exists():
            problem = store.read_record(path)[1]
            if problem:
                out.invalid.append((path, problem))
                _say(f"invalid run record {path}: {problem}; running it again")
        todo.append(s)
    if ray is not None:
        from peftzoo.bench.ray_executor import run_on_ray
        run_on_ray(todo, root, out, data_dir, device, quiet, retry_failed, ray, executor)
        todo = []
    if stack > 1:
        _stacked(todo, root, out, data_dir, device, quiet, retry_failed, stack)
        todo = []
    bar = tqdm(todo, desc=f"sweep ({out.done_before} of {out.total} done before)", disable=quiet or not todo)
    for spec in bar:
        bar.set_postfix_str(spec.label)
        path = store.run_path(root, spec.suite, spec.task, spec.run_id)
        if not claim.for_run(spec, path, out.busy, retry_failed, None if quiet else _say):
            continue
        try:
            rec = executor(spec, data_dir=data_dir, device=device, progress=not quiet)
            store.write_record(path, rec)
        finally:
            claim.release(path)
        out.written.append(path)
        if not rec.ok:  # failed or skipped: said with -q too
            _say(f"{spec.label}: {rec.status}: {rec.why}")
    for s in bound.values():
        rec, _ = store.read_record(store.run_path(root, s.suite, s.task, s.run_id))
        if rec is not None and rec.status == "failed":
            out.failed.append((s, rec))
    return out


def _stacked(todo, root, out, data_dir, device, quiet, retry_failed, k) -> None:
    """``sweep``'s loop for ``--stack K``: each stack's runs claimed, trained together, written one JSON each."""
    from peftzoo.bench import stacked
    said = set()
    for group in stacked.groups(todo, k):
        why = stacked.why_not(group[0]) if len(group) == 1 else None
        if why and why not in said and not quiet:
            said.add(why)
            _say(f"--stack {k}: {why}")
        paths = {s.run_id: store.run_path(root, s.suite, s.task, s.run_id) for s in group}
        mine = [s for s in group if claim.for_run(s, paths[s.run_id], out.busy, retry_failed, None if quiet else _say)]
        try:
            recs = stacked.execute_stack(mine, data_dir, device, progress=not quiet, say=_say) if mine else []
            for s, rec in zip(mine, recs):
                store.write_record(paths[s.run_id], rec)
                out.written.append(paths[s.run_id])
                if not rec.ok:
                    _say(f"{s.label}: {rec.status}: {rec.why}")
        finally:
            for s in mine:
                claim.release(paths[s.run_id])


def failed_before(out: Outcome, root) -> list[str]:
    """One line per failed run that this sweep did not run (failed in an earlier sweep, not retried)."""
    now = {Path(p) for p in out.written}
    return [f"{s.label}: failed earlier: {r.error}" for s, r in out.failed
            if store.run_path(root, s.suite, s.task, s.run_id) not in now]


def run_protocol(plan, root="results", data_dir=None, device=None, quiet=False, retry_failed=False, executor=None,
                 ray=None, stack: int = 1) -> Outcome:
    """Stage 1, selection on validation, stage 2; every run records its protocol and stage and the plan's request
    (how the sweep was asked for: preset, --skip-unreachable; the table's Reproduce line reads it), all carried by
    its RunSpec.

    A (task, method) whose sweep is not complete yet (runs held by another sweep) gets no stage 2 now: its LR
    would be chosen on part of the grid; one whose every sweep run failed gets none either (said, also with -q).
    Returns the combined ``sweep.Outcome``."""
    dropped = [f"{c.name}: {why}" for c, why in plan.dropped]
    for line in dropped:
        _say(f"left out (--skip-unreachable): {line}")
    s1 = plan.stage1()
    out1 = sweep(s1, root, data_dir, device, quiet, retry_failed, executor=executor, ray=ray, stack=stack)
    recs, incomplete = [], set()
    for s in s1:
        rec, _ = store.read_record(store.run_path(root, s.suite, s.task, s.bind_data(data_dir).run_id))
        if rec is None:
            incomplete.add((s.task, s.method))
        else:
            recs.append(rec)
    sel = {k: lr for k, lr in plan.selected_lrs(recs).items() if k not in incomplete}
    if not quiet:
        for (t, m), lr in sorted(sel.items()):
            print(f"selected on validation: {t} {m} lr={lr:g}")
        for t, m in sorted(incomplete):
            print(f"{t} {m}: its LR sweep is not finished (held by another sweep?): no stage 2 for it this time")
    waiting = {(s.task, s.method) for s in plan.stage2(None)}
    not_run = [f"{t} {m}: every run of its LR sweep failed, so no LR was selected and its stage-2 runs (other "
               f"seeds and budgets) were not run" for t, m in sorted(waiting - set(sel) - incomplete)]
    for line in not_run:
        _say(line)
    out2 = sweep(plan.stage2(sel), root, data_dir, device, quiet, retry_failed, executor=executor, ray=ray,
                 stack=stack)
    return Outcome(**{k: getattr(out1, k) + getattr(out2, k) for k in
                      ("total", "done_before", "written", "failed", "busy", "invalid")}, not_run=not_run,
                   dropped=dropped)
