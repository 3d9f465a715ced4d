"""The measurement protocol: an LR sweep per method, selection on a validation split carved from train, seeds, budgets.

Stage 1 (LR sweep): every method at the middle budget, every LR of its grid, on the first ``sweep_seeds`` seeds.
Stage 2: the LR selected on validation (mean over the sweep seeds) runs on the remaining seeds at the middle budget
and on every seed at the other budgets and paper settings: the best LR is *assumed* rank-independent (α/r scaling).
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
        return p

    @classmethod
    def from_record(cls, d: dict) -> Protocol:
        """The protocol a run record states (its ``stage`` is the run's, not the protocol's)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "paper_settings" else v) for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "paper_settings": list(self.paper_settings)}

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
        return (f"Protocol: every method sweeps its LR grid at the middle budget on the first {self.sweep_seeds} "
                f"seed(s); {ep} are selected on {split} by the mean over seeds; the selected LR then runs on the "
                f"other seeds and budgets (assumed: with α/r scaling the best LR does not depend on the rank). {tail}")


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
