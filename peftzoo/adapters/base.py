"""The one contract every peftzoo method answers.

Two kinds of methods share it:

* per-layer methods (LoRA family, DoRA, VeRA, AdaLoRA) implement a small :class:`AdapterLayer` that wraps one
  frozen layer (an ``nn.Linear``, or for the LoRA family also an ``nn.Embedding`` / ``nn.Conv*d``);
  :class:`peftzoo.adapters.layered.LayerAdapter` injects them and answers the contract;
* whole-model methods (the random-subspace method) implement :class:`Adapter` directly.

Hooks the training loop calls explicitly (nothing hidden in ``forward``):

* ``set_total_steps(n)`` once before training (schedules, e.g. AdaLoRA's budget);
* ``extra_loss()`` added to the task loss (``None`` when the method has none);
* ``on_step(step)`` after ``optimizer.step()`` and before ``zero_grad()`` (gradients are still there);
* ``make_optimizer(lr, weight_decay)`` builds the optimizer (AdamW over ``param_groups``; GaLore: its own).

Its life on the model (lifecycle.py): ``merge``/``unmerge``, ``disable_adapter()`` (the base model inside a
``with`` block), ``unload(merge=...)`` (the plain model back; the adapter is then spent). One adapter per model.

Beside the contract a method declares ``info`` (a :class:`~peftzoo.adapters.info.MethodInfo`: paper, equation,
count formula, LR grid, budget knob, paper setting) and ``peft`` (its :class:`peftzoo.io.PeftCodec`, or None).
"""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from peftzoo import io
from peftzoo.adapters import lifecycle
from peftzoo.adapters.info import ALIASES, InfoAlias, MethodInfo, refuse_old_style
from peftzoo.adapters.lifecycle import hold, refuse_second_adapter
from peftzoo.inject import find_modules, freeze

if TYPE_CHECKING:
    from peftzoo.adapters.layer import AdapterLayer


def find_train(model: nn.Module, config: "AdapterConfig") -> dict[str, nn.Module]:
    """The modules ``config.train`` names, trained in full (PEFT's ``modules_to_save``); {} when it names none."""
    return find_modules(model, config.train) if config.train else {}


def count_train(train: dict[str, nn.Module]) -> int:
    """Elements of the ``train`` modules: every method's count includes them."""
    return sum(p.numel() for m in train.values() for p in m.parameters())


@dataclass
class AdapterConfig:
    """Fields every method has. Subclasses add the method's own hyperparameters."""

    targets: Any = None  # layers to adapt: suffixes, a regex, "all-linear"; None: the model's default (defaults.py)
    train: Any = ()  # modules trained in full (e.g. the classification head); PEFT's modules_to_save
    seed: int = 0  # seeds every random initialisation of the adapter (a torch.Generator, never the global RNG)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


