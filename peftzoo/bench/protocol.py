"""The measurement protocol: an LR sweep per method, selection on a validation split carved from train, seeds, budgets.

Stage 1 (LR sweep): every method at the middle budget, every LR of its grid, on the first ``sweep_seeds`` seeds.
Stage 2: the LR selected on validation (mean over the sweep seeds) runs on the remaining seeds at the middle budget.
The other budgets and paper settings either reuse it on every seed (``budget_lr_points = 0``: the LR is
*transferred*, assumed rank-independent under α/r scaling), or (``budget_lr_points = n``) each sweeps its own local
grid of n LRs centred on it (``local_grid``) on the sweep seeds in stage 2, and its own selected LR runs on the
remaining seeds in stage 3. ``separation > 0``: a task's methods other than the baselines run only once the baselines'
own protocol shows that full FT beats head-only there (``bench.separation``).
The dev (and test) sets are only ever reported: selection reads each epoch's ``val``, never its ``dev`` scores.

Here: the ``Protocol`` options, the budget grid's rules (``budget_grid``: sorted, distinct, the middle one) and
``selection``. The plan that expands a preset into runs under them is ``bench.plan``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from peftzoo import adapters
from peftzoo.bench.budget import Entry, parse_entry


def _with_paper_hparams() -> tuple:
    return tuple(n for n, cls in adapters.REGISTRY.items() if getattr(cls, "paper_hparams", None))


@dataclass(frozen=True)
class Protocol:
    sweep_seeds: int = 1  # the LR sweep runs on the first this-many seeds; the selected LR then on the rest
    val_fraction: float = 0.1  # share of the task's train set held back for selection (never trained on)
    val_cap: int = 1000  # at most this many validation examples (evaluated every epoch: a cost)
    val_seed: int = 0  # fixes the validation split: identical for every method, LR, budget and seed
    select_epoch: bool = True  # the epoch is chosen on validation too (mean over seeds); False = the final epoch
    lr_points: int | None = None  # keep only the central n points of every grid (the quick smoke uses 2)
    # methods also run at their paper's own hyperparameters (default: every method that states them, paper_hparams)
    paper_settings: tuple = field(default_factory=_with_paper_hparams)
    # 0: the other budgets and paper settings reuse the middle budget's LR (transferred); n (odd, >= 3): each selects
    # its own on n LRs centred on it, since the best LR can move with the budget (rsLoRA; AdaLoRA at r=64 collapses)
    budget_lr_points: int = 0
    # > 0: a task's adapters run only once full FT beats head-only there by more than this × the larger 95%
    # t half-width of the two (a task where they do not differ cannot rank methods); 0: no such check
    separation: float = 0.0

    @classmethod
    def parse(cls, raw: dict | None) -> Protocol:
        """A preset's ``protocol`` object, checked (a ValueError names the option)."""
        raw = dict(raw or {})
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(raw) - known)
        if bad:
            raise ValueError(f"unknown protocol option(s) {bad}; known: {sorted(known)}")
        if "paper_settings" in raw:
            raw["paper_settings"] = tuple(raw["paper_settings"])
        p = cls(**raw)
        if not 0 < p.val_fraction < 1 or p.val_cap < 1 or p.sweep_seeds < 1:
            raise ValueError(f"protocol: need 0 < val_fraction < 1, val_cap >= 1, sweep_seeds >= 1 (got {raw})")
        if p.budget_lr_points and (p.budget_lr_points < 3 or p.budget_lr_points % 2 == 0):
            raise ValueError(f"protocol: budget_lr_points is {p.budget_lr_points}; 0 (the middle budget's LR is "
                             f"reused) or an odd count >= 3 (a local grid centred on it: 3, 5, ...)")
        if not p.separation >= 0:
            raise ValueError(f"protocol: separation is {p.separation}; 0 (no check) or a factor > 0 (e.g. 3)")
        return p

    @classmethod
    def from_record(cls, d: dict) -> Protocol:
        """The protocol a run record states (its ``stage`` is the run's, not the protocol's)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "paper_settings" else v) for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        """As recorded in every run; the options added later are left out at their default (the old protocol), so
        a run of an old preset records what it always did."""
        d = {**dataclasses.asdict(self), "paper_settings": list(self.paper_settings)}
        return {k: v for k, v in d.items() if not (k in LATER and v == LATER[k])}

    @property
    def stages(self) -> int:
        """2 (sweep; the selected LR elsewhere), or 3 where every budget selects its own LR (sweep; local grids;
        their selected LRs)."""
        return 3 if self.budget_lr_points else 2

    def describe(self, swept: bool = True) -> str:
        """The protocol in words; ``swept=False``: a suite whose every row ran at one LR fixed by its preset."""
        ep = "the LR and the epoch" if self.select_epoch else "the LR (final epoch)"
        split = (f"a validation split carved from train ({self.val_fraction:.0%} of it, at most {self.val_cap:,} "
                 f"examples, split seed {self.val_seed}, the same for every run, disjoint from the training subset)")
        tail = "Reported scores are the tasks' dev sets (and test splits, where a task has one), never used for any choice."
        if not swept:
            ep = "the epoch" if self.select_epoch else "nothing (the final epoch)"
            return (f"Protocol: NO LR sweep in this suite: every row trained at the one LR its preset gives (`lr`), "
                    f"shown in `LR / epoch`; {ep} is selected on {split} by the mean over seeds. {tail}")
        if self.budget_lr_points:
            budgets = (f"LR PER BUDGET: every other budget point and paper setting then sweeps its own local grid of "
                       f"{self.budget_lr_points} LRs centred on the middle budget's (the method grid's spacing, "
                       f"continued past its ends) on the same seed(s) and selects its own LR likewise (`†`: at that "
                       f"grid's edge); each selected LR then runs on the other seeds")
        else:
            budgets = ("LR TRANSFERRED: the selected LR then runs on the other seeds and budgets (assumed: with α/r "
                       "scaling the best LR does not depend on the rank; not checked in these runs)")
        sep = (f" A task's adapters ran only after full FT beat head-only there by more than {self.separation:g} × "
               f"the larger 95% t half-width." if self.separation else "")
        return (f"Protocol: every method sweeps its LR grid at the middle budget on the first {self.sweep_seeds} "
                f"seed(s); {ep} are selected on {split} by the mean over seeds; {budgets}.{sep} {tail}")


LATER = {"budget_lr_points": 0, "separation": 0.0}  # options added after runs were recorded: their old value


def local_grid(grid, centre: float, points: int) -> tuple[float, ...]:
    """``points`` LRs centred on ``centre`` (a point of ``grid``) with the grid's spacing: its neighbours in the grid,
    and past the grid's ends its step pattern continued (the period-2 steps of 1e-3, 3e-3, 1e-2 give 3e-2, 1e-1
    above and 3e-4 below). A one-point grid (a fixed LR) stays that LR; a NaN centre (planning before selection)
    gives NaNs."""
    g, h = sorted(float(x) for x in grid), points // 2
    if centre != centre:
        return (float("nan"),) * points
    if len(g) < 2:
        return (float(centre),)
    if centre not in g:
        raise ValueError(f"the LR {centre:g} to centre a local grid on is not in the grid {g}")
    i = g.index(centre)
    while len(g) - 1 - i < h:
        g.append(_round(g[-1] * (g[-2] / g[-3] if len(g) > 2 else g[-1] / g[-2])))
    while i < h:
        g.insert(0, _round(g[0] * (g[1] / g[2] if len(g) > 2 else g[0] / g[1])))
        i += 1
    return tuple(g[i - h:i + h + 1])


def _round(x: float) -> float:
    return float(f"{x:.6g}")  # 1e-2 × 3 is 0.030000000000000002: the run's LR should read as the grid's do


# ---- the budget grid ---------------------------------------------------------------------------------------------
def budget_entries(values, where: str = "budgets") -> list[Entry]:
    """Budget entries (counts, or relative to the model: "lora:r=8", "0.1%") parsed; a ValueError names the entry."""
    return [parse_entry(b, f"'{where}[{i}]'") for i, b in enumerate(values or ())]


def budget_grid(entries: list[Entry], size=None) -> tuple[list[int], int | None]:
    """(sorted budgets, the middle one: where the LR sweep runs). ``size(entry) -> int`` resolves entries relative
    to the model (plan time); without it every entry must be a count."""
    if any(e.relative for e in entries) and size is None:
        raise ValueError(f"budgets {[e.text for e in entries]} are relative to the model: resolve them on it "
                         f"(plan.make_plan does)")
    pairs = sorted((e.count if size is None else size(e), e.text) for e in entries)
    bs = [b for b, _ in pairs]
    if len(set(bs)) != len(bs):
        shown = [t if t == str(b) else f"{t} = {b}" for b, t in pairs]
        raise ValueError(f"budgets [{', '.join(shown)}] must be distinct positive counts")
    return bs, (bs[len(bs) // 2] if bs else None)


def check_method_budgets(method: str, mine: list[int], middle: int | None, paper: bool, shared: bool,
                         show=lambda b: b) -> None:
    """A method's own budgets include the middle one (its LR is swept there), and the method runs somewhere
    (``shared``: there are shared budgets; ``paper``: it has a paper setting). ``show(b)``: a budget as the preset
    gave it."""
    if mine and middle not in mine:
        raise ValueError(f"method_budgets[{method!r}] = {[show(b) for b in mine]} must include the middle budget "
                         f"{show(middle)} (the LR sweep runs there), or be [] to run only the paper setting")
    if shared and not mine and not paper:
        raise ValueError(f"method_budgets[{method!r}] is empty and {method} has no paper setting: it would not run")


# ---- selection on validation -------------------------------------------------------------------------------------
@dataclass
class Selected:
    """What selection chose for one (task, method, hparams): its LR and epoch, and the runs at that LR."""
    lr: float
    epoch: int  # 1-based
    per_lr: dict  # {lr: the selection score at its best (or final) epoch, None where no sweep seed ran it}
    sweep_seeds: list  # the seeds every LR ran: the LR is chosen on their mean
    seeds: list  # the seeds at the selected LR
    runs: list  # [RunRecord] at the selected LR, by seed

    def scores(self, at_epoch: int | None = None) -> list[float]:
        """The dev score of every run at the selected LR, at the selected epoch (or ``at_epoch``)."""
        return [r.history[(at_epoch or self.epoch) - 1].dev["score"] for r in self.runs]

    def test_scores(self) -> list[float]:
        """The test score of every run at the selected LR and epoch (selection never reads it); [] without one."""
        return [h.test["score"] for r in self.runs if (h := r.history[self.epoch - 1]).test is not None]


def hkey(hparams: dict) -> str:
    return json.dumps(hparams, sort_keys=True)


def selection(records: list, use: str = "val") -> dict:
    """{(task, method, hkey(hparams)): Selected} from the runs' ``use`` scores ("val"; "dev" only for the flagged
    optimistic view).

    The LR is chosen by the mean over the seeds that every LR of the group ran (the sweep seeds), the epoch (when
    the runs' protocol selects epochs) by the mean over every seed at that LR. Ties go to the smaller LR / epoch.
    """
    groups: dict = {}
    for r in records:
        if r.ok:
            g = groups.setdefault((r.task, r.method, hkey(r.spec.hparams)), {})
            g.setdefault(float(r.spec.lr), {})[r.seed] = r
    return {gk: _select(by_lr, use) for gk, by_lr in groups.items()}


def _select(by_lr: dict, use: str) -> Selected:
    common = set.intersection(*(set(s) for s in by_lr.values()))
    pick_epoch = all(r.spec.protocol is None or r.spec.protocol.select_epoch for s in by_lr.values() for r in s.values())

    def curve(runs):
        return np.mean([[(h.val if use == "val" else h.dev)["score"] for h in r.history] for r in runs], axis=0)
    per_lr = {}
    for lr, runs in sorted(by_lr.items()):
        c = curve([runs[s] for s in sorted(common)]) if common else None
        per_lr[lr] = None if c is None else float(c.max() if pick_epoch else c[-1])
    valid = {lr: v for lr, v in per_lr.items() if v is not None}
    best = max(valid, key=lambda lr: (valid[lr], -lr)) if valid else min(by_lr)
    c = curve(list(by_lr[best].values()))
    epoch = int(np.argmax(c)) + 1 if pick_epoch else len(c)
    return Selected(best, epoch, per_lr, sorted(common), sorted(by_lr[best]),
                    [by_lr[best][s] for s in sorted(by_lr[best])])
