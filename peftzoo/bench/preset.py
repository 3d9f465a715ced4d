"""Benchmark presets: a typed schema checked in full before anything trains.

A preset is a JSON object whose keys are the fields of ``Preset``. Unknown keys (with the closest known name),
wrong types, non-positive sizes, values outside a field's choices, unknown tasks or methods and JSON syntax errors
are a ``PresetError`` naming the file and the key. Adding a preset key is one line here (a field with its type,
default and why); a ``setting`` field reaches every run as the ``RunSpec`` field of the same name (``plan.run_spec``)
and, unless ``per_task=False``, can be overridden per task.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from peftzoo.bench.preset_types import PresetError, check_value as _check
from peftzoo.bench.protocol import Protocol, budget_entries, budget_grid
from peftzoo.bench.spec import HEAD_FITS, LAST_LAYERS, REGRESSION_TARGETS
from peftzoo.bench.train import PRECISIONS


def setting(default, minimum=None, choices=None, per_task=True):
    """A run setting: the RunSpec field of the same name in every run (``plan.run_spec``); ``minimum``: values
    must be >= it; ``choices``: the values it takes; ``per_task``: ``task_overrides`` may set it per task."""
    return field(default=default, metadata={"setting": True, "min": minimum, "choices": choices,
                                            "per_task": per_task})


def per_task(factory):
    """A per-method table (LRs, LR grids) that ``task_overrides`` may set per task."""
    return field(default_factory=factory, metadata={"per_task": True})


@dataclass(frozen=True)
class Preset:
    suite: str  # results sub-folder and the leaderboard's name
    # built-in task names (GLUE; aliases such as sst2 accepted) or task definitions (objects: bench.taskdef)
    tasks: tuple[str | dict, ...]
    methods: tuple[str, ...]  # registered methods and the baselines full, head
    description: str = ""  # free text for humans
    model: str | None = setting(None, per_task=False)  # transformers id or local path; None = embedded MiniLM
    seeds: tuple[int, ...] = (0,)  # one run per seed
    budget: int | str | None = None  # adapter elements every method is matched to (a budget entry, as in budgets)
    # adapted modules (suffixes, a regex or "all-linear"); None = the model's architecture's default (peftzoo/defaults.py)
    targets: tuple[str, ...] | str | None = setting(None, per_task=False)
    # modules trained in full by every method (the head); None = the model's head ("classifier" or "score")
    train_modules: tuple[str, ...] | None = setting(None, per_task=False)
    epochs: int = setting(1, 1)  # passes over the (capped) training set
    batch_size: int = setting(16, 1)  # training examples per step
    max_len: int = setting(128, 1)  # tokens per example after truncation
    max_train: int | None = setting(None, 1)  # training examples used (the same subset for every run); None = all
    max_eval: int | None = setting(None, 1)  # dev examples scored; None = all
    warmup: float = setting(0.06, 0)  # fraction of steps with linear warm-up
    weight_decay: float = setting(0.0, 0)  # AdamW weight decay
    # autocast: "auto" (bf16 on CUDA, fp32 on CPU), "fp32" or "bf16" (CPU bf16 too)
    precision: str = setting("auto", choices=PRECISIONS)
    # "standardize": regression labels scaled by the training subset (see RunSpec)
    regression_targets: str = setting("raw", choices=REGRESSION_TARGETS)
    # the head baseline: "steps" (the training loop) or "cached" (fitted to convergence on cached features; RunSpec)
    head_fit: str = setting("steps", choices=HEAD_FITS)
    eval_batch: int = setting(128, 1)  # rows per evaluation pass (RunSpec: 128 as every recorded run; 32 pads less)
    # "full", or "pooled": the last BERT layer computed for the pooled token only (RunSpec, bench/pooled.py)
    last_layer: str = setting("full", choices=LAST_LAYERS)
    lr: dict[str, float] = per_task(dict)  # per method: a fixed LR (no sweep); a method's grid when absent
    hparams: dict[str, dict] = field(default_factory=dict)  # per method: fixed method options (e.g. alpha)
    task_overrides: dict[str, dict] = field(default_factory=dict)  # per task: any per-task field (OVERRIDABLE)
    # matched budgets (adapter elements), each a count (73728) or relative to the model planned on ("lora:r=8": the
    # LoRA r=8 count there; "0.1%": of its parameters), so a preset fits any --model; the LR sweep runs at the middle one
    budgets: tuple[int | str, ...] | None = None
    method_budgets: dict[str, tuple[int | str, ...]] = field(default_factory=dict)  # per method: its budgets ([]: paper only)
    lr_grid: dict[str, tuple[float, ...]] = per_task(dict)  # per method: its LR sweep (else the class's)
    protocol: Protocol = field(default_factory=Protocol)  # selection options: the fields of bench.protocol.Protocol
    # the user-defined tasks by name (given inline in ``tasks``, or by --task-file: ``with_tasks``); not a JSON key
    defined: dict = field(default_factory=dict, metadata={"internal": True})

    @classmethod
    def from_dict(cls, d, source: str = "preset", base: Path | None = None) -> Preset:
        """The preset ``d``, checked; ``base``: the folder relative paths of its task definitions are read from
        (the preset file's; default: the current folder)."""
        if not isinstance(d, dict):
            raise PresetError(f"{source}: a preset is a JSON object, not a {type(d).__name__}")
        _check_keys(d, FIELDS, source)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and _required(f)]
        if missing:
            raise PresetError(f"{source}: missing required key{'s' * (len(missing) > 1)} "
                              f"{', '.join(map(repr, missing))}")
        kw = {k: _value(k, v, source, k) for k, v in d.items() if k != "protocol"}
        _check_names(kw, source, base)
        kw["task_overrides"] = _overrides(kw.get("task_overrides", {}), source, kw["defined"])
        _check_lrs(kw, source)
        try:
            kw["protocol"] = Protocol.parse(d.get("protocol"))
        except (TypeError, ValueError) as e:
            raise PresetError(f"{source}: {e}") from None
        preset = cls(**kw)
        preset._check_budgets(source)
        _check_grids(kw, source)
        _check_cached_heads(preset, source)
        return preset

    def task(self, name: str):
        """The task of that (canonical) name: a user-defined one, else the built-in one."""
        from peftzoo.bench.tasks import get_task
        return self.defined[name] if name in self.defined else get_task(name)

    def with_tasks(self, defined: dict) -> Preset:
        """This preset run on the tasks ``defined`` ({name: Task}, e.g. a --task-file's) instead of its own."""
        clash = sorted(set(defined) & set(self.defined))
        if clash:
            raise PresetError(f"duplicate task name {clash[0]!r}: the preset defines it too; rename one of them")
        return dataclasses.replace(self, tasks=tuple(defined), defined={**self.defined, **defined})

    def for_task(self, task: str) -> Preset:
        """This preset as it applies to ``task``: its ``task_overrides`` in place. A method's LR given there (a
        fixed ``lr`` or an ``lr_grid``) replaces the preset's for that method."""
        over = self.task_overrides.get(task)
        if not over:
            return self
        lr, grid = over.get("lr", {}), over.get("lr_grid", {})
        return dataclasses.replace(self, **{**over, "task_overrides": {},
                                            "lr": {**{m: v for m, v in self.lr.items() if m not in grid}, **lr},
                                            "lr_grid": {**{m: v for m, v in self.lr_grid.items() if m not in lr},
                                                        **grid}})

    def settings(self) -> dict:
        """The run settings (``setting`` fields) by name: what every RunSpec of this preset shares."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("setting")}

    def budget_entries(self) -> list:
        """The shared budget entries, parsed: ``budgets`` (a list) or one ``budget`` (or neither)."""
        if self.budgets is None:
            return budget_entries([self.budget], "budget") if self.budget is not None else []
        return budget_entries(self.budgets)

    def method_entries(self, method: str) -> list | None:
        """A method's own budget entries (``method_budgets``), parsed; None when it has none of its own."""
        if method not in self.method_budgets:
            return None
        return budget_entries(self.method_budgets[method], f"method_budgets.{method}")

    def _check_budgets(self, source: str) -> None:
        """Every budget entry parses; budgets given as counts are distinct. (Relative ones are resolved and ordered
        on the model when the plan is made, which also checks the middle budget: ``plan.cells``.)"""
        try:
            entries = self.budget_entries()
            own = [self.method_entries(m) for m in self.method_budgets]
            if not any(e.relative for e in entries + [e for es in own for e in es]):
                budget_grid(entries)
                for es in own:
                    budget_grid(es)
        except ValueError as e:
            raise PresetError(f"{source}: {e}") from None


