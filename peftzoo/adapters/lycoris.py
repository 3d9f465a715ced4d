"""What LoHa and LoKr share (LyCORIS's methods, as PEFT 0.21.2 runs them): ΔW is rebuilt whole from small factors
at every forward, in the layout of the base's weight (a convolution's kernel shape included), and

    y = (W + ΔW) x + b      (a convolution: conv(x, W + ΔW) with the base's stride, padding, dilation, groups)

one product with the summed weight: ΔW is materialised either way, so this saves the second product PEFT computes
beside the base (same outputs and gradients to float rounding). ``merge`` adds ΔW to W, exactly what the forward
uses. Layer types: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` (PEFT's; not transformers' ``Conv1D``, which PEFT
refuses for both). Convolutions with ``padding_mode`` other than zeros are refused: PEFT convolves ΔW with zero
padding beside the base, so its unmerged outputs differ from its merged ones there.

PEFT options peftzoo does not implement are refused by name: ``rank_dropout`` and ``module_dropout`` other than 0,
``use_effective_conv2d=True`` on a convolution with a kernel larger than 1 (FedPara's Proposition 3, a CP-decomposed
kernel; PEFT itself ignores it on linear and 1×1 layers, and so do we), and ``rank_pattern``/``alpha_pattern``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from peftzoo.adapters.base import AdapterConfig
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.layered import LayerCodec

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class LycorisConfig(AdapterConfig):
    r: int = 8  # rank of each factor pair (PEFT's default)
    alpha: float = 8.0  # ΔW is multiplied by alpha / r (PEFT's default 8: scale 1 at r = 8)
    rank_dropout: float = 0.0  # PEFT's dropout of ΔW's output rows in training: not implemented, only 0 is accepted
    module_dropout: float = 0.0  # PEFT's chance of skipping the update in a training step: only 0 is accepted
    use_effective_conv2d: bool = False  # FedPara's CP-decomposed kernel for convs with kernel > 1: not implemented

    def scaling(self) -> float:
        return self.alpha / self.r


def validate(config: LycorisConfig, method: str) -> None:
    """Refuse, by name, the hyperparameters peftzoo does not implement or that make no sense."""
    if not isinstance(config.r, int) or isinstance(config.r, bool) or config.r < 1:
        raise ValueError(f"r={config.r!r} must be a positive integer")
    for opt in ("rank_dropout", "module_dropout"):
        if getattr(config, opt) != 0:
            raise ValueError(f"{method}: {opt}={getattr(config, opt)} is not implemented in peftzoo (PEFT draws it "
                             f"from the global RNG in training); set {opt}=0")


class LycorisCodec(LayerCodec):
    """The fields LoHa and LoKr share in PEFT's adapter_config.json."""

    absent = ("bias", "fan_in_fan_out")  # shared fields LoHaConfig and LoKrConfig lack (PEFT warns on them)

    def __init__(self, peft_type: str):
        self.peft_type = peft_type  # "LOHA" or "LOKR"

    def to_peft(self, config: LycorisConfig) -> dict:
        return {"r": config.r, "alpha": config.alpha, "rank_dropout": config.rank_dropout,
                "module_dropout": config.module_dropout, "use_effective_conv2d": config.use_effective_conv2d,
                "init_weights": True, "rank_pattern": {}, "alpha_pattern": {}}

    def from_peft(self, cfg: dict) -> dict:
        """Our config fields from a PEFT LoHa/LoKr config; the per-layer patterns peftzoo does not implement are
        refused (its init option is not read: the file's tensors replace any init)."""
        for key in ("rank_pattern", "alpha_pattern"):
            if cfg.get(key):
                raise ValueError(f"PEFT {cfg.get('peft_type')} adapter uses {key}={cfg[key]!r} (per-layer values), "
                                 "which peftzoo does not implement")
        return {"r": int(cfg.get("r", 8)), "alpha": float(cfg.get("alpha", 8)),
                "rank_dropout": float(cfg.get("rank_dropout", 0.0)),
                "module_dropout": float(cfg.get("module_dropout", 0.0)),
                "use_effective_conv2d": bool(cfg.get("use_effective_conv2d", False))}


def check_layer(name: str, base: nn.Module, config: LycorisConfig, method: str) -> None:
    """Refuse the convolutions whose update peftzoo cannot run as PEFT does (see the module docstring)."""
    if not isinstance(base, (nn.Conv1d, nn.Conv2d)):
        return
    kind = type(base).__name__
    if base.padding_mode != "zeros":
        raise ValueError(f"target {name!r} is a {kind} with padding_mode={base.padding_mode!r}: PEFT's {method} pads "
                         "its update with zeros, so its outputs change when merged; peftzoo does not adapt it")
    if config.use_effective_conv2d and math.prod(base.kernel_size) > 1:
        raise ValueError(f"{method}: use_effective_conv2d=True (FedPara's CP-decomposed kernel) on {name!r}, a {kind} "
                         f"with kernel {tuple(base.kernel_size)}, is not implemented in peftzoo; set "
                         "use_effective_conv2d=False (the kernel is then read as a c_out x (c_in/groups·∏k) matrix)")


def kaiming_(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """PEFT's LyCORIS init for a random factor: Kaiming-uniform with a = √5 (bound 1/√fan_in), from ``gen``."""
    return nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=gen)


class DeltaLayer(AdapterLayer):
    """A layer whose update is ``build()``, a tensor reshaped to the base weight's shape, times α/r."""

    def __init__(self, base: nn.Module, config: LycorisConfig):
        super().__init__(base)
        self.scaling = config.scaling()

    @staticmethod
    def dims(base):
        if isinstance(base, (nn.Conv1d, nn.Conv2d)):
            return base.in_channels, base.out_channels
        return base.in_features, base.out_features

    @staticmethod
    def flat_shape(base: nn.Module) -> tuple[int, int]:
        """W as a matrix: (d_out, d_in) for a linear layer, (c_out, c_in/groups · ∏k) for a convolution."""
        w = base.weight
        return w.shape[0], w[0].numel()

    def factor(self, *shape: int, gen: torch.Generator, zero: bool = False) -> nn.Parameter:
        """A trainable factor in the base's dtype and device: zeros, or Kaiming-uniform from ``gen`` (on the CPU)."""
        w = self.base.weight
        t = torch.zeros(shape, dtype=w.dtype)
        return nn.Parameter((t if zero else kaiming_(t, gen)).to(w.device))

    def build(self) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self):
        return self.build().reshape(self.base.weight.shape) * self.scaling

    def adapted(self, x):
        w = self.base.weight + self.delta_weight()
        if isinstance(self.base, nn.Linear):
            return F.linear(x, w, self.base.bias)
        return self.base._conv_forward(x, w, self.base.bias)
