"""What a method declares about itself beside the train/merge contract: ``Adapter.info``, a :class:`MethodInfo`.

Listings (``peftzoo methods``), the demo and the benchmark's policy (LR sweep, budget knob, paper setting, which
methods are baselines) read this one object; nothing probes a method class for optional attributes. The other
optional part, the Hugging Face PEFT file format, is ``Adapter.peft`` (a ``peftzoo.io.PeftCodec`` or None).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

# the names benchmark code reads on a method class, answered from ``info`` (``Adapter`` keeps them as read-only
# aliases): a method declares them in its ``info`` only
ALIASES = {"default_lr": "default_lr", "default_lr_grid": "lr_grid", "budget_knob": "budget_knob",
           "paper_hparams": "paper_hparams", "baseline": "baseline"}


@dataclass(frozen=True)
class MethodInfo:
    """A method's description and benchmark policy. ``dataclasses.replace(Parent.info, ...)`` for a variant."""

    paper: str = ""  # the citation a table or listing shows ("Hu et al. 2021, arXiv:2106.09685"); "" for a baseline
    equation: str = ""  # the update in one line, as the method file's docstring states it
    formula: str = ""  # trainable elements per adapted layer (or in all), as ``count`` computes them
    default_lr: float = 1e-3  # a sensible AdamW learning rate (the demo trains with it)
    lr_grid: tuple[float, ...] = ()  # the LR sweep, log-spaced, centred where the literature puts the method; ()
    # = 4 half-decade steps around default_lr
    budget_knob: str | None = None  # the integer config field a parameter budget solves for; None: one point only
    paper_hparams: Mapping | None = None  # the paper's own setting, run beside the matched budgets; None: none
    baseline: bool = False  # a reference of every table (full, head), not a PEFT method: left out of methods()

    def __post_init__(self):
        object.__setattr__(self, "lr_grid", tuple(float(x) for x in self.lr_grid))
        if self.paper_hparams is not None:  # frozen all the way down: a class's info is shared by every caller
            object.__setattr__(self, "paper_hparams", MappingProxyType(dict(self.paper_hparams)))
        if self.default_lr <= 0 or any(x <= 0 for x in self.lr_grid):
            raise ValueError(f"MethodInfo: learning rates must be > 0, got default_lr={self.default_lr}, "
                             f"lr_grid={self.lr_grid}")

    def lr_sweep(self) -> tuple[float, ...]:
        """The default LR sweep: ``lr_grid``, else 4 half-decade steps around ``default_lr``."""
        if self.lr_grid:
            return self.lr_grid
        return tuple(float(f"{self.default_lr * 10 ** (k / 2):.3g}") for k in (-1, 0, 1, 2))

    def replace(self, **changes) -> MethodInfo:
        return dataclasses.replace(self, **changes)


class InfoAlias:
    """``cls.budget_knob`` (and the other ``ALIASES``) read from ``cls.info``: the names bench code reads, kept
    read-only so the value has one owner."""

    def __init__(self, field_name: str):
        self.field = field_name

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner):
        return getattr(owner.info, self.field)

    def __set__(self, obj, value):
        raise AttributeError(f"{self.name} is read from the method's info: declare it in "
                             f"info = MethodInfo(..., {self.field}=...)")


def refuse_old_style(cls: type) -> None:
    """A method class that sets an aliased name in its body (the style before ``info``) would shadow the alias and
    leave ``info`` silently different: an error naming the fix."""
    old = [n for n in ALIASES if n in cls.__dict__ and not isinstance(cls.__dict__[n], InfoAlias)]
    old += [n for n in ("paper", "equation", "formula") if n in cls.__dict__]
    if old:
        fields = ", ".join(f"{ALIASES.get(n, n)}=..." for n in old)
        raise TypeError(f"{cls.__qualname__} sets {', '.join(old)} as class attributes: declare them as "
                        f"info = MethodInfo({fields}) (peftzoo/adapters/info.py; a variant of another method: "
                        f"info = Parent.info.replace(...))")