FIELDS = {f.name: f for f in dataclasses.fields(Preset) if not f.metadata.get("internal")}
HINTS = typing.get_type_hints(Preset)
OVERRIDABLE = tuple(f.name for f in dataclasses.fields(Preset) if f.metadata.get("per_task"))
RENAMED = {"train": "train_modules"}  # old key: its new name


def _value(name: str, v, source: str, key: str):
    """A field's value checked against its type, minimum and choices (``key``: where the preset gives it)."""
    meta = FIELDS[name].metadata
    v = _check(v, HINTS[name], source, key, meta.get("min"))
    if meta.get("choices") and v not in meta["choices"]:
        raise PresetError(f"{source}: '{key}' is {v!r}; one of {', '.join(meta['choices'])}")
    return v


def _check_names(kw: dict, source: str, base: Path | None) -> None:
    """Tasks, methods and seeds: non-empty, known, normalised (task definitions read: ``defined``); the methods
    named in per-method tables known."""
    for k in ("tasks", "methods", "seeds"):
        if k in kw and not kw[k]:
            raise PresetError(f"{source}: {k!r} is empty")
    check_seeds(kw.get("seeds", ()), f"{source}: 'seeds'")
    kw["defined"] = _define(kw["tasks"], source, base)
    kw["tasks"] = normalise_tasks([t["name"] if isinstance(t, dict) else t for t in kw["tasks"]], source,
                                  kw["defined"])
    kw["methods"] = normalise_methods(kw["methods"], source)
    for k in ("lr", "hparams", "lr_grid", "method_budgets"):
        for m in kw.get(k, {}):
            normalise_methods([m], f"{source}: {k!r}")
    for m, hp in kw.get("hparams", {}).items():
        _method_options(m, hp, source, f"hparams.{m}")


