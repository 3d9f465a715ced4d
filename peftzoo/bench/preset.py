"""Benchmark presets: a typed schema checked in full before anything trains.

A preset is a JSON object whose keys are the fields of ``Preset``. Unknown keys (with the closest known name),
wrong types, non-positive sizes, unknown tasks or methods and JSON syntax errors are a ``PresetError`` naming the
file and the key. Adding a preset key is one line here (a field with its type, default and why).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class PresetError(ValueError):
    pass


def _pos(default, minimum=1):
    """A field whose value must be >= minimum (sizes, counts)."""
    return field(default=default, metadata={"min": minimum})


@dataclass(frozen=True)
class Preset:
    suite: str  # results sub-folder and the leaderboard's name
    tasks: tuple[str, ...]  # GLUE task names (aliases such as sst2 accepted)
    methods: tuple[str, ...]  # registered methods and the baselines full, head
    description: str = ""  # free text for humans
    model: str | None = None  # transformers id or local path; None = the embedded all-MiniLM-L6-v2
    seeds: tuple[int, ...] = (0,)  # one run per seed
    budget: int | str | None = None  # adapter elements every method is matched to (a budget entry, as in budgets)
    targets: tuple[str, ...] | str = ("query", "value")  # adapted modules (suffixes, a regex or "all-linear")
    train: tuple[str, ...] = ("classifier",)  # modules trained in full by every method (the head)
    epochs: int = _pos(1)  # passes over the (capped) training set
    batch_size: int = _pos(16)  # training examples per step
    max_len: int = _pos(128)  # tokens per example after truncation
    max_train: int | None = _pos(None)  # training examples used (the same subset for every run); None = all
    max_eval: int | None = _pos(None)  # dev examples scored; None = all
    warmup: float = _pos(0.06, 0)  # fraction of steps with linear warm-up
    weight_decay: float = _pos(0.0, 0)  # AdamW weight decay
    precision: str = "auto"  # autocast: "auto" (bf16 on CUDA, fp32 on CPU), "fp32" or "bf16" (CPU bf16 too)
    regression_targets: str = "raw"  # "standardize": regression labels scaled by the training subset (see RunSpec)
    lr: dict[str, float] = field(default_factory=dict)  # per method; a method's default_lr when absent
    hparams: dict[str, dict] = field(default_factory=dict)  # per method: fixed method options (e.g. alpha)
    task_overrides: dict[str, dict] = field(default_factory=dict)  # per task: any of OVERRIDABLE
    # matched budgets (adapter elements), each a count (73728) or relative to the model planned on ("lora:r=8": the
    # LoRA r=8 count there; "0.1%": of its parameters), so a preset fits any --model; the LR sweep runs at the middle one
    budgets: tuple[int | str, ...] | None = None
    method_budgets: dict[str, tuple[int | str, ...]] = field(default_factory=dict)  # per method: its budgets ([]: paper only)
    lr_grid: dict[str, tuple[float, ...]] = field(default_factory=dict)  # per method: its LR sweep (else the class's)
    protocol: dict = field(default_factory=dict)  # selection options: the fields of bench.protocol.Protocol

    @classmethod
    def from_dict(cls, d, source: str = "preset") -> Preset:
        if not isinstance(d, dict):
            raise PresetError(f"{source}: a preset is a JSON object, not a {type(d).__name__}")
        _check_keys(d, FIELDS, source)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and _required(f)]
        if missing:
            raise PresetError(f"{source}: missing required key{'s' * (len(missing) > 1)} "
                              f"{', '.join(map(repr, missing))}")
        kw = {k: _check(v, HINTS[k], source, k, FIELDS[k].metadata.get("min")) for k, v in d.items()}
        for k in ("tasks", "methods", "seeds"):
            if k in kw and not kw[k]:
                raise PresetError(f"{source}: {k!r} is empty")
        check_seeds(kw.get("seeds", ()), f"{source}: 'seeds'")
        kw["tasks"] = normalise_tasks(kw["tasks"], source)
        kw["methods"] = normalise_methods(kw["methods"], source)
        for k in ("lr", "hparams", "lr_grid", "method_budgets"):
            for m in kw.get(k, {}):
                normalise_methods([m], f"{source}: {k!r}")
        for m, hp in kw.get("hparams", {}).items():
            _method_options(m, hp, source, f"hparams.{m}")
        over = {}
        for t, o in kw.get("task_overrides", {}).items():
            where = f"{source}: 'task_overrides.{t}'"
            (name,) = normalise_tasks([t], where)
            _check_keys(o, OVERRIDABLE, where)
            over[name] = {k: _check(v, HINTS[k], source, f"task_overrides.{t}.{k}", FIELDS[k].metadata.get("min"))
                          for k, v in o.items()}
            for m in over[name].get("lr", {}):
                normalise_methods([m], f"{where}.lr")
        kw["task_overrides"] = over
        for where, lrs in [("lr", kw.get("lr", {}))] + [(f"task_overrides.{t}.lr", o.get("lr", {}))
                                                          for t, o in over.items()]:
            for m, v in lrs.items():
                if not v > 0:
                    raise PresetError(f"{source}: '{where}.{m}' is {v}: a learning rate must be > 0")
        _check_protocol(kw, source)
        from peftzoo.bench.spec import REGRESSION_TARGETS
        from peftzoo.bench.train import PRECISIONS
        for where, o in [("", kw)] + [(f"task_overrides.{t}.", o) for t, o in over.items()]:
            if o.get("precision", "auto") not in PRECISIONS:
                raise PresetError(f"{source}: '{where}precision' is {o['precision']!r}; "
                                  f"one of {', '.join(PRECISIONS)}")
            if o.get("regression_targets", "raw") not in REGRESSION_TARGETS:
                raise PresetError(f"{source}: '{where}regression_targets' is {o['regression_targets']!r}; "
                                  f"one of {', '.join(REGRESSION_TARGETS)}")
        return cls(**kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Preset)}
HINTS = typing.get_type_hints(Preset)
OVERRIDABLE = ("epochs", "batch_size", "max_len", "max_train", "max_eval", "warmup", "weight_decay", "precision", "lr",
               "lr_grid", "regression_targets")


def check_seeds(seeds, where: str) -> None:
    """Seeds seed torch, numpy and random alike; numpy takes 0 <= seed < 2**32."""
    bad = [x for x in seeds if not 0 <= x < 2 ** 32]
    if bad:
        raise PresetError(f"{where}: seed {bad[0]} is out of range: seeds are integers from 0 to 2**32 - 1")


def _check_protocol(kw: dict, source: str) -> None:
    """The protocol's own fields: the options, the budgets and the LR grids (positive, distinct). Budgets relative to
    the model are parsed here and ordered when the plan resolves them (``protocol.cells``)."""
    try:
        Protocol.from_preset(kw)
        entries = budget_entries(kw)
        mine = {m: budget_entries({"budgets": bs}, f"method_budgets.{m}") for m, bs in kw.get("method_budgets", {}).items()}
        relative = any(e.relative for e in entries + [e for es in mine.values() for e in es])
        middle = None if relative else budgets(kw)[1]
        for m, es in ({} if relative else mine).items():
            budgets({"budgets": [e.count for e in es]})
            if es and middle not in [e.count for e in es]:
                raise ValueError(f"method_budgets.{m} {[e.count for e in es]} must include the middle budget {middle} "
                                 f"(the LR sweep runs there), or be [] to run only the paper setting")
    except ValueError as e:
        raise PresetError(f"{source}: {e}") from None
    _check_grids(kw, source)


def _check_grids(kw: dict, source: str) -> None:
    for where, grids in [("lr_grid", kw.get("lr_grid", {}))] + [(f"task_overrides.{t}.lr_grid", o.get("lr_grid", {}))
                                                                 for t, o in kw.get("task_overrides", {}).items()]:
        for m, g in grids.items():
            if not g or min(g) <= 0:
                raise PresetError(f"{source}: '{where}.{m}' is {list(g)}: an LR grid needs values > 0")


def _required(f) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_keys(d: dict, known, where: str) -> None:
    if not isinstance(d, dict):
        raise PresetError(f"{where}: must be an object, got {json.dumps(d)}")
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"
            raise PresetError(f"{where}: unknown key {k!r}{hint}")


def _tname(t) -> str:
    return {int: "an integer", tuple: "a list", float: "a number", str: "a string", bool: "true/false", dict: "an object",
            type(None): "null"}.get(t, getattr(t, "__name__", str(t)))


def _check(v, t, src: str, key: str, minimum=None):
    """``v`` checked against the type hint ``t`` (lists become tuples); a PresetError otherwise."""
    where = f"{src}: {key!r}"
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        alts = [a for a in args if a is not type(None)]
        if len(alts) == 1:
            return _check(v, alts[0], src, key, minimum)
        for a in alts:
            try:
                return _check(v, a, src, key, minimum)
            except PresetError:
                pass
        raise PresetError(f"{where} must be {' or '.join(_tname(typing.get_origin(a) or a) for a in alts)}, "
                          f"got {json.dumps(v)}")
    if origin is tuple:
        if not isinstance(v, list):
            raise PresetError(f"{where} must be a list, got {json.dumps(v)}")
        return tuple(_check(x, args[0], src, f"{key}[{i}]") for i, x in enumerate(v))
    if origin is dict:
        if not isinstance(v, dict):
            raise PresetError(f"{where} must be an object, got {json.dumps(v)}")
        return {k: _check(x, args[1], src, f"{key}.{k}") for k, x in v.items()}
    if t is type(None):
        if v is not None:
            raise PresetError(f"{where} must be null, got {json.dumps(v)}")
        return v
    ok = isinstance(v, t) and not (isinstance(v, bool) and t is not bool)
    if t is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise PresetError(f"{where} must be {_tname(t)}, got {json.dumps(v)}")
    if minimum is not None and v < minimum:
        raise PresetError(f"{where} is {v}: it must be >= {minimum}")
    return v


def normalise_tasks(names, where: str) -> tuple[str, ...]:
    """Canonical GLUE names, duplicates (after normalising: SST-2 = sst2) dropped, order kept."""
    from peftzoo.bench.tasks import get_task
    out = []
    for t in names:
        try:
            name = get_task(t).name
        except ValueError as e:
            raise PresetError(f"{where}: {e}") from None
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


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (benchmarks/<name>.json) or path, fully checked."""
    p = Path(name_or_path)
    for cand in (p, Path("benchmarks") / f"{name_or_path}.json", REPO / "benchmarks" / f"{name_or_path}.json"):
        if cand.is_file():
            return parse_file(cand)
    known = sorted(x.stem for x in (REPO / "benchmarks").glob("*.json"))
    raise FileNotFoundError(f"no preset {name_or_path!r}; presets: {', '.join(known)} (or a path to a JSON file)")


