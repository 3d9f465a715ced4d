"""The measurement protocol: an LR sweep per method, selection on a validation split carved from train, seeds, budgets.

Stage 1 (LR sweep): every method at the middle budget, every LR of its grid, on the first ``sweep_seeds`` seeds.
Stage 2: the LR selected on validation (mean over the sweep seeds) runs on the remaining seeds at the middle budget
and on every seed at the other budgets and paper settings: the best LR is *assumed* rank-independent (α/r scaling).
The GLUE dev set is only ever reported: selection reads ``val_metrics``, never ``metrics`` (the dev scores).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from peftzoo import adapters
from peftzoo.bench.preset import Protocol, budgets  # noqa: F401  (the preset's protocol section)
from peftzoo.bench.tasks import split_indices  # noqa: F401


def method_class(method: str):
    return adapters.get(method)


def lr_grid(preset: dict, method: str, task: str | None = None, points: int | None = None) -> tuple[float, ...]:
    """The method's LR sweep: the preset's ``lr_grid`` (per task override first), a fixed ``lr``, else the class's."""
    over = preset.get("task_overrides", {}).get(task, {}) if task else {}
    for src in (over, preset):
        if method in src.get("lr_grid", {}):
            grid = tuple(float(x) for x in src["lr_grid"][method])
            break
        if method in src.get("lr", {}):
            grid = (float(src["lr"][method]),)
            break
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


def hkey(hparams: dict) -> str:
    return json.dumps(hparams, sort_keys=True)


class UnrunnableCells(ValueError):
    """Planned (method, budget) cells that cannot run; the message lists every one and the ways out."""


class _Sizes:
    """Budget entries resolved on the preset's model (loaded once, only if an entry or a budget needs it)."""

    def __init__(self, preset: dict, model=None):
        self.preset, self.model, self.given, self.resolved = preset, model, model, {}

    def get_model(self):
        if self.model is None:
            self.model = _model(self.preset)
        return self.model

    def __call__(self, entry) -> int:
        from peftzoo.bench.budget import resolve
        if not entry.relative:
            return entry.count
        if entry.text not in self.resolved:
            try:
                self.resolved[entry.text] = resolve(entry, self.get_model(), self.preset.get("targets", ["query", "value"]),
                                                    self.preset.get("train", ["classifier"]))
            except ValueError as e:
                raise ValueError(f"{e} (model {model_name(self.preset, self.given)})") from None
        return self.resolved[entry.text]

    def entry_of(self, budget: int, entries) -> str:
        return next((e.text for e in entries if e.relative and self(e) == budget), "")


def model_name(preset: dict, model=None) -> str:
    """The model a plan is made for, as messages name it (``model``: the one passed to ``make_plan``, if any)."""
    if model is not None:
        return getattr(getattr(model, "config", None), "_name_or_path", "") or f"the {type(model).__name__} given"
    return preset.get("model") or "all-MiniLM-L6-v2 (embedded)"


def cells(preset: dict, methods, protocol: Protocol, model=None, sizes: _Sizes | None = None) -> list[Cell]:
    """The (method, budget) grid; budget entries resolved and budgets solved once on ``model`` (loaded from the
    preset when needed). A cell whose budget no value of the method reaches within tolerance has ``skip`` set."""
    from peftzoo.bench.budget import solve
    from peftzoo.bench.preset import budget_entries
    sizes = sizes or _Sizes(preset, model)
    adapted = [m for m in methods if not method_class(m).baseline]
    bs, middle = budgets(preset, sizes) if adapted else ([], None)
    per_method = preset.get("method_budgets", {})
    targets = preset.get("targets", ["query", "value"])
    out = []
    for m in methods:
        cls = method_class(m)
        fixed = dict(preset.get("hparams", {}).get(m, {}))
        if cls.baseline:
            out.append(Cell(m, {}, "—"))
            continue
        if cls.budget_knob is None:  # no size knob (IA3, BitFit: their size is set by the targets): one point, swept there
            out.append(Cell(m, fixed, "—"))
            continue
        own = budget_entries({"budgets": per_method[m]}, f"method_budgets.{m}") if m in per_method else None
        entries = budget_entries(preset) + (own or [])
        mine = budgets({"budgets": per_method[m]}, sizes)[0] if own is not None else bs
        paper = m in protocol.paper_settings and cls.paper_hparams
        if mine and middle not in mine:
            shown = [sizes.entry_of(b, entries) or b for b in mine]
            raise ValueError(f"method_budgets[{m!r}] = {shown} must include the middle budget "
                             f"{sizes.entry_of(middle, entries) or middle} (the LR sweep runs there), or be [] to run "
                             f"only the paper setting")
        if bs and not mine and not paper:
            raise ValueError(f"method_budgets[{m!r}] is empty and {m} has no paper setting: it would not run")
        if not bs:
            out.append(Cell(m, fixed, "—"))
        for b in mine:
            s = solve(sizes.get_model(), m, b, targets=targets, **fixed)
            skip = None if s.ok else (f"budget {b} unreachable: nearest {s.kwargs} gives {s.achieved} "
                                      f"({s.rel_error:+.1%})")
            out.append(Cell(m, {**fixed, **s.kwargs}, f"{b:,}", b, s.achieved, skip, b == middle,
                            sizes.entry_of(b, entries)))
        if paper:
            hp = {**fixed, **cls.paper_hparams}
            if all(c.key != hkey(hp) for c in out if c.method == m):  # else it already is one of the budgets
                from peftzoo.api import make_config
                n = cls.budget_count(sizes.get_model(), make_config(m, targets=targets, **hp))
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


