"""The method registry: name -> Adapter class, filled by ``@register`` on each method's class.

It imports nothing from peftzoo, so every floor may use it. ``peftzoo.adapters`` imports every method module (the
list of methods, in table order), which fills it; ``import peftzoo`` does that.
"""
from __future__ import annotations

import dataclasses

REGISTRY: dict[str, type] = {}  # in registration order: the order of tables and listings


def register(cls: type) -> type:
    """Class decorator: make ``cls`` (an Adapter with a unique ``name``) available under its name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name to register under")
    if REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"method name {cls.name!r} is taken by {REGISTRY[cls.name].__qualname__}")
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def make_config(method: str, **kwargs):
    """The method's config dataclass from keyword arguments; unknown names are an error that lists the known ones."""
    cls = get(method)
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"{method} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(sorted(fields))}")
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    return cls.config_cls(**kwargs)
