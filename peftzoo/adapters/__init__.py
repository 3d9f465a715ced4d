"""Every method: importing this package imports each method's module, whose ``@register`` files it in
``peftzoo.registry``. Adding a method = one new file (its class decorated with ``@register``) + one line here.
The order of the lines is the order of tables and listings."""
from __future__ import annotations

from peftzoo.adapters import baselines  # noqa: F401  full, head
from peftzoo.adapters import lora  # noqa: F401  lora, rslora, loraplus
from peftzoo.adapters import dora  # noqa: F401
from peftzoo.adapters import vera  # noqa: F401
from peftzoo.adapters import adalora  # noqa: F401
from peftzoo.adapters import ia3  # noqa: F401
from peftzoo.adapters import loha  # noqa: F401
from peftzoo.adapters import lokr  # noqa: F401
from peftzoo.adapters import oft  # noqa: F401
from peftzoo.adapters import bitfit  # noqa: F401
from peftzoo.adapters import delta_lora  # noqa: F401  deltalora
from peftzoo.adapters import galore  # noqa: F401
from peftzoo.adapters import subspace  # noqa: F401  did, said
from peftzoo.adapters import prompt  # noqa: F401
from peftzoo.adapters.base import Adapter, AdapterConfig
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.registry import REGISTRY, get, register

__all__ = ["Adapter", "AdapterConfig", "AdapterLayer", "REGISTRY", "register", "get"]
