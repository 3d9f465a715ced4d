"""GaLore (Zhao et al. 2024, arXiv:2403.03507): full-rank weights, Adam's state in a low-rank projection of the gradient.

    y = W x + b,   W (d_out × d_in) trained in full for every target layer, by the projected Adam of galore_adam.py:
    G_t projected onto its top-r singular subspace (refreshed every T steps), Adam moments kept there, the update
    projected back and scaled by α

r = ``r``, T = ``update_proj_gap``, α = ``scale``; the defaults are the paper's GLUE values (its README and
run_glue.py: RoBERTa-base, r = 4, α = 4, T = 500, lr 3e-5), whose runs also train every other parameter by plain
Adam: ``train_rest=True`` (full fine-tuning whose target weights take the projected Adam). The method is its
optimizer: ``make_optimizer`` builds it (peftzoo's loop, the demo and ``hf.AdapterTrainer`` call it); a plain
``torch.optim.AdamW(ad.param_groups(lr))`` would train the same tensors as full fine-tuning does.

Nothing is added to the model: the trained tensors are the model's own (``trains_model_tensors``), so
``merge``/``unmerge`` have nothing to fold, and the saved adapter is the trained tensors themselves (peftzoo's format;
no PEFT file holds full weights, so ``save_peft`` refuses). ``keep_initial`` keeps a CPU copy of them as attached
(host memory, none on the accelerator) for ``disable_adapter()`` and ``unload(merge=False)``.

Trainable elements: Σ d_out·d_in over the targets (+ the train modules, + every other parameter with
``train_rest``), whatever r: there is no budget knob for the trainable count. What r sets is the optimizer state,
``optimizer_state_count()`` (in ``summary()`` and ``report()``): r·(2·max(d_in, d_out) + min(d_in, d_out)) per
target (two projected moments and P) against Adam's 2·d_in·d_out, and 2× the elements of every unprojected tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.own import OwnTensors
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.base import AdapterConfig, count_train, find_train
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.galore_adam import GaloreAdamW, state_elements
from peftzoo.inject import LINEAR_TYPES, find_targets, resolve_targets
from peftzoo.registry import register


@dataclass
class GaloreConfig(AdapterConfig):
    r: int = 4  # rank of each target gradient's projection: the optimizer state grows linearly with it (GLUE: 4)
    update_proj_gap: int = 500  # T: steps between SVDs of the current gradient that refresh P (GLUE: 500)
    scale: float = 4.0  # α: the projected-back update is multiplied by it (GLUE: 4 at r = 4; pre-training: 0.25)
    # also train every other parameter (not in targets or train) with plain Adam: the paper's GLUE runs
    train_rest: bool = False
    keep_initial: bool = True  # a CPU copy of the trained tensors as attached: disable_adapter(), unload(merge=False)


def targets(model: nn.Module, config: GaloreConfig, train: dict) -> dict[str, nn.Module]:
    """The linear layers whose weight the projected Adam trains, checked against r."""
    found = find_targets(model, config.targets, skip=train, layer_types=(AdapterLayer,), base_types=LINEAR_TYPES,
                         method="galore")
    for name, m in found.items():
        if config.r > min(m.weight.shape):
            raise ValueError(f"galore: r={config.r} exceeds min(d_in, d_out) = {min(m.weight.shape)} at layer "
                             f"{name!r}: a gradient of that layer has no more singular directions to project on; "
                             f"use r <= {min(m.weight.shape)} or leave the layer out of targets")
    return found


def trained_tensors(model: nn.Module, config: GaloreConfig, train: dict) -> tuple[dict, dict]:
    """({name: target weight}, {name: every other parameter trained}) by parameter name in the model."""
    weights = {f"{n}.weight": m.weight for n, m in targets(model, config, train).items()}
    held = {id(p) for p in weights.values()} | {id(p) for m in train.values() for p in m.parameters()}
    rest = {n: p for n, p in model.named_parameters() if id(p) not in held} if config.train_rest else {}
    return weights, rest


@register
class Galore(OwnTensors):
    name = "galore"
    config_cls = GaloreConfig
    # default_lr: the paper's GLUE README (RoBERTa-base, r = 4, α = 4); lr_grid: its scripts sweep 1e-5..3e-5 (full
    # fine-tuning's grid, as its update is full-rank); no budget knob: r sets the optimizer state, not the trainable
    # count, so one point per target set
    info = MethodInfo(paper="Zhao et al. 2024, arXiv:2403.03507",
                      equation="W x + b, W trained by Adam on its gradient projected to rank r (refreshed every T steps, × α)",
                      formula="d_out·d_in", default_lr=3e-5, lr_grid=(1e-5, 3e-5, 1e-4, 3e-4))

    def __init__(self, model: nn.Module, config: GaloreConfig):
        super().__init__(model, config)
        config.targets = resolve_targets(model, config.targets)  # None: the model's default, recorded
        self.validate(config)
        train = find_train(model, config)
        self.weights, self.rest = trained_tensors(model, config, train)
        self.freeze_base(train)
        self.tensors = {**self.weights, **self.rest}
        self.keep(config.keep_initial)
        for t in self.tensors.values():
            t.requires_grad_(True)

    @classmethod
    def validate(cls, config: GaloreConfig) -> None:
        for k in ("r", "update_proj_gap"):
            v = getattr(config, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"galore: {k}={v!r} must be a positive integer")
        if not config.scale > 0:
            raise ValueError(f"galore: scale={config.scale!r} must be > 0 (α multiplies every projected update)")

    @classmethod
    def count(cls, model, config):
        cls.validate(config)
        train = find_train(model, config)
        weights, rest = trained_tensors(model, config, train)
        return sum(t.numel() for t in (*weights.values(), *rest.values())) + count_train(train)

    def roles(self):
        return {"weight": list(self.weights.values()), "rest": list(self.rest.values())}

    # ---- the optimizer: the method itself ----------------------------------------------------------------------
    def make_optimizer(self, lr: float, /, weight_decay: float = 0.0, optimizer_cls=None, **kwargs):
        """GaLore's projected Adam over the target weights, plain Adam (same arithmetic) over the other trained
        tensors. ``optimizer_cls`` may only be AdamW (a Trainer's ``adamw_torch``/``adamw_torch_fused``): its
        ``betas`` and ``eps`` are used; ``lr`` is in the groups; ``fused``/``foreach`` only pick torch's kernels."""
        if optimizer_cls not in (None, torch.optim.AdamW):
            raise ValueError(f"galore: its optimizer is GaLore's projected Adam, not {optimizer_cls.__name__}: train "
                             "it with TrainingArguments(optim='adamw_torch') (betas and eps are taken from there) "
                             "or peftzoo's own loop")
        unknown = sorted(set(kwargs) - {"lr", "betas", "eps", "fused", "foreach"})
        if unknown:
            raise ValueError(f"galore: optimizer setting(s) {unknown} are not GaLore's; it takes betas and eps")
        c = self.config
        plain = [*self.rest.values(), *(p for m in self.train_modules.values() for p in m.parameters())]
        groups = [{"params": list(self.weights.values()), "rank": c.r, "update_proj_gap": c.update_proj_gap,
                   "scale": c.scale}, {"params": [p for p in plain if p.requires_grad]}]
        return GaloreAdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay,
                           **{k: kwargs[k] for k in ("betas", "eps") if k in kwargs})

    def optimizer_state_count(self) -> int:
        """Elements of the projected Adam's state once it has stepped: moments and P per target, moments otherwise."""
        own = {id(w) for w in self.weights.values()}
        return (sum(state_elements(w.shape, self.config.r) for w in self.weights.values())
                + sum(state_elements(p.shape, None) for p in self.trainable_parameters() if id(p) not in own))

    def summary(self) -> dict:
        return {**super().summary(), "optimizer_state": self.optimizer_state_count()}

    def report(self) -> dict:
        return {"optimizer_state": self.optimizer_state_count()}

    def save_peft(self, path):
        raise NotImplementedError("galore has no Hugging Face PEFT equivalent: it trains the target layers' full "
                                  "weights, which no PEFT adapter file holds. Save it with ad.save(path) (peftzoo's "
                                  "format: the trained weights) and load it with peftzoo.load(model, path), or "
                                  "ad.unload(merge=True).save_pretrained(path) for a plain checkpoint")

