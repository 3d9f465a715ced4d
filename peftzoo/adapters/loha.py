"""LoHa: low-rank Hadamard product (Hyeon-Woo et al. 2022, FedPara, arXiv:2108.06098; LyCORIS), as PEFT 0.21.2.

    ΔW = (α/r) · (W1a W1b) ⊙ (W2a W2b),   W1a, W2a ∈ R^{d_out×r},  W1b, W2b ∈ R^{r×d_in}
    y  = (W + ΔW) x + b

The elementwise product of two rank-r matrices has rank up to r², from the elements of two rank-r LoRAs.
Init (PEFT's): W1a, W1b, W2a Kaiming-uniform (a = √5; drawn in that order from ``seed``), W2b = 0, so ΔW = 0 at
the start. A convolution's kernel is read as the c_out × (c_in/groups · ∏k) matrix (PEFT's default,
``use_effective_conv2d=False``); the shared forward, merge and refusals are in lycoris.py.

Trainable elements per adapted layer: 2r·(d_in + d_out); a convolution 2r·(c_out + c_in/groups · ∏k).
"""
from __future__ import annotations

from dataclasses import dataclass

from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter
from peftzoo.adapters.lycoris import LAYER_TYPES, DeltaLayer, LycorisCodec, LycorisConfig, check_layer, validate
from peftzoo.registry import register


@dataclass
class LohaConfig(LycorisConfig):
    pass


class LohaLayer(DeltaLayer):
    peft_names = {"w1_a": "hada_w1_a", "w1_b": "hada_w1_b", "w2_a": "hada_w2_a", "w2_b": "hada_w2_b"}

    def __init__(self, name, base, config: LohaConfig, shared, gen):
        super().__init__(base, config)
        d_out, d_in = self.flat_shape(base)
        r = config.r
        self.w1_a = self.factor(d_out, r, gen=gen)
        self.w1_b = self.factor(r, d_in, gen=gen)
        self.w2_a = self.factor(d_out, r, gen=gen)
        self.w2_b = self.factor(r, d_in, gen=gen, zero=True)

    @classmethod
    def check(cls, name, base, config):
        check_layer(name, base, config, "loha")

    @classmethod
    def count_layer(cls, name, base, config):
        return 2 * config.r * sum(cls.flat_shape(base))

    @classmethod
    def rank(cls, config):
        return config.r

    def roles(self):
        return {"w1": [self.w1_a, self.w1_b], "w2": [self.w2_a, self.w2_b]}

    def build(self):
        return (self.w1_a @ self.w1_b) * (self.w2_a @ self.w2_b)


@register
class Loha(LayerAdapter):
    name = "loha"
    config_cls = LohaConfig
    layer_classes = dict.fromkeys(LAYER_TYPES, LohaLayer)  # PEFT's LoHa layer types
    peft = LycorisCodec("LOHA")
    # LR grid: no GLUE setting in the papers; ΔW's gradient to one pair is scaled by the other (small) product, so
    # the grid sits a half-decade above LoRA's
    info = MethodInfo(paper="Hyeon-Woo et al. 2022, arXiv:2108.06098",
                      equation="W x + (α/r)·((W1a W1b) ⊙ (W2a W2b)) x", formula="2r·(d_in + d_out)",
                      default_lr=1e-3, lr_grid=(3e-4, 1e-3, 3e-3, 1e-2), budget_knob="r")

    @classmethod
    def validate(cls, config):
        validate(config, cls.name)
