"""Delta-LoRA (Zi et al. 2023, arXiv:2309.02411): LoRA whose frozen weight also moves, by the change of B A.

    y = W_t x + b + s · B A x                                 (LoRA's forward, s = α/r, no dropout)
    after each optimizer step t (Algorithm 1, t = 0, 1, …):  if t > K:  W_{t+1} = W_t + λ · s · (B_{t+1}A_{t+1} − B_t A_t)

λ = ``update_ratio`` and K = ``start_steps`` (the paper's setting: λ = 2, K = 500). The paper removes the low-rank
branch's dropout (its argument: only then is the gradient of B A that of W), so ``dropout > 0`` is refused. W gets
no gradient and no optimizer state: it moves in place in ``on_step`` (called with step = t + 1 after
``optimizer.step()``), from copies of the previous A, B; nothing else changes in the forward or the count.

Memory: per layer, the previous A, B and the anchor A, B (below): 2·r·(d_in + d_out) elements beside the trained
r·(d_in + d_out), plus one transient d_out × d_in product per layer while ``on_step`` runs (one layer at a time).

Saved adapter (peftzoo's format only; no PEFT file can hold a moved W): the moves telescope,
    W_T = W_0 + λ·s·(B_T A_T − B_a A_a),   B_a A_a = the product when W first moved (after step K + 1),
so the file holds A, B and the anchor A_a, B_a (2x LoRA's file) and ``load`` rebuilds W_T from the pretrained W_0:
equal to the trained model up to float rounding of the per-step sums. The same identity gives the forward past the
warm-up as W_0 + (1 + λ)·s·B A − λ·s·B_a A_a: LoRA's value with its scale raised by (1 + λ) less a constant, while
A and B get the gradients of scale s. Merging adds s·B A to the moved W, as LoRA.

Trainable elements per adapted layer: r · (d_in + d_out), as LoRA.

Checked against the sources readable offline (Dec 2026; the paper's PDF itself was not): the paper's Algorithm 1,
as quoted verbatim in a third-party reimplementation's docstring (github.com/hhnqqq/MyTransformers,
common/lora_modules/delta_lora.py, commit f8665ca), reads: inputs η, weight decay β, T, r, scale factor α, start
steps K, update ratio λ; A Kaiming-initialised, B = 0; for t = 0..T−1: the optimizer (AdamW) steps A and B, then
"if t > K: W(t+1) ← W(t) + λ·(α/r)·(A(t+1)B(t+1) − A(t)B(t))" (the paper writes the product A B for our B A). So:
the delta is of the product (not the product of the factors' deltas), it is taken after the optimizer step, the
scale α/r enters, and the first move is at t = K + 1 by that step's change alone: as this file does (the tests check
each). The same quote carries the sentence "We use update ratio λ=2 and set start steps K=500 for Delta-LoRA": the
defaults here. Whether the GLUE/RoBERTa runs used exactly these (or per-task values) is not established: the paper's
per-task hyperparameter tables were not in any readable source. Dropout removed from the low-rank branch: the
paper's summaries (e.g. sciencestack.ai/paper/2309.02411) say so; the exact wording of the paper was not read. No
official code was found (searched GitHub code, issues, docs and pages); the reimplementations found are unofficial.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from peftzoo.adapters.layered import LayerAdapter
from peftzoo.adapters.lora import Lora, LoraConfig, LoraLayer
from peftzoo.adapters.lora_init import check_init
from peftzoo.inject import LINEAR_TYPES
from peftzoo.registry import register


@dataclass
class DeltaLoraConfig(LoraConfig):
    update_ratio: float = 2.0  # λ: W moves by λ·s·Δ(B A) each step (the paper: 2)
    start_steps: int = 500  # K: W starts moving after optimizer step K + 1 (Algorithm 1's t > K; the paper: 500)


class DeltaLoraLayer(LoraLayer):
    """LoRA's linear layer with the previous and the anchor factors kept as buffers (not in the state_dict)."""
    additive = False  # every step writes into the frozen weight: runs cannot share it

    def __init__(self, name, base, config: DeltaLoraConfig, shared, gen):
        super().__init__(name, base, config, shared, gen)
        self.ratio = config.update_ratio
        for k in ("prev_A", "prev_B", "anchor_A", "anchor_B"):
            self.register_buffer(k, getattr(self, k[-1]).detach().clone(), persistent=False)

    def state_tensors(self):
        return {"A": self.A, "B": self.B, "anchor_A": self.anchor_A, "anchor_B": self.anchor_B}

    def after_load(self):
        self.prev_A.copy_(self.A.detach())
        self.prev_B.copy_(self.B.detach())

    def _moved_by(self, a, b, a0, b0) -> torch.Tensor:
        """λ·s·(B A − B0 A0) in W's (d_out, d_in) layout."""
        return torch.addmm(b @ a, b0, a0, alpha=-1).mul_(self.ratio * self.scaling)

    @torch.no_grad()
    def step(self, move: bool, first: bool) -> None:
        """After an optimizer step: move W by λ·s·(B A − B_prev A_prev) when ``move``; remember A, B."""
        if move:
            if first:
                self.anchor_A.copy_(self.prev_A)
                self.anchor_B.copy_(self.prev_B)
            self._add_to_weight(self._moved_by(self.A, self.B, self.prev_A, self.prev_B))
        self.after_load()

    @torch.no_grad()
    def move_from_anchor(self) -> None:
        """W_0 → W_T = W_0 + λ·s·(B A − B_a A_a): the trained W, rebuilt from the loaded factors."""
        self._add_to_weight(self._moved_by(self.A, self.B, self.anchor_A, self.anchor_B))


