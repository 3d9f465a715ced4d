"""What a method whose trained tensors are the model's own (BitFit's biases, GaLore's weights) answers of the
Adapter contract: nothing is added to the model, so there is nothing to fold (``merge``/``unmerge`` only record the
call), the saved state is the trained tensors themselves, and ``disable_adapter()`` / ``unload(merge=False)`` put
back the tensors as attached, from a copy taken at attach time (``keep_initial``)."""
from __future__ import annotations

import torch
from torch import nn

from peftzoo.adapters import lifecycle
from peftzoo.adapters.base import Adapter
from peftzoo.io import copy_checked


def _copy_into(dst: dict[str, torch.Tensor], src: dict[str, torch.Tensor]) -> None:
    for k, t in dst.items():
        t.copy_(src[k].to(device=t.device, dtype=t.dtype))


def _cpu_copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: t.detach().to("cpu", copy=True) for k, t in tensors.items()}


class OwnTensors(Adapter):
    """Base of an ``Adapter`` that sets ``self.tensors`` (name -> the model's parameter it trains) and calls
    ``keep(keep_initial)`` in ``__init__``."""

    trains_model_tensors = True  # the trained tensors are the model's own: merge/unmerge have nothing to fold
    guards_save_pretrained = False  # save_pretrained writes the trained model as it is
    tensors: dict[str, nn.Parameter]

    def keep(self, keep_initial: bool = True) -> None:
        """A CPU copy of the tensors as attached (``None`` without ``keep_initial``); none kept aside yet."""
        self._initial = _cpu_copy(self.tensors) if keep_initial else None
        self._trained: dict[str, torch.Tensor] | None = None  # the trained tensors while the update is off

    def state(self):
        return {k: t.detach() for k, t in self.tensors.items()}

    def load_state(self, tensors):
        missing, extra = sorted(set(self.tensors) - set(tensors)), sorted(set(tensors) - set(self.tensors))
        if missing or extra:
            raise ValueError(f"{self.name} file does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, t in self.tensors.items():
            copy_checked(t, tensors[k], k)

    def initialize(self):
        """The trained tensors are the model's own and come with its weights: only the copy as attached is taken
        again (after ``to_empty`` on ``meta`` and loading the weights)."""
        if self._initial is not None:
            self._initial = _cpu_copy(self.tensors)

    def merge(self):
        """A no-op: the trained tensors already are the model's (twice is a no-op too)."""
        lifecycle.refuse_while_off(self, "merge")
        self._merged = True

    def unmerge(self):
        """A no-op: there is no separate update to take out of the model."""
        lifecycle.refuse_while_off(self, "unmerge")
        self._merged = False

    @property
    def merged(self) -> bool:
        """Whether merge() was called last; the outputs are the same either way (nothing is folded)."""
        return getattr(self, "_merged", False)

    def _need_initial(self, what: str) -> dict[str, torch.Tensor]:
        if self._initial is None:
            raise ValueError(f"{self.name}: {what} needs the tensors as attached, and this adapter was attached with "
                             "keep_initial=False (no copy kept); attach with keep_initial=True, or keep a copy of "
                             "the model (copy.deepcopy(model)) to compare with")
        return self._initial

    @torch.no_grad()
    def enable_update(self, on: bool) -> None:
        """Off: the tensors as attached (the trained ones kept aside on the CPU); on: the trained ones back."""
        if not on and self._trained is None:
            initial = self._need_initial("ad.disable_adapter()")
            self._trained = _cpu_copy(self.tensors)
            _copy_into(self.tensors, initial)
        elif on and self._trained is not None:
            _copy_into(self.tensors, self._trained)
            self._trained = None

    @torch.no_grad()
    def unload_model(self, merge: bool) -> nn.Module:
        """The model itself: with its trained tensors (``merge``), or with the tensors it had when attached."""
        if not merge:
            _copy_into(self.tensors, self._need_initial("ad.unload(merge=False)"))
        return self.model