def parse_file(path: Path) -> Preset:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PresetError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise PresetError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    return Preset.from_dict(d, str(path))


@dataclass(frozen=True)
class Protocol:
    sweep_seeds: int = 1  # the LR sweep runs on the first this-many seeds; the selected LR then on the rest
    val_fraction: float = 0.1  # share of the task's train set held back for selection (never trained on)
    val_cap: int = 1000  # at most this many validation examples (evaluated every epoch: a cost)
    val_seed: int = 0  # fixes the validation split: identical for every method, LR, budget and seed
    select_epoch: bool = True  # the epoch is chosen on validation too (mean over seeds); False = the final epoch
    lr_points: int | None = None  # keep only the central n points of every grid (the quick smoke uses 2)
    # methods also run at their paper's own hyperparameters (default: every method that states them, paper_hparams)
    paper_settings: tuple = field(default_factory=lambda: _with_paper_hparams())

    @classmethod
    def from_preset(cls, preset: dict) -> "Protocol":
        raw = dict(preset.get("protocol") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(raw) - known)
        if bad:
            raise ValueError(f"unknown protocol option(s) {bad}; known: {sorted(known)}")
        if "paper_settings" in raw:
            raw["paper_settings"] = tuple(raw["paper_settings"])
        p = cls(**raw)
        if not 0 < p.val_fraction < 1 or p.val_cap < 1 or p.sweep_seeds < 1:
            raise ValueError(f"protocol: need 0 < val_fraction < 1, val_cap >= 1, sweep_seeds >= 1 (got {raw})")
        return p

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "paper_settings": list(self.paper_settings)}

    def describe(self, swept: bool = True) -> str:
        """The protocol in words; ``swept=False``: a suite whose every row ran at one LR fixed by its preset."""
        ep = "the LR and the epoch" if self.select_epoch else "the LR (final epoch)"
        split = (f"a validation split carved from train ({self.val_fraction:.0%} of it, at most {self.val_cap:,} "
                 f"examples, split seed {self.val_seed}, the same for every run, disjoint from the training subset)")
        tail = "Reported scores are the GLUE dev set, never used for any choice."
        if not swept:
            ep = "the epoch" if self.select_epoch else "nothing (the final epoch)"
            return (f"Protocol: NO LR sweep in this suite: every row trained at the one LR its preset gives (`lr`), "
                    f"shown in `LR / epoch`; {ep} is selected on {split} by the mean over seeds. {tail}")
        return (f"Protocol: every method sweeps its LR grid at the middle budget on the first {self.sweep_seeds} "
                f"seed(s); {ep} are selected on {split} by the mean over seeds; the selected LR then runs on the "
                f"other seeds and budgets (assumed: with α/r scaling the best LR does not depend on the rank). {tail}")