class Adapter(ABC):
    """An adapter attached to one model. Owns its trainable state; ``model`` is the module to call."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[AdapterConfig]] = AdapterConfig
    info: ClassVar[MethodInfo] = MethodInfo()  # paper, equation, count formula, LR grid, budget knob (info.py)
    peft: ClassVar[io.PeftCodec | None] = None  # its Hugging Face PEFT file format; None: it has none
    # read-only aliases of info's fields, for the benchmark code that reads them on the class (cls.budget_knob)
    default_lr, default_lr_grid, budget_knob, paper_hparams, baseline = (InfoAlias(f) for f in ALIASES.values())
    # the layers this adapter wrapped, by name (a per-layer method's; empty for a whole-model method)
    layers: dict[str, "AdapterLayer"] = MappingProxyType({})
    merges: ClassVar[bool] = True  # False: the update is no weight change (prompt tuning); merge() refuses, saying so
    trains_model_tensors: ClassVar[bool] = False  # True: it trains the model's own tensors (BitFit): nothing to fold
    # True: it trains nothing but its ``train`` modules (the head baseline), so a benchmark may fit them on features
    # cached once (``head_fit="cached"``: bench/headfit.py)
    trains_head_only: ClassVar[bool] = False
    # what load_peft did beyond loading adapter tensors, as PEFT does (modules_to_save names that match nothing,
    # embedding weights saved beside the adapter); () for an adapter not loaded from a PEFT file
    load_notes: tuple[str, ...] = ()
    guards_save_pretrained: ClassVar[bool] = True  # the model's own weights are not the adapted model's until merged
    _off: bool = False  # True inside ``disable_adapter()``

    def __init_subclass__(cls, **kwargs):
        """A method's ``count`` classmethod also answers ``ad.count()`` on an adapter (``lifecycle.CountMethod``);
        ``info``'s fields set as class attributes (the style before ``info``) are an error naming the fix."""
        super().__init_subclass__(**kwargs)
        refuse_old_style(cls)
        if isinstance(cls.__dict__.get("count"), classmethod):
            cls.count = lifecycle.CountMethod(cls.__dict__["count"].__func__)

    @classmethod
    def budget_kwargs(cls, value: int) -> dict:
        """Config fields that set the budget knob to ``value``."""
        return {cls.info.budget_knob: value}

    @classmethod
    def lr_grid(cls) -> tuple[float, ...]:
        """The default LR sweep (``info.lr_sweep()``)."""
        return cls.info.lr_sweep()

    @classmethod
    def budget_count(cls, model: nn.Module, config: "AdapterConfig") -> int:
        """The count a parameter budget is matched against (default: the trainable count)."""
        return cls.count(model, config)

    @classmethod
    def rank_fits(cls, model: nn.Module, config: "AdapterConfig") -> bool:
        """False when ``config``'s size knob gains nothing on ``model`` (a rank above a layer's): a budget skips it."""
        return True

    def __init__(self, model: nn.Module, config: AdapterConfig):
        refuse_second_adapter(model)
        self._count_at_attach = type(self).count(model, config)  # before the model changes: what ad.count() answers
        hold(self, model)  # until unload() (attach's transaction undoes it on error)
        self.model = model
        self.config = config

    # ---- what the method owns -------------------------------------------------------------------------------
    @abstractmethod
    def roles(self) -> dict[str, list[nn.Parameter]]:
        """The adapter's trainable tensors grouped by role (e.g. LoRA: {"A": [...], "B": [...]})."""

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multiplier per role (LoRA+ gives "B" its ratio). Roles not named get 1."""
        return {}

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """Tensors that, with ``extra_state()`` and the config, rebuild the adapter (no base weights)."""

    @abstractmethod
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of ``state()``; raises ValueError naming the first tensor that does not fit."""

    def extra_state(self) -> dict:
        """JSON-serialisable state beyond tensors (seeds, rank patterns). Restored by ``load_extra_state``."""
        return {}

    def load_extra_state(self, extra: dict) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def merge(self) -> None:
        """Fold the adapter into the frozen weights (outputs unchanged). Twice is a no-op."""

    @abstractmethod
    def unmerge(self) -> None:
        """Undo ``merge`` (restores the frozen weights)."""

    @property
    @abstractmethod
    def merged(self) -> bool:
        """Whether the update is folded into the model's weights now."""

    @abstractmethod
    def enable_update(self, on: bool) -> None:
        """Switch the (unmerged) update off (the model computes the base model; the update is kept) or back on."""

    @abstractmethod
    def unload_model(self, merge: bool) -> nn.Module:
        """Take the adapter out of the model and return the plain model: ΔW folded into its weights (``merge``) or
        its weights as before attaching. ``unload`` calls it, then spends the adapter."""

    def plain_view(self):
        """A context in which ``self.model`` (merged) looks like the plain model (layers unwrapped): for saving."""
        return contextlib.nullcontext()

    def unload(self, merge: bool = False) -> nn.Module:
        """The plain model, as PEFT's ``merge_and_unload()`` (``merge=True``: ΔW folded into the weights) or
        ``unload()`` (``merge=False``: the weights as before attaching). Wrapped layers are replaced by their own
        layers, ``requires_grad`` is as before attaching; the ``train`` modules keep their trained values (as PEFT's
        ``modules_to_save``). ``save_pretrained`` of the result loads with ``from_pretrained``. The adapter object
        is spent: any further use of it is an error."""
        return lifecycle.unload(self, merge)

    def disable_adapter(self):
        """``with ad.disable_adapter():`` the model computes the base model (PEFT's habit), whether merged or not;
        after the block the adapter is as it was (merged again if it was merged). The ``train`` modules keep their
        trained values inside (peftzoo trains them in place; PEFT switches to a kept copy)."""
        return lifecycle.disabled(self)

    def _save_pretrained(self, *args, **kwargs):
        """The model's ``save_pretrained`` while this adapter is attached (``lifecycle.hold``)."""
        return lifecycle.save_pretrained(self, *args, **kwargs)

    @classmethod
    @abstractmethod
    def count(cls, model: nn.Module, config: AdapterConfig) -> int:
        """Trainable adapter elements attaching would add, computed without touching the model."""

    def initialize(self) -> None:
        """Run the adapter's initialisation again on the model as it is now (after ``to_empty`` on ``meta``)."""
        raise NotImplementedError(f"{self.name} cannot be initialised again in place: attach it to the "
                                  "materialised model instead")

    # ---- training-loop hooks (no-ops unless a method needs them) ---------------------------------------------
    def set_total_steps(self, total_steps: int) -> None:  # noqa: B027
        pass

    def extra_loss(self) -> torch.Tensor | None:
        return None

    def on_step(self, step: int) -> None:  # noqa: B027
        pass

    def freeze_base(self, train: dict[str, nn.Module]) -> None:
        """Freeze every parameter of the model, then make the ``train`` modules (``find_train``) trainable."""
        self._grad_before = [(p, p.requires_grad) for p in self.model.parameters()]  # unload() restores them
        freeze(self.model)
        for m in train.values():
            m.requires_grad_(True)
        self._train_modules = train

    # ---- derived answers: the same for every method -----------------------------------------------------------
    @property
    def train_modules(self) -> dict[str, nn.Module]:
        return getattr(self, "_train_modules", {})

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for ps in self.roles().values() for p in ps]

    def trainable_parameters(self) -> list[nn.Parameter]:
        seen, out = set(), []
        for p in self.adapter_parameters() + [p for m in self.train_modules.values() for p in m.parameters()]:
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                out.append(p)
        return out

    def num_trainable(self) -> int:
        """Trainable elements: adapter tensors + the modules named in ``train``."""
        return sum(p.numel() for p in self.trainable_parameters())

    def summary(self) -> dict:
        """Counts, honestly labelled. ``effective`` differs from ``adapter`` only for methods that prune."""
        adapter = sum(p.numel() for p in self.adapter_parameters())
        head = self.num_trainable() - adapter
        return {"method": self.name, "adapter": adapter, "effective": self.effective_count(), "train_modules": head,
                "trainable": adapter + head}

    def trainable_line(self) -> str:
        """PEFT's ``print_trainable_parameters()`` line: trainable elements (``num_trainable()``) and all of
        ``self.model``'s parameters (base + adapter)."""
        n, total = self.num_trainable(), sum(p.numel() for p in self.model.parameters())
        return f"trainable params: {n:,d} || all params: {total:,d} || trainable%: {100 * n / total:.4f}"

    def print_trainable_parameters(self) -> None:
        print(self.trainable_line())

    def effective_count(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters())

    def report(self) -> dict:
        """Method-specific fields for a run's record, taken after training (AdaLoRA: the ranks it kept)."""
        return {}

    def file_bytes(self) -> int:
        """Bytes of this adapter's saved files: what storing one trained copy of it costs."""
        with tempfile.TemporaryDirectory() as d:
            self.save(d)
            return sum(p.stat().st_size for p in Path(d).iterdir())

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Groups for ``torch.optim``: one per learning-rate scale, chosen by role, never by parameter name."""
        scales = self.lr_scales()
        groups: dict[float, list[nn.Parameter]] = {}
        for role, params in self.roles().items():
            groups.setdefault(scales.get(role, 1.0), []).extend(p for p in params if p.requires_grad)
        head = [p for m in self.train_modules.values() for p in m.parameters() if p.requires_grad]
        groups.setdefault(1.0, []).extend(head)
        return [{"params": ps, "lr": lr * s, "weight_decay": weight_decay, "lr_scale": s}
                for s, ps in sorted(groups.items()) if ps]

    def make_optimizer(self, lr: float, /, weight_decay: float = 0.0, optimizer_cls=None, **kwargs):
        """The optimizer every training loop steps (peftzoo's ``fit`` and demo, ``hf.AdapterTrainer``):
        ``optimizer_cls`` (default ``torch.optim.AdamW``) over ``param_groups``, ``kwargs`` its settings (betas,
        eps). A method whose optimizer is part of the method (GaLore's projected Adam) overrides it."""
        return (optimizer_cls or torch.optim.AdamW)(self.param_groups(lr, weight_decay), **kwargs)

    def optimizer_state_count(self) -> int:
        """Elements of ``make_optimizer()``'s state once it has stepped: AdamW's exp_avg and exp_avg_sq (and its
        1-element step counter) per trainable tensor. Methods with their own optimizer override it."""
        return sum(2 * p.numel() + 1 for p in self.trainable_parameters())

    def save(self, path) -> None:
        io.save(self, path)

    def save_peft(self, path) -> None:
        """The adapter in Hugging Face PEFT's format (``peft.PeftModel.from_pretrained`` loads it): ``self.peft``."""
        io.save_peft(self, path)

    def __repr__(self) -> str:
        s = self.summary()
        return f"<{type(self).__name__} {self.name}: {s['adapter']:,} adapter + {s['train_modules']:,} head elements>"
