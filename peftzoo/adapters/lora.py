"""LoRA (Hu et al. 2021, arXiv:2106.09685), rsLoRA (Kalajdzievski 2023, arXiv:2312.03732) and
LoRA+ (Hayou et al. 2024, arXiv:2402.12354).

    y = W x + b + s · B A dropout(x),   A ∈ R^{r×d_in} (Kaiming-uniform, a=√5),  B ∈ R^{d_out×r} (zeros)
    LoRA:   s = α / r          rsLoRA: s = α / √r          LoRA+: LoRA, with B's learning rate = lr × ratio

r and α may differ per layer (``rank_pattern`` / ``alpha_pattern``, PEFT's options and matching rule): each layer is
built with its own ``config.at(name)``.

Trainable elements per adapted layer: r · (d_in + d_out). Other initialisations (``init_lora_weights``:
"gaussian", "pissa", "olora", "loram") are in lora_init.py; the layer types other than ``nn.Linear`` (``nn.Embedding``,
``nn.Conv1d/2d/3d``) in embedding.py and conv.py, chosen by ``Lora.layer_classes``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftzoo.adapters.base import AdapterConfig
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.conv import LoraConv
from peftzoo.adapters.embedding import LoraEmbedding
from peftzoo.adapters.fused import lowrank_linear
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter, LayerCodec
from peftzoo.adapters.lora_init import PEFT_PLAIN, RESIDUAL, check_init, check_rank, init_factors, peft_init
from peftzoo.inject import LINEAR_TYPES
from peftzoo.registry import register


@dataclass
class LoraConfig(AdapterConfig):
    r: int = 8  # rank of the update: trainable elements grow linearly with it
    alpha: float = 16.0  # scale numerator: the update is multiplied by alpha / r (rsLoRA: alpha / sqrt(r))
    dropout: float = 0.0  # dropout on the adapter's input only; 0 enables the fused fast path
    # PEFT's init option: True (Kaiming A, B = 0), "gaussian", or "pissa" / "olora" (start from W's top-r part,
    # which leaves the residual in the frozen weight), or "loram" (DST bases scaled by W's magnitude); lora_init.py
    init_lora_weights: bool | str = True
    # per-layer r and alpha (PEFT's rank_pattern / alpha_pattern): {regex: value}; a layer takes the first key
    # (in the dict's order) that matches the end of its name at a dot, as PEFT; layers no key matches use r, alpha
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)

    def rank_stabilised(self) -> bool:
        """True: the update is scaled by alpha / sqrt(r) (rsLoRA), else alpha / r."""
        return False

    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rank_stabilised() else self.r)

    def at(self, name: str) -> LoraConfig:
        """This config for the layer ``name``: its rank_pattern / alpha_pattern entries as r and alpha."""
        if not self.rank_pattern and not self.alpha_pattern:
            return self
        r = pattern_value(self.rank_pattern, name, self.r, "rank_pattern")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"rank_pattern gives layer {name!r} r={r!r}: it must be a positive integer")
        alpha = pattern_value(self.alpha_pattern, name, self.alpha, "alpha_pattern")
        return dataclasses.replace(self, r=r, alpha=alpha, rank_pattern={}, alpha_pattern={})


@dataclass
class RsLoraConfig(LoraConfig):
    def rank_stabilised(self) -> bool:  # the update's scale stays O(1) as r grows
        return True


@dataclass
class LoraPlusConfig(LoraConfig):
    lr_ratio: float = 16.0  # B's learning rate / A's: Hayou et al. show B should learn faster (ratio ~ 2^4)


def pattern_value(patterns: dict, name: str, default, option: str):
    """PEFT's ``get_pattern_key`` rule: the value of the first key ``k`` (a regex) such that ``name`` is, from its
    start, anything ending in a dot (or nothing) followed by ``k`` to its end; else ``patterns[name]``; else
    ``default``."""
    for key, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return value
        except re.error as e:
            raise ValueError(f"{option} key {key!r} is not a valid regular expression ({e})") from None
    return patterns.get(name, default)


def pattern_notes(config: LoraConfig, names) -> list[str]:
    """What to warn of in rank_pattern / alpha_pattern for the adapted layers ``names``: keys that match none (PEFT
    ignores them and warns), and layers that several keys with different values match (the first in the dict's order
    wins, as in PEFT, but saved JSON files, PEFT's and ours, sort their keys, so a reload may pick another)."""
    notes = []
    for opt in ("rank_pattern", "alpha_pattern"):
        pats = getattr(config, opt)
        hits = {n: {k: v for k, v in pats.items() if pattern_value({k: v}, n, None, opt) is not None} for n in names}
        unmatched = [k for k in pats if not any(k in h for h in hits.values())]
        if unmatched:
            notes.append(f"{opt} key(s) {unmatched} match none of the {len(hits)} adapted layers and are ignored "
                         f"(as PEFT does): a key must match the end of a layer's name, e.g. {next(iter(hits))!r}")
        clash = next(((n, h) for n, h in hits.items() if len(set(h.values())) > 1), None)
        if clash:
            notes.append(f"{opt} keys {list(clash[1])} all match layer {clash[0]!r} with different values: the first "
                         f"in the dict's order wins (as PEFT), but saved files sort their keys, so a reload may take "
                         f"another: make the keys match disjoint layers")
    return notes


class LoraLayer(AdapterLayer):
    peft_names = {"A": "lora_A.weight", "B": "lora_B.weight"}
    additive = True  # base(x) + s·B A dropout(x)

    def __init__(self, name: str, base: nn.Linear, config: LoraConfig, shared, gen: torch.Generator):
        super().__init__(base, config.dropout)
        self.scaling = config.scaling()
        a, b, residual = init_factors(config.init_lora_weights, self.base_weight(), config.r, self.scaling, gen)
        self.A, self.B = nn.Parameter(a), nn.Parameter(b)
        if residual is not None:
            self.set_base_weight(residual)

    @classmethod
    def check(cls, name, base, config):
        r = config.r
        check_rank(config.init_lora_weights, name, r, cls.dims(base))
        if config.init_lora_weights == "olora" and isinstance(base, Conv1D):
            raise ValueError(f"init_lora_weights='olora' on {name!r}, a transformers Conv1D: PEFT 0.21.2 decomposes "
                             "its stored (d_in, d_out) weight and then fails in forward, so no PEFT file could be "
                             "exchanged; use 'pissa' (which PEFT handles on Conv1D)")
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"r={r} must be a positive integer")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout={config.dropout} must be in [0, 1)")

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return config.r * (in_features + out_features)

    @classmethod
    def rank(cls, config):
        return config.r

    def roles(self):
        return {"A": [self.A], "B": [self.B]}

    def lowrank_delta(self):
        """s · B A: the plain low-rank update in W's shape (DoRA builds on it)."""
        return (self.B @ self.A) * self.scaling

    def delta_weight(self):
        return self.lowrank_delta()

    def adapted(self, x):
        if self.dropout is None:
            return lowrank_linear(x, self, self.A, self.B, self.scaling)
        return self.base(x) + self.update(x)

    def update(self, x):
        return (self.drop(x) @ self.A.t() @ self.B.t()) * self.scaling


