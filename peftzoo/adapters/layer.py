"""The one wrapper every per-layer method's layers are: ``AdapterLayer`` around one frozen layer (its contract with
``LayerAdapter``, PEFT tensor names, merge/unmerge into the base weight)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftzoo.adapters.base import AdapterConfig
from peftzoo.adapters import lifecycle
from peftzoo.adapters.lifecycle import AdapterModule, LayerLifecycle
from peftzoo.inject import layer_dims
from peftzoo.io import copy_checked


class AdapterLayer(LayerLifecycle, AdapterModule):
    """Wraps one frozen layer (kept as ``self.base``). Subclasses define the update.

    The base is an ``nn.Linear`` or transformers' ``Conv1D`` (weight stored (d_in, d_out): PEFT's
    ``fan_in_fan_out``), or, for the methods whose ``layer_classes`` name them, another layer type
    (``nn.Embedding``, ``nn.Conv*d``); linear subclasses read W as (d_out, d_in) through ``base_weight()`` and
    write it through ``set_base_weight``, so they never see the storage order (for other types both use
    ``base.weight``'s own shape). To code that inspects it, the wrapper looks like the layer it wraps:
    ``weight``, ``bias``, ``in_features``, ``out_features`` and any other attribute of the base (T5's
    ``DenseReluDense`` reads ``self.wo.weight.dtype``).

    A subclass sets ``peft_names`` (its tensor name -> PEFT's key suffix) and implements ``roles``,
    ``delta_weight`` (ΔW with W + ΔW the merged weight, laid out as ``base_weight()``) and ``adapted`` (the forward
    while not merged; ``forward`` itself calls the frozen layer alone once merged); ``count``
    gives its trainable elements. A layer type other than ``nn.Linear`` overrides ``dims`` (and ``count_layer``
    when its count needs more than the two sizes, e.g. a conv kernel).
    """

    peft_names: ClassVar[dict[str, str]] = {}
    # True: ``adapted(x) == base(x) + update(x)``, so runs stacked over one frozen base (bench/stacked.py) can share
    # base(x) and add each run's ``update`` on its own rows
    additive: ClassVar[bool] = False

    def __init__(self, base: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.merged = False
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None  # on the adapter's input only (see ``drop``)
        self.fan_in_fan_out = isinstance(base, Conv1D)
        self.in_features, self.out_features = self.dims(base)

    @staticmethod
    def dims(base: nn.Module) -> tuple[int, int]:
        """(d_in, d_out) of the wrapped layer, as PEFT counts them (other layer types override this)."""
        return layer_dims(base)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base")
            if base is None or name.startswith("_"):
                raise
            return getattr(base, name)

    def base_weight(self) -> torch.Tensor:
        """The frozen W as (d_out, d_in), whatever the base's storage order (a view, no copy)."""
        w = self.base.weight
        return w.t() if self.fan_in_fan_out else w

    def set_base_weight(self, w: torch.Tensor) -> None:
        """Replace the frozen W's values with ``w``, given as (d_out, d_in)."""
        self.base.weight.data = self._stored(w)
        self._wrote_base = True  # read by remember_init() right after construction

    @classmethod
    def check(cls, name: str, base: nn.Module, config: AdapterConfig) -> None:
        """Raise ValueError if ``config`` cannot adapt this layer (e.g. r > min(d_in, d_out) for LoRA)."""

    @classmethod
    def count(cls, name: str, in_features: int, out_features: int, config: AdapterConfig) -> int:
        raise NotImplementedError

    @classmethod
    def count_layer(cls, name: str, base: nn.Module, config: AdapterConfig) -> int:
        """Trainable elements this layer class would add to ``base``."""
        return cls.count(name, *cls.dims(base), config)

    @classmethod
    def rank(cls, config: AdapterConfig) -> int | None:
        """The rank of the layer's low-rank factors (attach notes when it exceeds min(d_in, d_out)); None: no such rank."""
        return None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors ``Adapter.state`` saves for this layer (default: those PEFT saves)."""
        return {k: getattr(self, k) for k in self.peft_names}

    def after_load(self) -> None:  # noqa: B027 - refresh caches derived from loaded tensors
        pass

    def roles(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x):
        """The frozen layer itself once the update is merged into its weight (or switched off), else ``adapted(x)``."""
        if self.merged or self.disabled:
            if self.merged and self.training and torch.is_grad_enabled():  # a training step: backward would fail
                return lifecycle.guard_merged(self.base(x), self.parameters(recurse=False))
            return self.base(x)
        return self.adapted(x)

    def adapted(self, x):
        """The output with the update applied beside the frozen layer (not merged)."""
        raise NotImplementedError

    def update(self, x):
        """What the update adds to ``base(x)`` (layers with ``additive = True``)."""
        raise NotImplementedError(f"{type(self).__name__} is not additive: its output is not base(x) + update(x)")

    def drop(self, x):
        """Dropout on the adapter's input (the identity when the config's dropout is 0)."""
        return self.dropout(x) if self.dropout is not None else x

    def merge(self) -> None:
        if not self.merged:
            self._add_to_weight(self.delta_weight())
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.merged = False  # delta_weight() of merged-aware layers reads this flag
            self._add_to_weight(-self.delta_weight())

    @torch.no_grad()
    def _add_to_weight(self, delta: torch.Tensor) -> None:
        w = self.base.weight.data
        w += (delta.t() if self.fan_in_fan_out else delta).to(w.dtype)

    # PEFT interop: tensors by PEFT's names (subclasses with extra logic override)
    def peft_state(self) -> dict[str, torch.Tensor]:
        return {peft: getattr(self, ours).detach() for ours, peft in self.peft_names.items()}

    def load_peft_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for ours, peft in self.peft_names.items():
            if peft not in tensors:
                raise ValueError(f"PEFT adapter file lacks {peft!r} for a layer of type {type(self).__name__}")
            copy_checked(getattr(self, ours), tensors[peft], peft)

