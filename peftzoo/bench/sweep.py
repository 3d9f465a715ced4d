"""The sweep executes the unfinished RunSpecs of a plan (``plan.make_plan``), one JSON each.

Each run is claimed before it executes (``claim.acquire``), so several sweeps on one results folder split the work.
"""
from __future__ import annotations

import functools
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
    refused: list = field(default_factory=list)  # lines: tasks whose adapters did not run (no separation)
    unsaved: list = field(default_factory=list)  # paths: finished before, without the adapter --save-adapters asks for
    budget: store.AdapterBudget | None = None  # --save-adapters: the results folder's size budget, watched

    def summary(self, where) -> str:
        s = f"{len(self.written)} runs written under {where} ({self.total} in the plan, {self.done_before} done before)"
        if self.dropped:
            s += f"; {len(self.dropped)} (method, budget) cells left out (--skip-unreachable; listed above)"
        if self.not_run:
            s += f"; {len(self.not_run)} LR sweeps selected nothing, so their later stages did not run (listed above)"
        if self.refused:
            s += (f"; {len(self.refused)} tasks ran only the baselines: full FT did not separate from head-only, "
                  f"or not yet (listed above)")
        if self.busy:
            s += f"; {len(self.busy)} left to another sweep that holds them ({claim.describe(self.busy[0][1], age=False)})"
        if self.failed:
            s += (f"; {len(self.failed)} failed (listed above): fix the cause, then rerun with --retry-failed "
                  f"to run them again")
        if self.unsaved:
            s += (f"; {len(self.unsaved)} finished before without a saved adapter (e.g. {self.unsaved[0]}): move "
                  f"their JSONs away to train them again with --save-adapters")
        return s


def _say(msg: str) -> None:
    from tqdm.auto import tqdm
    tqdm.write(msg, file=sys.stderr)


def sweep(specs: list[RunSpec], root="results", data_dir=None, device=None, quiet=False, retry_failed=False,
          executor=None, ray=None, save_adapters: bool = False, budget=None, later: int = 0,
          stack: int = 1) -> Outcome:
    """Run every unfinished spec, writing one JSON each as it finishes (an invalid record counts as unfinished).
    ``ray``: a ``ray_executor.RayOptions`` to run them as Ray tasks (written here all the same). ``save_adapters``:
    each run's trained adapter is kept beside its JSON (``store.adapter_dir``), ``budget`` (a
    ``store.AdapterBudget``) watching the folder's size, with ``later`` more runs to come after these; ``stack`` > 1:
    up to that many runs that share their batches train together over one frozen base (``bench.stacked``)."""
    if stack > 1 and save_adapters:
        raise ValueError(f"--stack {stack} does not keep adapters yet: drop --save-adapters, or --stack")
    from tqdm.auto import tqdm
    executor = executor or execute
    if save_adapters:
        executor = functools.partial(executor, save_adapter=True)
        budget = budget or store.AdapterBudget(root, _say)
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
            if save_adapters and _unsaved(path):
                out.unsaved.append(path)
            continue
        if path.exists():
            problem = store.read_record(path)[1]
            if problem:
                out.invalid.append((path, problem))
                _say(f"invalid run record {path}: {problem}; running it again")
        todo.append(s)
    out.budget = budget
    if budget is not None:
        budget.expect(len(todo) + later)
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
            store.write_record(path, rec, budget)
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


