"""The plan of a preset: its (method, budget) cells x LRs x seeds as RunSpecs, in the protocol's stages
(``bench.protocol``): ``Plan.stage(n, selected)`` gives stage n's runs from the LRs the earlier stage selected
(``Plan.select(n - 1, done)``), so the runs of one stage are independent of each other (an executor may run them all
at once) and a sweep started again re-plans every stage from the records already written (resuming).

``run_spec`` is the one place a RunSpec is made from a preset: every ``setting`` field of the ``Preset`` (as it
applies to the task, ``Preset.for_task``) becomes the RunSpec field of the same name, so a new run setting is a
field of each and nothing here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from peftzoo import adapters
from peftzoo.bench.budget import resolve, solve
from peftzoo.bench.preset import Preset, normalise_methods, normalise_tasks
from peftzoo.bench.protocol import Protocol, budget_grid, check_method_budgets, hkey, local_grid, selection
from peftzoo.bench.spec import RunSpec


def method_class(method: str):
    return adapters.get(method)


def lr_grid(preset: Preset, method: str, task: str | None = None, points: int | None = None) -> tuple[float, ...]:
    """The method's LR sweep: the preset's ``lr_grid`` (its task's override first), a fixed ``lr``, else the class's;
    ``points``: only the central ones."""
    p = preset.for_task(task) if task else preset
    if method in p.lr_grid:
        grid = tuple(float(x) for x in p.lr_grid[method])
    elif method in p.lr:
        grid = (float(p.lr[method]),)
    else:
        grid = method_class(method).lr_grid()
    if not grid or any(x <= 0 for x in grid):
        raise ValueError(f"{method}: the LR grid {grid} must hold positive values")
    grid = tuple(sorted(grid))
    if points and len(grid) > points:
        lo = (len(grid) - points) // 2
        grid = grid[lo:lo + points]
    return grid


@dataclass(frozen=True)
class Cell:
    """One (method, budget) point of the grid; its runs differ only by LR and seed."""
    method: str
    hparams: dict
    label: str  # "73,728" (a matched budget), "paper" (the paper's setting) or "—" (a baseline, or fixed hparams)
    budget: int | None = None
    achieved: int | None = None
    skip: str | None = None  # why this cell cannot run (its budget is unreachable); such a cell is never planned
    middle: bool = True  # the LR sweep runs here
    entry: str = ""  # the preset's budget entry when it is relative to the model ("lora:r=8"), for messages

    @property
    def key(self) -> str:
        return hkey(self.hparams)

    @property
    def name(self) -> str:
        return f"{self.method} {self.label}" + (f" ({self.entry})" if self.entry else "")


class UnrunnableCells(ValueError):
    """Planned (method, budget) cells that cannot run; the message lists every one and the ways out."""


def _targets(preset: Preset):
    return preset.targets if isinstance(preset.targets, str) else list(preset.targets)


class _Sizes:
    """Budget entries resolved on the preset's model (loaded once, only if an entry or a budget needs it)."""

    def __init__(self, preset: Preset, model=None):
        self.preset, self.model, self.given, self.resolved = preset, model, model, {}

    def get_model(self):
        if self.model is None:
            from peftzoo.bench.models import load_model
            self.model = load_model(self.preset.model, self.preset.task(self.preset.tasks[0]))[0]
        return self.model

    def __call__(self, entry) -> int:
        if not entry.relative:
            return entry.count
        if entry.text not in self.resolved:
            try:
                self.resolved[entry.text] = resolve(entry, self.get_model(), _targets(self.preset),
                                                    self.preset.train_modules)
            except ValueError as e:
                raise ValueError(f"{e} (model {model_name(self.preset, self.given)})") from None
        return self.resolved[entry.text]

    def entry_of(self, budget: int, entries) -> str:
        return next((e.text for e in entries if e.relative and self(e) == budget), "")


def layers(preset: Preset, model=None) -> Preset:
    """The preset with its targets and train modules as they apply to its model (``models.plan_layers``: the
    architecture's defaults where it names none; named ones checked), on ``model`` or the module tree of the
    preset's model, built from its config without weights."""
    from peftzoo.bench.models import plan_layers, skeleton
    tree = model if model is not None else skeleton(preset.model, preset.task(preset.tasks[0]).num_labels)
    return plan_layers(preset, tree, model_name(preset, model))


def model_name(preset: Preset, model=None) -> str:
    """The model a plan is made for, as messages name it (``model``: the one passed to ``make_plan``, if any)."""
    if model is not None:
        return getattr(getattr(model, "config", None), "_name_or_path", "") or f"the {type(model).__name__} given"
    return preset.model or "all-MiniLM-L6-v2 (embedded)"


def cells(preset: Preset, methods, protocol: Protocol, sizes: _Sizes) -> list[Cell]:
    """The (method, budget) grid; budget entries resolved and budgets solved once on the sizes' model. A cell whose
    budget no value of the method reaches within tolerance has ``skip`` set."""
    adapted = [m for m in methods if not method_class(m).baseline]
    shared = budget_grid(preset.budget_entries(), sizes) if adapted else ([], None)
    out = []
    for m in methods:
        cls, fixed = method_class(m), dict(preset.hparams.get(m, {}))
        if cls.baseline:
            out.append(Cell(m, {}, "—"))
        elif cls.budget_knob is None:  # no size knob (IA3, BitFit: their size is set by the targets): swept there
            out.append(Cell(m, fixed, "—"))
        else:
            out += _method_cells(preset, m, fixed, shared, protocol, sizes)
    return out


def _method_cells(preset: Preset, m: str, fixed: dict, shared, protocol: Protocol, sizes: _Sizes) -> list[Cell]:
    """A method's cells: its budgets (its own, else the shared ones), then its paper setting if it has one."""
    cls, (bs, middle) = method_class(m), shared
    own = preset.method_entries(m)
    entries = preset.budget_entries() + (own or [])
    mine = budget_grid(own, sizes)[0] if own is not None else bs
    paper = bool(m in protocol.paper_settings and cls.paper_hparams)
    check_method_budgets(m, mine, middle, paper, bool(bs), show=lambda b: sizes.entry_of(b, entries) or b)
    out = [] if bs else [Cell(m, fixed, "—")]
    for b in mine:
        s = solve(sizes.get_model(), m, b, targets=_targets(preset), **fixed)
        skip = None if s.ok else f"budget {b} unreachable: nearest {s.kwargs} gives {s.achieved} ({s.rel_error:+.1%})"
        out.append(Cell(m, {**fixed, **s.kwargs}, f"{b:,}", b, s.achieved, skip, b == middle,
                        sizes.entry_of(b, entries)))
    hp = {**fixed, **(cls.paper_hparams or {})}
    if paper and all(c.key != hkey(hp) for c in out):  # else it already is one of the budgets
        from peftzoo.api import make_config
        n = cls.budget_count(sizes.get_model(), make_config(m, targets=_targets(preset), **hp))
        out.append(Cell(m, hp, "paper", None, n, None, not mine))  # no matched budget: sweep here
    return out


def runnable(all_cells: list[Cell]) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """(the cells that can run, [(cell, why not)]): an unreachable budget, and every other cell of a method whose
    LR sweep (its middle cell) cannot run, since their LR is the one that sweep selects."""
    dead = {c.method: c for c in all_cells if c.middle and c.skip}
    keep, dropped = [], []
    for c in all_cells:
        if c.skip:
            dropped.append((c, c.skip))
        elif c.method in dead:
            dropped.append((c, f"its LR is selected by the sweep at {dead[c.method].name}, which cannot run"))
        else:
            keep.append(c)
    return keep, dropped


def unrunnable_message(preset: Preset, n_cells: int, dropped, model=None) -> str:
    targets = _targets(preset)
    lines = [f"{len(dropped)} of {n_cells} planned (method, budget) cells cannot run on model "
             f"{model_name(preset, model)} "
             f"(targets {targets if isinstance(targets, str) else ', '.join(targets)}):"]
    lines += [f"  {c.name}: {why}" for c, why in dropped]
    lines.append('Give the budgets relative to the model (e.g. "budgets": ["lora:r=1", "lora:r=8", "lora:r=64"], as '
                 "the shipped presets do), give the method its own method_budgets, leave it out with --methods, or "
                 "pass --skip-unreachable to run the other cells without these")
    return "\n".join(lines)


def run_spec(preset: Preset, task: str, cell: Cell, lr: float, seed: int, stage: int | None = None,
             skip_bad_rows: bool = False, request: dict | None = None) -> RunSpec:
    """The RunSpec of one run: the preset's settings for ``task``, the cell's method and budget, an LR and a seed,
    under the preset's protocol (its validation split, and the stage recorded beside the spec)."""
    p, prot = preset.for_task(task), preset.protocol
    task_def = preset.defined[task].to_dict() if task in preset.defined else None  # a user task travels with its runs
    return RunSpec(suite=p.suite, task=task, task_def=task_def, method=cell.method, seed=seed, hparams=cell.hparams,
                   lr=lr, budget=cell.budget, achieved=cell.achieved, skip_reason=cell.skip, cell=cell.label,
                   val_fraction=prot.val_fraction, val_cap=prot.val_cap, val_seed=prot.val_seed,
                   skip_bad_rows=skip_bad_rows, protocol=prot, stage=stage, request=request, **p.settings())


@dataclass
class Plan:
    preset: Preset
    tasks: list
    seeds: list
    cells: list  # [Cell]: those that run
    dropped: list = field(default_factory=list)  # [(Cell, why)]: cells that cannot run (see runnable)
    sizes: dict = field(default_factory=dict)  # relative budget entry -> its count on the model
    skip_bad_rows: bool = False  # every run leaves malformed data rows out (--skip-bad-rows)
    request: dict | None = None  # how the sweep was asked for, recorded in every run (the Reproduce line)

    @property
    def protocol(self) -> Protocol:
        return self.preset.protocol

    def spec(self, task: str, cell: Cell, lr: float, seed: int, stage: int) -> RunSpec:
        return run_spec(self.preset, task, cell, lr, seed, stage, self.skip_bad_rows, self.request)

    def grid(self, task: str, method: str) -> tuple[float, ...]:
        return lr_grid(self.preset, method, task, self.protocol.lr_points)

    def stage1(self) -> list[RunSpec]:
        """The LR sweep: middle-budget cells x every LR of the grid x the sweep seeds."""
        k = self.protocol.sweep_seeds
        return [self.spec(t, c, lr, s, 1) for t in self.tasks for c in self.cells if c.middle
                for lr in self.grid(t, c.method) for s in self.seeds[:k]]

    def stage2(self, selected: dict | None) -> list[RunSpec]:
        """The middle budget's selected LR per (task, method) on the other seeds (middle cells), and at the other
        cells either that LR on every seed (transferred) or, with ``budget_lr_points``, its local grid on the sweep
        seeds.

        ``selected``: {(task, method): lr}; None plans with a placeholder LR (for counting only). A (task, method)
        without a selection (every sweep run failed) gets no stage-2 runs."""
        k, n, out = self.protocol.sweep_seeds, self.protocol.budget_lr_points, []
        for t in self.tasks:
            for c in self.cells:
                lr = float("nan") if selected is None else selected.get((t, c.method))
                if lr is None:
                    continue
                if c.middle:
                    out += [self.spec(t, c, lr, s, 2) for s in self.seeds[k:]]
                elif n:
                    out += [self.spec(t, c, x, s, 2) for x in local_grid(self.grid(t, c.method), lr, n)
                            for s in self.seeds[:k]]
                else:
                    out += [self.spec(t, c, lr, s, 2) for s in self.seeds]
        return out

    def stage3(self, selected: dict | None) -> list[RunSpec]:
        """With ``budget_lr_points``: each other cell's own selected LR on the seeds after the sweep seeds (else
        nothing). ``selected``: {(task, method, cell key): lr} (``select(2, ...)``); None: a placeholder LR."""
        if not self.protocol.budget_lr_points:
            return []
        k = self.protocol.sweep_seeds
        return [self.spec(t, c, lr, s, 3) for t in self.tasks for c in self.cells if not c.middle
                for lr in [float("nan") if selected is None else selected.get((t, c.method, c.key))]
                if lr is not None for s in self.seeds[k:]]

    def stage(self, n: int, selected: dict | None) -> list[RunSpec]:
        """Stage ``n``'s runs from the LRs stage n - 1 selected (``select``); stage 1 needs none."""
        return self.stage1() if n == 1 else (self.stage2 if n == 2 else self.stage3)(selected)

    @property
    def stages(self) -> list[int]:
        return list(range(1, self.protocol.stages + 1))

    def group(self, n: int, spec: RunSpec) -> tuple | None:
        """What stage ``n``'s run ``spec`` selects an LR for: (task, method) for stage 1's sweep, (task, method,
        cell key) for stage 2's local grids; None for a run at an LR already selected."""
        if n == 1:
            return spec.task, spec.method
        if n == 2 and self.protocol.budget_lr_points and hkey(spec.hparams) in self._local_keys(spec.method):
            return spec.task, spec.method, hkey(spec.hparams)
        return None

    def _local_keys(self, method: str) -> set:
        return {c.key for c in self.cells if c.method == method and not c.middle}

    def select(self, n: int, records: list) -> dict:
        """The LRs stage ``n``'s runs (``records``) select for stage n + 1: {(task, method): lr} at each method's
        middle cell after stage 1, {(task, method, cell key): lr} at the other cells after stage 2."""
        if n == 1:
            return self.selected_lrs(records)
        keys = {(c.method, c.key) for c in self.cells if not c.middle}
        return {(t, m, k): s.lr for (t, m, k), s in selection(records).items() if (m, k) in keys}

    def known(self) -> list[RunSpec]:
        """Every run whose LR is known before training: stage 1, and the later stages where a grid has one LR."""
        one = [(t, c) for t in self.tasks for c in self.cells if len(self.grid(t, c.method)) == 1]
        return (self.stage1() + self.stage2({(t, c.method): self.grid(t, c.method)[0] for t, c in one})
                + self.stage3({(t, c.method, c.key): self.grid(t, c.method)[0] for t, c in one}))

    def selected_lrs(self, records: list) -> dict:
        """{(task, method): lr} selected on validation among the sweep runs at each method's middle cell."""
        keys = {(c.method, c.key) for c in self.cells if c.middle}
        return {(t, m): s.lr for (t, m, k), s in selection(records).items() if (m, k) in keys}

    def group_name(self, g: tuple) -> str:
        """A ``group``'s name in messages: "SST-2 lora", or "SST-2 lora 9,216" for a cell's local grid."""
        if len(g) == 2:
            return f"{g[0]} {g[1]}"
        return f"{g[0]} " + next(c.name for c in self.cells if (c.method, c.key) == g[1:])

    def narrowed(self, tasks=None, methods=None) -> Plan:
        """This plan with only ``tasks`` and the cells of ``methods`` (either None: all)."""
        return replace(self, tasks=[t for t in self.tasks if tasks is None or t in tasks],
                       cells=[c for c in self.cells if methods is None or c.method in methods])


def make_plan(preset, tasks=None, methods=None, seeds=None, model=None, skip_bad_rows: bool = False,
              drop_unrunnable: bool = False, request: dict | None = None) -> Plan:
    """The plan of a preset (a ``Preset`` or its dict, checked); ``tasks``/``methods``/``seeds`` narrow it;
    ``request``: recorded in every run (how the sweep was asked for).

    The preset's targets and train modules are fixed on the model first (``layers``). Relative budget entries are
    resolved on the model (``model``, else the preset's, loaded once). A cell that cannot run is an
    ``UnrunnableCells`` error listing every such cell, unless ``drop_unrunnable`` (then ``plan.dropped``)."""
    if not isinstance(preset, Preset):
        preset = Preset.from_dict(preset)
    preset = layers(preset, model)
    tasks = list(normalise_tasks(tasks, "--tasks", preset.defined) if tasks else preset.tasks)
    methods = list(normalise_methods(methods, "--methods") if methods else preset.methods)
    seeds = list(dict.fromkeys(seeds if seeds else preset.seeds))
    sizes = _Sizes(preset, model)
    all_cells = cells(preset, methods, preset.protocol, sizes)
    keep, dropped = runnable(all_cells)
    if dropped and not drop_unrunnable:
        raise UnrunnableCells(unrunnable_message(preset, len(all_cells), dropped, model))
    return Plan(preset, tasks, seeds, keep, dropped, dict(sizes.resolved), skip_bad_rows, request)
