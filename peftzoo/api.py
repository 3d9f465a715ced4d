"""The public face: methods, attach, count, load, load_peft."""
from __future__ import annotations

import dataclasses

from torch import nn

from peftzoo import adapters
from peftzoo.adapters.base import Adapter, AdapterConfig
from peftzoo.inject import transaction


def methods() -> list[str]:
    """Sorted names of the registered methods."""
    return sorted(adapters.REGISTRY)


def make_config(method: str, **kwargs) -> AdapterConfig:
    """The method's config dataclass from keyword arguments; unknown names are an error that lists the known ones."""
    cls = adapters.get(method)
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"{method} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(sorted(fields))}")
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    return cls.config_cls(**kwargs)


def attach(model: nn.Module, method: str, **kwargs) -> Adapter:
    """Attach ``method`` to ``model`` (in place for per-layer methods) and return the Adapter.

    Keyword arguments are the method's config fields: ``targets``, ``train``, ``seed`` and its hyperparameters.
    Every base parameter is frozen; the adapter's tensors and the ``train`` modules are trainable.
    """
    cfg = make_config(method, **kwargs)
    with transaction(model):  # on any error the model is left exactly as it was
        return adapters.get(method)(model, cfg)


def count(model: nn.Module, method: str, **kwargs) -> int:
    """Trainable elements ``attach(model, method, **kwargs)`` would give, without touching the model."""
    cfg = make_config(method, **kwargs)
    return adapters.get(method).count(model, cfg)


def load(model: nn.Module, path) -> Adapter:
    from peftzoo.io import load as _load
    return _load(model, path)


def load_peft(model: nn.Module, path) -> Adapter:
    from peftzoo.io import load_peft as _load_peft
    return _load_peft(model, path)