def _define(entries, source: str, base: Path | None) -> dict:
    """{name: Task} of the task definitions among a preset's ``tasks``."""
    from peftzoo.bench.tasks import define
    out = {}
    for i, e in enumerate(entries):
        if isinstance(e, dict):
            try:
                out.update(define([e], f"{source}: 'tasks[{i}]'", base, taken=out))
            except (ValueError, OSError) as err:
                raise PresetError(str(err)) from None
    return out


def _overrides(given: dict, source: str, defined: dict) -> dict:
    """``task_overrides`` under canonical task names, each value checked as its field is."""
    over = {}
    for t, o in given.items():
        where = f"{source}: 'task_overrides.{t}'"
        (name,) = normalise_tasks([t], where, defined)
        _check_keys(o, OVERRIDABLE, where)
        over[name] = {k: _value(k, v, source, f"task_overrides.{t}.{k}") for k, v in o.items()}
        for m in over[name].get("lr", {}):
            normalise_methods([m], f"{where}.lr")
    return over


def _check_lrs(kw: dict, source: str) -> None:
    for where, lrs in [("lr", kw.get("lr", {}))] + [(f"task_overrides.{t}.lr", o.get("lr", {}))
                                                      for t, o in kw["task_overrides"].items()]:
        for m, v in lrs.items():
            if not v > 0:
                raise PresetError(f"{source}: '{where}.{m}' is {v}: a learning rate must be > 0")


def check_seeds(seeds, where: str) -> None:
    """Seeds seed torch, numpy and random alike; numpy takes 0 <= seed < 2**32."""
    bad = [x for x in seeds if not 0 <= x < 2 ** 32]
    if bad:
        raise PresetError(f"{where}: seed {bad[0]} is out of range: seeds are integers from 0 to 2**32 - 1")


def _check_grids(kw: dict, source: str) -> None:
    for where, grids in [("lr_grid", kw.get("lr_grid", {}))] + [(f"task_overrides.{t}.lr_grid", o.get("lr_grid", {}))
                                                                 for t, o in kw.get("task_overrides", {}).items()]:
        for m, g in grids.items():
            if not g or min(g) <= 0:
                raise PresetError(f"{source}: '{where}.{m}' is {list(g)}: an LR grid needs values > 0")


