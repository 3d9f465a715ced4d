"""Matched budgets: solve each method's free hyperparameter so its trainable count is as close to N as it gets."""
from __future__ import annotations

from dataclasses import dataclass

from peftzoo import adapters
from peftzoo.api import make_config

TOLERANCE = 0.10  # a method that cannot get within 10% of the budget is flagged, not run at another size


@dataclass
class Solved:
    method: str
    kwargs: dict  # the hyperparameters that reach the budget
    target: int
    achieved: int

    @property
    def rel_error(self) -> float:
        return (self.achieved - self.target) / self.target

    @property
    def ok(self) -> bool:
        return abs(self.rel_error) <= TOLERANCE


def solve(model, method: str, budget: int, max_value: int = 1 << 20, **base_kwargs) -> Solved:
    """Smallest-error integer value of the method's ``budget_knob`` (counts are monotone in it)."""
    cls = adapters.get(method)
    if cls.budget_knob is None:
        raise ValueError(f"{method} has no free hyperparameter to match a parameter budget")
    if budget < 1:
        raise ValueError(f"budget={budget} must be >= 1")

    def count(v: int):
        try:
            cfg = make_config(method, **{**base_kwargs, **cls.budget_kwargs(v)})
            if not getattr(cls, "rank_fits", lambda m, c: True)(model, cfg):
                return None  # r > min(d_in, d_out) is accepted by attach, but adds only redundant elements
            return cls.budget_count(model, cfg)
        except ValueError:
            return None  # the value does not fit the model

    first = 1  # the smallest valid value (SAID needs d > its number of scales)
    while first <= max_value and count(first) is None:
        first *= 2
    if first > max_value:
        raise ValueError(f"{method}: no value of {cls.budget_knob} fits the targets")
    if first > 1:
        bad = first // 2
        while first - bad > 1:
            mid = (bad + first) // 2
            bad, first = (bad, mid) if count(mid) is not None else (mid, first)
    lo, hi = first, first * 2
    if count(lo) >= budget:
        hi = lo + 1 if count(lo + 1) is not None else lo
    while hi <= max_value and (c := count(hi)) is not None and c < budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: count(lo) < budget (or lo == 1); hi is >= budget or invalid
        mid = (lo + hi) // 2
        c = count(mid)
        if c is not None and c < budget:
            lo = mid
        else:
            hi = mid
    cands = [(abs(c - budget), v, c) for v in (lo, hi) if (c := count(v)) is not None]
    _, v, c = min(cands)
    return Solved(method, cls.budget_kwargs(v), budget, c)


# ---- budgets given relative to the model ---------------------------------------------------------------------------
# A preset's budget entry is an absolute count (73728), the count of a method's setting on the model and targets
# being planned ("lora:r=8": what LoRA r=8 adds there), or a share of that model's parameters outside the `train`
# modules ("0.1%"). Entries are resolved against the loaded model at plan time; the integer is what a RunSpec holds,
# so an entry that resolves to a committed preset's old absolute count is the same runs.
ENTRY_HELP = ('a budget entry is a positive count (73728), "METHOD:OPTION=N" (the count that method with that '
              'setting adds on the model and targets, e.g. "lora:r=8"), or "P%" (that share of the model\'s '
              'parameters outside the train modules, e.g. "0.1%")')


@dataclass(frozen=True)
class Entry:
    """One parsed budget entry: ``count`` (absolute), ``method`` + ``options``, or ``percent``."""
    text: str  # as the preset wrote it
    count: int | None = None
    method: str | None = None
    options: tuple = ()  # ((option, value), ...)
    percent: float | None = None

    @property
    def relative(self) -> bool:
        return self.count is None


def parse_entry(entry, where: str = "budget") -> Entry:
    """An ``Entry`` from a preset's value; a ValueError naming ``where`` and the accepted forms otherwise."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        if entry < 1:
            raise ValueError(f"{where} is {entry}: a budget must be >= 1")
        return Entry(str(entry), count=entry)
    if not isinstance(entry, str):
        raise ValueError(f"{where} is {entry!r}: {ENTRY_HELP}")
    text = entry.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"{where} is {entry!r}: {ENTRY_HELP}") from None
        if not 0 < pct <= 100:
            raise ValueError(f"{where} is {entry!r}: a share of the model must lie in (0%, 100%]")
        return Entry(text, percent=pct)
    method, sep, opts = text.partition(":")
    pairs = [p.partition("=") for p in opts.split(",")] if sep else []
    if not sep or not all(k.strip() and eq and v.strip().isdigit() and int(v) > 0 for k, eq, v in pairs):
        raise ValueError(f"{where} is {entry!r}: {ENTRY_HELP}")
    method = method.strip().lower()
    if method not in adapters.REGISTRY or adapters.get(method).baseline:
        known = sorted(m for m, c in adapters.REGISTRY.items() if not c.baseline)
        raise ValueError(f"{where} is {entry!r}: {method!r} is not a method with an adapter; one of {', '.join(known)}")
    options = tuple((k.strip(), int(v)) for k, _, v in pairs)
    try:
        make_config(method, **dict(options))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} is {entry!r}: {e}") from None
    return Entry(text, method=method, options=options)


def resolve(entry: Entry, model, targets, train=("classifier",)) -> int:
    """The integer budget ``entry`` means on ``model`` with ``targets`` (a ValueError when that setting does not fit)."""
    if entry.count is not None:
        return entry.count
    if entry.percent is not None:
        full = adapters.get("full")
        backbone = full.count(model, make_config("full", targets=targets, train=list(train)))
        return max(1, round(backbone * entry.percent / 100))
    cls = adapters.get(entry.method)
    try:
        cfg = make_config(entry.method, targets=targets, **dict(entry.options))
        fits = getattr(cls, "rank_fits", lambda m, c: True)(model, cfg)
        n = cls.budget_count(model, cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"budget {entry.text!r} cannot be resolved on this model: {e}") from None
    if not fits:
        raise ValueError(f"budget {entry.text!r}: that rank exceeds min(d_in, d_out) of a target layer of this model "
                         f"(the count would hold redundant elements); use a smaller value or an absolute count")
    return n
