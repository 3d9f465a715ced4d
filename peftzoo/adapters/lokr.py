"""LoKr: low-rank Kronecker product (Edalati et al. 2022, KronA, arXiv:2212.10650; LyCORIS), as PEFT 0.21.2.

    ΔW = (α/r) · W1 ⊗ W2,   W1 ∈ R^{a×c},  W2 = W2a W2b ∈ R^{b×d} (rank r),   d_out = a·b,  d_in = c·d
    y  = (W + ΔW) x + b

(a, b) splits d_out and (c, d) splits d_in by PEFT's ``factorization``: with ``decompose_factor`` f > 0
dividing the size, (f, size/f); else the largest divisor m ≤ √size (and ≤ f when f > 0), (m, size/m). W2 is kept
whole (b·d elements) once r ≥ max(b, d)/2, where its factors would cost more; W1 is whole unless
``decompose_both`` and r < max(a, c)/2 (then W1a W1b). A convolution splits c_in/groups and keeps its kernel in
W2 (b × d × k₁ × k₂ or b × d × k whole, or W2b ∈ R^{r × d·∏k}). Init (PEFT's ``init_weights=True``): W1 (or
W1a) = 0, the other factors Kaiming-uniform (a = √5, from ``seed``); ``"lycoris"``: W1's factors random, W2 (or
W2b) = 0.

Trainable elements per adapted layer: |W1| + |W2|, |W1| = a·c or r·(a + c), |W2| = b·d·∏k or r·(b + d·∏k)
(∏k = 1 for a linear layer). The count is not monotone in r (it drops where W2 becomes whole), so a parameter
budget solves r below the first such point (``rank_fits``). Layer types: PEFT's, ``nn.Linear``, ``nn.Conv1d``,
``nn.Conv2d`` (``use_effective_conv2d`` is ignored on 1-wide and 1×1 kernels, as PEFT does, refused on larger ones).

A ``nn.Conv1d`` whose W2 is whole (b × d × k) gets PEFT 0.21.2's layout, which is not W1 ⊗ W2 per kernel tap:
PEFT adds kernel axes to W1 for a 4-d W2 only, so ``torch.kron`` pads W1 to (1, a, c), gives (b, a·d, c·k), and
that is reshaped to (c_out, c_in/groups, k). peftzoo computes the same, so files and outputs agree with PEFT's.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.base import find_train
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter
from peftzoo.adapters.lycoris import LAYER_TYPES, DeltaLayer, LycorisCodec, LycorisConfig, check_layer, validate
from peftzoo.registry import register

INITS = (True, "lycoris")


@dataclass
class LokrConfig(LycorisConfig):
    decompose_factor: int = -1  # how d_out, d_in are split: -1 near √size; f > 0: (f, size/f) when f divides it
    decompose_both: bool = False  # also factor W1 (the small Kronecker factor) into rank-r parts when that is cheaper
    init_weights: bool | str = True  # PEFT's: True (W1 = 0) or "lycoris" (W2 = 0); either way ΔW = 0 at the start


def factorization(size: int, factor: int = -1) -> tuple[int, int]:
    """PEFT's split of ``size`` into (m, size/m): (factor, size/factor) when factor > 0 divides size, else m the
    largest divisor with m ≤ √size (and m ≤ factor when factor > 0)."""
    if factor > 0 and size % factor == 0:
        return factor, size // factor
    cap = math.isqrt(size) if factor == -1 else min(math.isqrt(size), factor)
    m = max(k for k in range(1, cap + 1) if size % k == 0)
    return m, size // m


def plan(base: nn.Module, config: LokrConfig) -> dict:
    """The factor shapes of one layer: a, b (d_out), c, d (d_in), the kernel, and which of W1, W2 are whole."""
    w = base.weight
    a, b = factorization(w.shape[0], config.decompose_factor)
    c, d = factorization(w.shape[1], config.decompose_factor)
    r = config.r
    return {"a": a, "b": b, "c": c, "d": d, "kernel": tuple(w.shape[2:]),
            "w1_whole": not (config.decompose_both and r < max(a, c) / 2), "w2_whole": r >= max(b, d) / 2}


def _whole(base: nn.Module, config: LokrConfig) -> tuple[bool, bool]:
    p = plan(base, config)
    return p["w1_whole"], p["w2_whole"]


class LokrLayer(DeltaLayer):
    """Its tensors depend on the layer's shape: ``peft_names`` is set per layer to the ones it has."""

    def __init__(self, name, base, config: LokrConfig, shared, gen):
        super().__init__(base, config)
        p, r = plan(base, config), config.r
        k = math.prod(p["kernel"])
        lycoris = config.init_weights == "lycoris"
        if p["w1_whole"]:
            self.w1 = self.factor(p["a"], p["c"], gen=gen, zero=not lycoris)
        else:
            self.w1_a = self.factor(p["a"], r, gen=gen, zero=not lycoris)
            self.w1_b = self.factor(r, p["c"], gen=gen)
        if p["w2_whole"]:
            self.w2 = self.factor(p["b"], p["d"], *p["kernel"], gen=gen, zero=lycoris)
        else:
            self.w2_a = self.factor(p["b"], r, gen=gen)
            self.w2_b = self.factor(r, p["d"] * k, gen=gen, zero=lycoris)
        mine = [n for n in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b") if n in self._parameters]
        self.peft_names = {n: f"lokr_{n}" for n in mine}

    @classmethod
    def check(cls, name, base, config):
        check_layer(name, base, config, "lokr")

    @classmethod
    def count_layer(cls, name, base, config):
        p, r = plan(base, config), config.r
        k = math.prod(p["kernel"])
        w1 = p["a"] * p["c"] if p["w1_whole"] else r * (p["a"] + p["c"])
        w2 = p["b"] * p["d"] * k if p["w2_whole"] else r * (p["b"] + p["d"] * k)
        return w1 + w2

    def roles(self):
        return {"w1": [getattr(self, n) for n in self.peft_names if n.startswith("w1")],
                "w2": [getattr(self, n) for n in self.peft_names if n.startswith("w2")]}

    def part(self, i: int) -> torch.Tensor:
        whole = self._parameters.get(f"w{i}")
        return whole if whole is not None else getattr(self, f"w{i}_a") @ getattr(self, f"w{i}_b")

    def build(self):
        w1, w2 = self.part(1), self.part(2)
        if w2.dim() == 4:  # a whole Conv2d W2 (b, d, k1, k2): W1 gets the kernel axes, as in PEFT
            w1 = w1[:, :, None, None]  # a whole Conv1d W2 (b, d, k) does not, as in PEFT (module docstring)
        return torch.kron(w1, w2.contiguous())


class LokrCodec(LycorisCodec):
    def __init__(self):
        super().__init__("LOKR")

    def to_peft(self, config):
        return {**super().to_peft(config), "decompose_factor": config.decompose_factor,
                "decompose_both": config.decompose_both, "rank_dropout_scale": False,
                "init_weights": config.init_weights}

    def from_peft(self, cfg):
        return {**super().from_peft(cfg), "decompose_factor": int(cfg.get("decompose_factor", -1)),
                "decompose_both": bool(cfg.get("decompose_both", False))}


@register
class Lokr(LayerAdapter):
    name = "lokr"
    config_cls = LokrConfig
    layer_classes = dict.fromkeys(LAYER_TYPES, LokrLayer)  # PEFT's LoKr layer types
    peft = LokrCodec()
    # LR grid: no GLUE setting in the papers; as LoHa's, above LoRA's
    info = MethodInfo(paper="Edalati et al. 2022, arXiv:2212.10650", equation="W x + (α/r)·(W1 ⊗ W2a W2b) x",
                      formula="a·c + r·(b + d), d_out = a·b, d_in = c·d", default_lr=1e-3,
                      lr_grid=(3e-4, 1e-3, 3e-3, 1e-2), budget_knob="r")

    @classmethod
    def validate(cls, config):
        validate(config, cls.name)
        if not any(config.init_weights is i or config.init_weights == i for i in INITS):
            raise ValueError(f"lokr: init_weights={config.init_weights!r} is not supported; use True (W1 = 0) or "
                             "'lycoris' (W2 = 0)")
        f = config.decompose_factor
        if not isinstance(f, int) or isinstance(f, bool) or (f != -1 and f < 1):
            raise ValueError(f"lokr: decompose_factor={f!r} must be -1 (split each size near its square root) or a "
                             "positive integer")

    @classmethod
    def rank_fits(cls, model, config):
        """False once r changes which factors of some layer are whole (W2 at r >= max(b, d)/2): from there the count
        drops, then stays, so a budget gains nothing from it."""
        one = dataclasses.replace(config, r=1)
        layers = cls.find(model, config, find_train(model, config)).values()
        return all(_whole(m, config) == _whole(m, one) for m in layers)