def _unsaved(path) -> bool:
    """A finished ok run whose record names no saved adapter (nor why it has none)."""
    rec, _ = store.read_record(path)
    return rec is not None and rec.ok and rec.saved_adapter is None


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
                 ray=None, only_separation: bool = False, ignore_separation: bool = False,
                 save_adapters: bool = False, stack: int = 1) -> Outcome:
    """The plan's stages (``Plan.stages``: the sweep, selection on validation, the selected LRs, and with
    ``budget_lr_points`` the local grids between); every run records its protocol and stage and the plan's request
    (how the sweep was asked for: preset, --skip-unreachable; the table's Reproduce line reads it), all carried by
    its RunSpec. With ``protocol.separation`` the baselines' stages run first and decide which tasks the other
    methods run on (``bench.separation``); ``only_separation``: stop after them (``--stage separation``).

    A group (a (task, method) sweep, or a cell's local grid) not complete yet (runs held by another sweep) gets no
    later stage now: its LR would be chosen on part of the grid; one whose every run failed gets none either (said,
    also with -q). Returns the combined ``sweep.Outcome``."""
    from peftzoo.bench import separation
    dropped = [f"{c.name}: {why}" for c, why in plan.dropped]
    for line in dropped:
        _say(f"left out (--skip-unreachable): {line}")
    # one size budget watched across every stage
    keep = {"save_adapters": save_adapters, "budget": None, "stack": stack}
    go = lambda p: _stages(p, root, data_dir, device, quiet, retry_failed, executor, ray, keep)  # noqa: E731
    if not (plan.protocol.separation or only_separation):
        return _join([go(plan)[0]], dropped=dropped)
    base, recs = go(separation.check_plan(plan).narrowed(methods=separation.BASELINES))
    tasks, lines = separation.gate(plan, recs, ignore_separation)
    for line in lines:
        _say(line)
    others = [c.method for c in plan.cells if c.method not in separation.BASELINES]
    if only_separation or not others:
        return _join([base], dropped=dropped)
    rest, _ = go(plan.narrowed(tasks=tasks, methods=others))
    refused = [ln for t, ln in zip(plan.tasks, lines) if t not in tasks]
    return _join([base, rest], dropped=dropped, refused=refused)


def _record(root, spec, data_dir):
    return store.read_record(store.run_path(root, spec.suite, spec.task, spec.bind_data(data_dir).run_id))[0]


def _stages(plan, root, data_dir, device, quiet, retry_failed, executor, ray, keep) -> tuple[Outcome, list]:
    """Every stage of ``plan`` in turn, each from what the one before selected: (the Outcome, the records read).
    ``keep``: {"save_adapters": bool, "budget": the results folder's AdapterBudget once made, shared by the stages,
    "stack": K}."""
    outs, records, not_run, selected = [], [], [], None
    for n in plan.stages:
        specs = plan.stage(n, selected)
        later = sum(len(plan.stage(k, None)) for k in plan.stages if k > n) if keep["save_adapters"] else 0
        outs.append(sweep(specs, root, data_dir, device, quiet, retry_failed, executor=executor, ray=ray,
                          save_adapters=keep["save_adapters"], budget=keep["budget"], later=later,
                          stack=keep["stack"]))
        keep["budget"] = outs[-1].budget
        done = [(s, _record(root, s, data_dir)) for s in specs]
        records += [r for _, r in done if r is not None]
        if n == plan.stages[-1]:
            break
        incomplete = {g for s, r in done if r is None and (g := plan.group(n, s)) is not None}
        selected = {g: lr for g, lr in plan.select(n, [r for _, r in done if r is not None]).items()
                    if g not in incomplete}
        waiting = {plan.group(n, s) for s in plan.stage(n + 1, None)} - {None}
        if not quiet:
            for g, lr in sorted(selected.items()):
                print(f"selected on validation: {plan.group_name(g)} lr={lr:g}")
            for g in sorted(incomplete):
                print(f"{plan.group_name(g)}: its LR sweep is not finished (held by another sweep?): no stage "
                      f"{n + 1} for it this time")
        lines = [f"{plan.group_name(g)}: every run of its LR sweep failed, so no LR was selected and its "
                 f"stage-{n + 1} runs (other seeds and budgets) were not run" for g in sorted(waiting - set(selected)
                                                                                       - incomplete)]
        for line in lines:
            _say(line)
        not_run += lines
    return _join(outs, not_run=not_run), records


def _join(outs: list, **kw) -> Outcome:
    """The Outcomes of several sweeps as one (their counts and lists added), ``kw`` added to its lists."""
    keys = ("total", "done_before", "written", "failed", "busy", "invalid", "not_run", "dropped", "refused", "unsaved")
    return Outcome(**{k: sum((getattr(o, k) for o in outs), 0 if k in keys[:2] else list(kw.get(k, [])))
                      for k in keys}, budget=next((o.budget for o in outs if o.budget is not None), None))