def _check_cached_heads(preset: Preset, source: str) -> None:
    """A head fitted on cached features (``head_fit: "cached"``) is fitted by L-BFGS, whose LR is its step length:
    a sweep over it would fit the same head again and again, so the preset fixes it."""
    from peftzoo.registry import get
    for task in (None, *preset.task_overrides):
        p = preset.for_task(task) if task else preset
        for m in p.methods:
            grid = p.lr_grid.get(m) or ((p.lr[m],) if m in p.lr else ())
            if p.head_fit == "cached" and get(m).trains_head_only and len(grid) != 1:
                where = f"'task_overrides.{task}'" if task else "the preset"
                raise PresetError(
                    f"{source}: 'head_fit' is 'cached' in {where}, so {m} is fitted by L-BFGS to convergence "
                    f"(peftzoo/bench/headfit.py) and its LR is L-BFGS's step length, not a rate to sweep "
                    f"({'a grid of ' + str(len(grid)) if grid else 'the class grid'} here): give \"lr\": "
                    f"{{\"{m}\": 1.0}} and no lr_grid.{m}")


def _required(f) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_keys(d: dict, known, where: str) -> None:
    if not isinstance(d, dict):
        raise PresetError(f"{where}: must be an object, got {json.dumps(d)}")
    for k in d:
        if k in RENAMED and RENAMED[k] in known:
            raise PresetError(f"{where}: key {k!r} is now {RENAMED[k]!r} (same value): rename it")
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"
            raise PresetError(f"{where}: unknown key {k!r}{hint}")


def normalise_tasks(names, where: str, defined=()) -> tuple[str, ...]:
    """Canonical task names (``defined``: the user tasks' names, as they are), duplicates (after normalising:
    SST-2 = sst2) dropped, order kept."""
    from peftzoo.bench.tasks import get_task
    out = []
    for t in names:
        try:
            name = t if t in defined else get_task(t).name
        except ValueError as e:
            own = f"; defined here: {', '.join(defined)}" if defined else ""
            raise PresetError(f"{where}: {e}{own}") from None
        if name not in out:
            out.append(name)
    return tuple(out)


def known_methods() -> list[str]:
    from peftzoo import adapters
    return sorted(adapters.REGISTRY)  # the baselines included


def normalise_methods(names, where: str) -> tuple[str, ...]:
    known, out = known_methods(), []
    for m in names:
        key = m.strip().lower()
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PresetError(f"{where}: unknown method {m!r}{hint}; known: {', '.join(known)}")
        if key not in out:
            out.append(key)
    return tuple(out)


def _method_options(method: str, hp: dict, source: str, key: str) -> None:
    where = f"{source}: {key!r}"
    from peftzoo.api import make_config
    from peftzoo.registry import get
    if get(method).baseline:
        if hp:
            raise PresetError(f"{where}: the {method} baseline takes no options")
        return
    try:
        cfg = make_config(method, **hp)
    except (TypeError, ValueError) as e:
        raise PresetError(f"{where}: {e}") from None
    hints = typing.get_type_hints(type(cfg))
    for k, v in hp.items():
        if hints.get(k) not in (typing.Any, object, None):
            _check(v, hints[k], source, f"{key}.{k}")


def shipped() -> dict:
    """{name: resource} of the presets shipped with peftzoo (package data: ``peftzoo/presets/<name>.json``)."""
    folder = resources.files("peftzoo") / "presets"
    return {x.name[:-5]: x for x in folder.iterdir() if x.name.endswith(".json")} if folder.is_dir() else {}


def load_preset(name_or_path: str) -> Preset:
    """A preset by path, else a shipped one by name, fully checked."""
    if Path(name_or_path).is_file():
        return parse_file(Path(name_or_path))
    found = shipped().get(name_or_path)
    if found is None:
        raise FileNotFoundError(f"no preset {name_or_path!r}: not a file, and the shipped presets are "
                                f"{', '.join(sorted(shipped()))} (peftzoo/presets)")
    with resources.as_file(found) as path:
        return parse_file(path, f"preset {name_or_path!r} ({found})")


def parse_file(path: Path, source: str | None = None) -> Preset:
    """The preset in ``path``; errors name it as ``source`` (default: the path)."""
    source = source or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PresetError(f"{source}: not UTF-8 text (byte {e.start})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise PresetError(f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    return Preset.from_dict(d, source, Path(path).resolve().parent)