def budget_entries(preset: dict, where: str = "budgets") -> list:
    """The preset's budget entries, parsed (``budget.Entry``): ``budgets`` (a list) or one ``budget`` (or neither)."""
    from peftzoo.bench.budget import parse_entry
    bs = preset.get("budgets")
    if bs is None:
        return [parse_entry(preset["budget"], "'budget'")] if preset.get("budget") is not None else []
    return [parse_entry(b, f"'{where}[{i}]'") for i, b in enumerate(bs)]


def budgets(preset: dict, size=None) -> tuple[list[int], int | None]:
    """(sorted budgets, the middle one). ``size(entry) -> int`` resolves entries relative to the model (plan time);
    without it every entry must be a count."""
    entries = budget_entries(preset)
    if any(e.relative for e in entries) and size is None:
        raise ValueError(f"budgets {[e.text for e in entries]} are relative to the model: resolve them on it "
                         f"(protocol.make_plan does)")
    pairs = sorted((e.count if size is None else size(e), e.text) for e in entries)
    bs = [b for b, _ in pairs]
    if len(set(bs)) != len(bs):
        shown = [t if t == str(b) else f"{t} = {b}" for b, t in pairs]
        raise ValueError(f"budgets [{', '.join(shown)}] must be distinct positive counts")
    return bs, (bs[len(bs) // 2] if bs else None)


def _with_paper_hparams() -> tuple:
    from peftzoo import adapters
    return tuple(n for n, cls in adapters.REGISTRY.items() if getattr(cls, "paper_hparams", None))