class LoraCodec(LayerCodec):
    """PEFT's LORA files: rsLoRA is ``use_rslora``, DoRA ``use_dora`` (dora.py); LoRA+ writes plain LoRA files."""

    peft_type = "LORA"
    options = ("rank_pattern", "alpha_pattern")  # PEFT options beyond the basic ones LoRA implements

    def __init__(self, rank_stabilised: bool = False, loads: bool = True):
        self.rank_stabilised = rank_stabilised  # which LORA files it reads: use_rslora as this
        self.loads = loads  # False: it writes LORA files but reads none (LoRA+: a LoRA file loads as "lora")

    def accepts(self, cfg: dict) -> bool:
        return (self.loads and cfg.get("peft_type") == "LORA" and not cfg.get("use_dora")
                and bool(cfg.get("use_rslora")) == self.rank_stabilised)

    def to_peft(self, config: LoraConfig) -> dict:
        return {"r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
                "use_rslora": config.rank_stabilised(), "use_dora": False,
                "init_lora_weights": peft_init(config.init_lora_weights),
                "rank_pattern": dict(config.rank_pattern), "alpha_pattern": dict(config.alpha_pattern)}

    def from_peft(self, cfg: dict) -> dict:
        init = cfg.get("init_lora_weights", True)
        if not any(init is i or (isinstance(init, str) and init == i) for i in PEFT_PLAIN + RESIDUAL):
            check_init(init)  # raises, naming the option
        peft_init(init)  # ours only (loram): no PEFT file made by PEFT holds it
        return {"r": int(cfg["r"]), "alpha": float(cfg.get("lora_alpha", 8)),
                "dropout": float(cfg.get("lora_dropout", 0.0)),
                "init_lora_weights": init if init in RESIDUAL else True,  # the file's A, B replace any other init
                "rank_pattern": {k: int(v) for k, v in (cfg.get("rank_pattern") or {}).items()},
                "alpha_pattern": {k: float(v) for k, v in (cfg.get("alpha_pattern") or {}).items()}}