def unrunnable_message(preset: dict, n_cells: int, dropped, model=None) -> str:
    targets = preset.get("targets", ["query", "value"])
    lines = [f"{len(dropped)} of {n_cells} planned (method, budget) cells cannot run on model "
             f"{model_name(preset, model)} "
             f"(targets {targets if isinstance(targets, str) else ', '.join(targets)}):"]
    lines += [f"  {c.name}: {why}" for c, why in dropped]
    lines.append('Give the budgets relative to the model (e.g. "budgets": ["lora:r=1", "lora:r=8", "lora:r=64"], as '
                 "the shipped presets do), give the method its own method_budgets, leave it out with --methods, or "
                 "pass --skip-unreachable to run the other cells without these")
    return "\n".join(lines)


def _model(preset):
    from peftzoo.bench.runner import get_task, load_model
    return load_model(preset.get("model"), get_task(preset["tasks"][0]))[0]


def selection(records: list[dict], use: str = "val") -> dict:
    """Per (task, method, hparams): the selected LR and epoch, from the runs' ``use`` scores ("val"; "dev" only
    for the flagged optimistic view).

    The LR is chosen by the mean over the seeds that every LR of the group ran (the sweep seeds), the epoch (when
    the runs' protocol selects epochs) by the mean over every seed at that LR. Ties go to the smaller LR / epoch.
    """
    key = {"val": "val_metrics", "dev": "metrics"}[use]
    groups: dict = {}
    for r in records:
        if r.get("status") == "ok":
            g = groups.setdefault((r["task"], r["method"], hkey(r["spec"]["hparams"])), {})
            g.setdefault(float(r["spec"]["lr"]), {})[r["seed"]] = r
    out = {}
    for gk, by_lr in groups.items():
        common = set.intersection(*(set(s) for s in by_lr.values()))
        pick_epoch = all(r.get("protocol", {}).get("select_epoch", True) for s in by_lr.values() for r in s.values())

        def curve(runs):
            return np.mean([[h[key]["score"] for h in r["history"]] for r in runs], axis=0)
        per_lr = {}
        for lr, runs in sorted(by_lr.items()):
            c = curve([runs[s] for s in sorted(common)]) if common else None
            per_lr[lr] = None if c is None else float(c.max() if pick_epoch else c[-1])
        valid = {lr: v for lr, v in per_lr.items() if v is not None}
        best = max(valid, key=lambda lr: (valid[lr], -lr)) if valid else min(by_lr)
        c = curve(list(by_lr[best].values()))
        epoch = int(np.argmax(c)) + 1 if pick_epoch else len(c)
        out[gk] = {"lr": best, "epoch": epoch, "per_lr": per_lr, "sweep_seeds": sorted(common),
                   "seeds": sorted(by_lr[best]), "runs": [by_lr[best][s] for s in sorted(by_lr[best])]}
    return out


# ---- planning: cells x LRs x seeds -> RunSpecs, in two stages ------------------------------------------------------
SPEC_KEYS = ("epochs", "batch_size", "max_len", "max_train", "max_eval", "warmup", "weight_decay", "precision",
             "regression_targets")