@register
class DeltaLora(LayerAdapter):
    name = "deltalora"
    config_cls = DeltaLoraConfig
    layer_classes = dict.fromkeys(LINEAR_TYPES, DeltaLoraLayer)  # the paper's (and peftzoo's) linear layers
    # LR grid: the paper's GLUE learning rates were not in the sources reachable offline: LoRA's (the update is LoRA's)
    info = Lora.info.replace(paper="Zi et al. 2023, arXiv:2309.02411",
                             equation="W x + (α/r)·B A x; after step t > K: W += λ(α/r)·Δ(B A)")

    def __init__(self, model, config):
        super().__init__(model, config)
        self.moving, self.steps_seen, self._forwards = False, 0, 0
        # warns when training runs and on_step() never comes (W would never move: plain LoRA); removed by on_step()
        self._watch = next(iter(self.layers.values())).register_forward_pre_hook(self._count_forward)

    @classmethod
    def validate(cls, config):
        check_init(config.init_lora_weights)
        if config.dropout:
            raise ValueError(f"deltalora: dropout={config.dropout} is refused: Delta-LoRA removes the low-rank "
                             "branch's dropout (Zi et al. 2023), without which W's move is not its gradient's; use 0")
        if not (isinstance(config.start_steps, int) and config.start_steps >= 0):
            raise ValueError(f"start_steps={config.start_steps} must be an integer >= 0")
        if config.update_ratio < 0:
            raise ValueError(f"update_ratio={config.update_ratio} must be >= 0 (0: plain LoRA)")

    def _count_forward(self, module, args):
        if module.training and torch.is_grad_enabled():
            self._forwards += 1
            if self._forwards > self.config.start_steps + 10:
                warnings.warn(f"deltalora: {self._forwards} training forward passes and on_step() was never "
                              "called: W never moves (this is plain LoRA). Call ad.on_step(step) after "
                              "optimizer.step(), or train with peftzoo.bench.train.", stacklevel=2)
                self._watch.remove()

    def on_step(self, step: int) -> None:
        self._watch.remove()
        if any(layer.merged for layer in self.layers.values()):
            raise RuntimeError("deltalora: on_step() on a merged adapter; call ad.unmerge() before training")
        move = step - 1 > self.config.start_steps  # Algorithm 1's t > K, with step = t + 1
        for layer in self.layers.values():
            layer.step(move, first=move and not self.moving)
        self.moving = self.moving or move
        self.steps_seen += 1

    def extra_state(self):
        return {"w_moving": self.moving}  # False: W never moved, the anchors mean nothing

    def load_extra_state(self, extra):
        self.moving = bool(extra.get("w_moving", False))

    def load_state(self, tensors):
        """Load A, B and the anchors, then move the (pretrained) W to where training left it."""
        super().load_state(tensors)
        if self.moving:
            for layer in self.layers.values():
                layer.move_from_anchor()

    def report(self):
        return {"w_moving": self.moving, "steps_seen": self.steps_seen}

    def save_peft(self, path):
        raise NotImplementedError("deltalora has no Hugging Face PEFT equivalent: training moved the frozen W, "
                                  "which a PEFT LoRA file cannot hold (it would load as plain LoRA on the "
                                  "pretrained W). Save it with ad.save(path) and load it with peftzoo.load")