@register
class Lora(LayerAdapter):
    name = "lora"
    config_cls = LoraConfig
    layer_classes = {**dict.fromkeys(LINEAR_TYPES, LoraLayer), nn.Embedding: LoraEmbedding,
                     **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), LoraConv)}  # PEFT's LoRA layer types
    peft = LoraCodec()
    # LR grid ~10x full fine-tuning's (LoRA paper: 4e-4..5e-4 on RoBERTa-base)
    info = MethodInfo(paper="Hu et al. 2021, arXiv:2106.09685", equation="W x + (α/r)·B A x",
                      formula="r·(d_in + d_out)", default_lr=5e-4, lr_grid=(1e-4, 3e-4, 1e-3, 3e-3), budget_knob="r")

    @classmethod
    def validate(cls, config: LoraConfig) -> None:
        check_init(config.init_lora_weights)
        for opt in ("rank_pattern", "alpha_pattern"):
            if not isinstance(getattr(config, opt), dict):
                raise ValueError(f"{opt}={getattr(config, opt)!r} must be a dict {{layer-name regex: value}}")

    @classmethod
    def layer_config(cls, config: LoraConfig, name: str) -> LoraConfig:
        return config.at(name)

    @classmethod
    def find(cls, model, config, train):
        found = super().find(model, config, train)
        for note in pattern_notes(config, found):
            warnings.warn(note, stacklevel=4)
        return found


@register
class RsLora(Lora):
    name = "rslora"
    config_cls = RsLoraConfig
    peft = LoraCodec(rank_stabilised=True)
    info = Lora.info.replace(paper="Kalajdzievski 2023, arXiv:2312.03732", equation="W x + (α/√r)·B A x")


@register
class LoraPlus(Lora):
    name = "loraplus"
    config_cls = LoraPlusConfig
    peft = LoraCodec(loads=False)  # a PEFT LoRA file loads as "lora": LoRA+ changes training, not the saved adapter
    # the base LR is A's; B trains at ratio (16) x it
    info = Lora.info.replace(paper="Hayou et al. 2024, arXiv:2402.12354", equation="LoRA; lr(B) = ratio·lr(A)",
                             lr_grid=(3e-5, 1e-4, 3e-4, 1e-3))

    @classmethod
    def validate(cls, config):
        super().validate(config)
        if config.lr_ratio <= 0:
            raise ValueError(f"lr_ratio={config.lr_ratio} must be > 0")

    def lr_scales(self):
        return {"B": self.config.lr_ratio}
