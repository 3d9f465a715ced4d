"""The public face: methods, attach, count, load, load_peft."""
from __future__ import annotations

from torch import nn

import peftzoo.adapters  # noqa: F401  every method, so the registry is complete
from peftzoo import registry
from peftzoo.adapters.base import Adapter
from peftzoo.inject import transaction
from peftzoo.io import load, load_peft  # noqa: F401  (the public names)
from peftzoo.registry import make_config


def methods() -> list[str]:
    """Sorted names of the registered PEFT methods (the baselines ``full`` and ``head`` are registered too)."""
    return sorted(n for n, cls in registry.REGISTRY.items() if not cls.info.baseline)


def attach(model: nn.Module, method: str, **kwargs) -> Adapter:
    """Attach ``method`` to ``model`` (in place for per-layer methods) and return the Adapter.

    Keyword arguments are the method's config fields: ``targets``, ``train``, ``seed`` and its hyperparameters.
    Every base parameter is frozen; the adapter's tensors and the ``train`` modules are trainable.
    """
    cfg = make_config(method, **kwargs)
    with transaction(model):  # on any error the model is left exactly as it was
        return registry.get(method)(model, cfg)


def count(model: nn.Module, method: str, **kwargs) -> int:
    """Trainable elements ``attach(model, method, **kwargs)`` would give, without touching the model."""
    cfg = make_config(method, **kwargs)
    return registry.get(method).count(model, cfg)

