"""Frozen ``nn.Linear`` weights cast to the autocast dtype once, not on every forward.

Under autocast, ``F.linear`` casts its fp32 weight and bias to bf16 on every call; autocast caches those casts only
for leaf tensors that require grad, so a frozen base model's weights are cast again at every step (MiniLM, LoRA on
query/value, SST-2 batch 16, CPU bf16, one thread: the casts were ~16% of the profiled op time of a step; without
them a step took 86.4 instead of 90.6 ms of CPU time, dev evaluation 1.86 instead of 1.93 s; a loaded machine, so
indicative). ``FrozenCasts`` keeps one cast copy of each frozen weight and bias of the model's plain ``nn.Linear``
layers (those outside the adapter's own modules, which read and write their wrapped layers in their own ways) and
hands it to the layer for the duration of its own forward, only while autocast runs in that dtype; the values are
exactly those autocast would have made, so training is bit for bit the same. A tensor changed in place (its
version counter moved; a write through ``.data`` does not move it) is cast again; one that was replaced (e.g. by
``torch.func.functional_call``) is left alone; outside autocast the layer sees its own fp32 tensors. Costs one
low-precision copy of those tensors while it is active.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from peftzoo.adapters.lifecycle import AdapterModule

NAMES = ("weight", "bias")


class FrozenCasts:
    """``with FrozenCasts(model, "cpu", torch.bfloat16):`` the model's frozen plain ``nn.Linear`` tensors are
    cast once for every forward that runs under autocast in that dtype; on exit the hooks and copies are gone."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype):
        self.device_type, self.dtype = device_type, dtype
        inside = {id(s) for m in model.modules() if isinstance(m, AdapterModule) for s in m.modules()}
        self.originals = {m: {n: p for n in NAMES if (p := m._parameters.get(n)) is not None
                              and not p.requires_grad and p.dtype != dtype and p.is_floating_point()}
                          for m in model.modules() if type(m) is nn.Linear and id(m) not in inside}
        self.originals = {m: ps for m, ps in self.originals.items() if ps}
        self.cache: dict = {}  # (module, name) -> (the original's version, its cast copy)
        self.swapped: dict = {}  # module -> {name: original}, during its forward
        self.handles: list = []

    def __enter__(self):
        for m in self.originals:
            self.handles += [m.register_forward_pre_hook(self._swap_in),
                             m.register_forward_hook(self._swap_out, always_call=True)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for m in list(self.swapped):
            self._swap_out(m, (), None)
        self.handles, self.cache = [], {}

    def _active(self) -> bool:
        return (torch.is_autocast_enabled(self.device_type)
                and torch.get_autocast_dtype(self.device_type) == self.dtype)

    def _swap_in(self, module, args):
        if not self._active():
            return
        swapped = {}
        for name, orig in self.originals[module].items():
            if module._parameters.get(name) is not orig:
                continue  # replaced from outside: not ours to cast
            entry = self.cache.get((module, name))
            if entry is None or entry[0] != orig._version:
                entry = self.cache[(module, name)] = (orig._version, orig.detach().to(self.dtype))
            module._parameters[name] = entry[1]
            swapped[name] = orig
        if swapped:
            self.swapped[module] = swapped

    def _swap_out(self, module, args, output):
        for name, orig in self.swapped.pop(module, {}).items():
            module._parameters[name] = orig


def frozen_casts(model: nn.Module, dtype: torch.dtype | None, device_type: str):
    """``FrozenCasts`` for ``dtype`` (the run's autocast dtype), or a no-op context when the run has none."""
    return FrozenCasts(model, device_type, dtype) if dtype is not None else contextlib.nullcontext()