@dataclass
class Plan:
    preset: dict
    protocol: Protocol
    tasks: list
    seeds: list
    cells: list  # [Cell]: those that run
    dropped: list = dataclasses.field(default_factory=list)  # [(Cell, why)]: cells that cannot run (see runnable)
    sizes: dict = dataclasses.field(default_factory=dict)  # relative budget entry -> its count on the model

    def _spec(self, task: str, cell: Cell, lr: float, seed: int):
        from peftzoo.bench.runner import RunSpec
        p, over = self.preset, self.preset.get("task_overrides", {}).get(task, {})
        targets = p.get("targets", ["query", "value"])
        common = {k: over.get(k, p[k]) for k in SPEC_KEYS if k in p or k in over}
        return RunSpec(suite=p["suite"], task=task, method=cell.method, seed=seed, hparams=cell.hparams,
                       model=p.get("model"), targets=targets if isinstance(targets, str) else tuple(targets),
                       train=tuple(p.get("train", ["classifier"])), lr=lr, budget=cell.budget,
                       achieved=cell.achieved, skip_reason=cell.skip, cell=cell.label,
                       val_fraction=self.protocol.val_fraction, val_cap=self.protocol.val_cap,
                       val_seed=self.protocol.val_seed, skip_bad_rows=p["skip_bad_rows"], **common)

    def grid(self, task: str, method: str) -> tuple[float, ...]:
        return lr_grid(self.preset, method, task, self.protocol.lr_points)

    def stage1(self) -> list:
        """The LR sweep: middle-budget cells x every LR of the grid x the sweep seeds."""
        k = self.protocol.sweep_seeds
        return [self._spec(t, c, lr, s) for t in self.tasks for c in self.cells if c.middle
                for lr in self.grid(t, c.method) for s in self.seeds[:k]]

    def stage2(self, selected: dict | None) -> list:
        """The selected LR per (task, method) on the other seeds (middle) and on every seed elsewhere.

        ``selected``: {(task, method): lr}; None plans with a placeholder LR (for counting only). A (task, method)
        without a selection (every sweep run failed) gets no stage-2 runs."""
        k, out = self.protocol.sweep_seeds, []
        for t in self.tasks:
            for c in self.cells:
                lr = float("nan") if selected is None else selected.get((t, c.method))
                if lr is None:
                    continue
                seeds = self.seeds[k:] if c.middle else self.seeds
                out += [self._spec(t, c, lr, s) for s in seeds]
        return out


    def known(self) -> list:
        """Every run whose LR is known before training: stage 1, and stage 2 where a grid has one LR."""
        fixed = {(t, c.method): self.grid(t, c.method)[0] for t in self.tasks for c in self.cells
                 if len(self.grid(t, c.method)) == 1}
        return self.stage1() + self.stage2(fixed)


def make_plan(preset, tasks=None, methods=None, seeds=None, model=None, skip_bad_rows: bool = False,
              drop_unrunnable: bool = False) -> Plan:
    """The plan of a preset (a ``Preset`` or its dict, checked); ``tasks``/``methods``/``seeds`` narrow it.

    Relative budget entries are resolved on the model (``model``, else the preset's, loaded once). A cell that cannot
    run is an ``UnrunnableCells`` error listing every such cell, unless ``drop_unrunnable`` (then ``plan.dropped``)."""
    from peftzoo.bench.preset import Preset, normalise_methods, normalise_tasks
    if not isinstance(preset, Preset):
        preset = Preset.from_dict(preset)
    d = {**preset.to_dict(), "skip_bad_rows": skip_bad_rows}
    prot = Protocol.from_preset(d)
    tasks = list(normalise_tasks(tasks, "--tasks") if tasks else preset.tasks)
    methods = list(normalise_methods(methods, "--methods") if methods else preset.methods)
    seeds = list(dict.fromkeys(seeds if seeds else preset.seeds))
    sizes = _Sizes(d, model)
    all_cells = cells(d, methods, prot, sizes=sizes)
    keep, dropped = runnable(all_cells)
    if dropped and not drop_unrunnable:
        raise UnrunnableCells(unrunnable_message(d, len(all_cells), dropped, model))
    return Plan(d, prot, tasks, seeds, keep, dropped, dict(sizes.resolved))


def middle_selection(plan: Plan, records: list[dict]) -> dict:
    """{(task, method): lr} selected on validation among the sweep runs at each method's middle cell."""
    sel = selection(records)
    keys = {(c.method, c.key) for c in plan.cells if c.middle}
    return {(t, m): s["lr"] for (t, m, k), s in sel.items() if (m, k) in keys}
