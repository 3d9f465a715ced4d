"""The method registry: name -> Adapter class. Adding a method = one new file + one line here."""
from __future__ import annotations

from peftzoo.adapters.base import Adapter, AdapterConfig, AdapterLayer
from peftzoo.adapters.adalora import AdaLora
from peftzoo.adapters.dora import Dora
from peftzoo.adapters.lora import Lora, LoraPlus, RsLora
from peftzoo.adapters.vera import Vera
from peftzoo.intrinsic.subspace import Did, Said

REGISTRY: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    REGISTRY[cls.name] = cls
    return cls


register(Lora)
register(RsLora)
register(LoraPlus)
register(Dora)
register(Vera)
register(AdaLora)
register(Did)
register(Said)


def get(name: str) -> type[Adapter]:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


__all__ = ["Adapter", "AdapterConfig", "AdapterLayer", "REGISTRY", "register", "get"]
