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
