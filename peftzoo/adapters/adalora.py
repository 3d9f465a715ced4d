"""AdaLoRA: adaptive budget allocation (Zhang et al. 2023, arXiv:2303.10512).

    y = W x + b + (α / r_init) · P (Λ ⊙ keep) Q x,   P = B ∈ R^{d_out×r}, Λ = E ∈ R^{r}, Q = A ∈ R^{r×d_in}
    extra loss  = w_orth · mean over layers of (‖QQᵀ − I‖_F, ‖PᵀP − I‖_F)
    importance  I(p) = |p · ∇p|, smoothed Ī = β1 Ī + (1−β1) I, uncertainty Ū = β2 Ū + (1−β2)|I − Ī|,
    triplet score S_i = Ī·Ū of Λ_i + mean of row Q_i + mean of column P_i;
    budget b(t) = b_T + (b_0 − b_T)(1 − (t − t_i)/(T − t_f − t_i))³ between tinit and T − tfinal;
    every deltaT steps the lowest-scoring triplets are masked (Λ_i ← 0) down to b(t); at T − tfinal the
    pattern is fixed and enforced in the forward pass. A schedule left unset is derived from T (``schedule_for``):
    tinit = 15% and tfinal = 45% of T, deltaT = T/500, the proportions of the paper's GLUE scripts.

Learning rate: with PEFT's (and the paper's) initialisation, Λ = 0 and P, Q ~ N(0, 0.02), and PEFT's default
α/r_init = 8/12, ΔW = (α/r)·P diag(Λ) Q grows about two orders of magnitude more slowly than LoRA's (r=8, α=16) at
the same AdamW LR: only Λ (r numbers per layer) starts the update, and P, Q get gradients only once Λ ≠ 0. Measured
on all-MiniLM-L6-v2, SST-2, 63 steps (results/adalora/sst2_ours_vs_peft.json): ‖ΔW‖/‖W‖ 9.6e-4 vs LoRA's 0.12 at
LR 3e-3; AdaLoRA stays at the head-only level up to LR 1e-2 and learns from 3e-2 (peftzoo and PEFT alike). The
paper's GLUE runs (~3,400-50,000 steps, α/r 2-16) do not meet this; short runs need an LR ~10-30x LoRA's.

The reallocation runs in ``on_step`` and the regulariser is ``extra_loss``: the project's training loop calls both.
A loop that forgets ``on_step`` gets a warning, not silently plain LoRA.

Trainable elements per adapted layer: r_init · (d_in + d_out + 1); after pruning, the effective count is
Σ kept triplets · (d_in + d_out + 1) (``summary()["effective"]``).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.adapters.base import AdapterConfig
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.fused import lowrank_linear
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter, LayerCodec
from peftzoo.inject import LINEAR_TYPES
from peftzoo.io import PEFT_PREFIX
from peftzoo.registry import register


@dataclass
class AdaLoraConfig(AdapterConfig):
    init_r: int = 12  # starting rank of every layer: the initial budget is init_r per layer
    target_r: int = 8  # average rank left after pruning: the final budget is target_r per layer
    alpha: float = 8.0  # the update is scaled by alpha / init_r (PEFT's lora_alpha)
    # The schedule, in steps. None (the default) derives it from the run's total steps T (``schedule_for``), so a
    # short run gets the same phases as a long one. Why: fixed counts cannot fit every run length, and PEFT's
    # defaults (0, 0, 1) prune from the very first step on importance scores that are still noise (Λ starts at 0,
    # so |Λ·∇Λ| = 0 and P, Q get no gradient until Λ moves) and never train a fixed final pattern.
    tinit: int | None = None  # warm-up steps before any pruning (None: 15% of T; paper's GLUE scripts: 12-18%)
    tfinal: int | None = None  # last steps train the fixed final pattern (None: 45% of T; paper's scripts: 43-52%)
    deltaT: int | None = None  # steps between two reallocations (None: T/500, at least 1; paper's: 1 to T/505)
    beta1: float = 0.85  # EMA of the sensitivity
    beta2: float = 0.85  # EMA of the uncertainty
    orth_reg_weight: float = 0.5  # weight of the orthogonality regulariser (extra_loss)
    total_steps: int | None = None  # schedule length; the training loop sets it via set_total_steps
    dropout: float = 0.0  # dropout on the adapter's input only
    rank_pattern: dict | None = None  # per-layer kept triplets of a pruned adapter being loaded


# Fractions of the total steps T, from the AdaLoRA authors' DeBERTaV3-base GLUE scripts (github.com/QingruZhang/
# AdaLoRA, NLU/scripts; T = ceil(train / 32) x epochs): SST-2 tinit 6,000 / tfinal 22,000 / deltaT 100 of 50,520
# steps; CoLA 800 / 3,500 / 10 of 6,700; STS-B 800 / 2,000 / 10 of 4,500; RTE 600 / 1,800 / 1 of 3,900;
# MRPC 600 / 1,800 / 1 of 3,450.
TINIT_FRACTION, TFINAL_FRACTION, DELTAT_FRACTION = 0.15, 0.45, 1 / 500


def schedule_for(config: AdaLoraConfig, total_steps: int | None) -> dict:
    """The (tinit, tfinal, deltaT) a run of ``total_steps`` uses: the config's values, the unset ones derived from
    ``total_steps`` (with no total known, unset means 0, 0, 1)."""
    t = total_steps or 0
    derived = {"tinit": int(TINIT_FRACTION * t), "tfinal": int(TFINAL_FRACTION * t),
               "deltaT": max(1, int(DELTAT_FRACTION * t))}
    return {k: derived[k] if getattr(config, k) is None else getattr(config, k) for k in derived}


class AdaLoraLayer(AdapterLayer):
    peft_names = {"A": "lora_A", "B": "lora_B", "E": "lora_E"}

    def __init__(self, name, base, config: AdaLoraConfig, shared, gen):
        super().__init__(base, config.dropout)
        w = base.weight
        r = self.rank_of(name, config)
        kw = dict(dtype=w.dtype, device=w.device)
        self.A = nn.Parameter(torch.randn(r, self.in_features, generator=gen).mul_(0.02).to(**kw))
        self.B = nn.Parameter(torch.randn(self.out_features, r, generator=gen).mul_(0.02).to(**kw))
        self.E = nn.Parameter(torch.zeros(r, 1, **kw))
        self.register_buffer("keep", torch.ones(r, 1, **kw))  # 1 = triplet kept, 0 = pruned
        self.enforce = config.rank_pattern is not None  # forward multiplies by keep once the pattern is final
        self.scaling = (config.alpha if config.alpha > 0 else config.init_r) / (config.init_r + 1e-5)

    @staticmethod
    def rank_of(name, config):
        pattern = (config.rank_pattern or {}).get(name)
        return int(sum(pattern)) if pattern is not None else config.init_r

    @classmethod
    def count(cls, name, in_features, out_features, config):
        return cls.rank_of(name, config) * (in_features + out_features + 1)

    @classmethod
    def rank(cls, config):
        return config.init_r

    def state_tensors(self):
        return {"A": self.A, "B": self.B, "E": self.E, "keep": self.keep}

    def roles(self):
        return {"A": [self.A], "B": [self.B], "E": [self.E]}

    def lam(self):
        return self.E * self.keep if self.enforce else self.E

    def delta_weight(self):
        return self.B @ (self.A * self.lam()) * self.scaling

    def adapted(self, x):
        if self.dropout is None:
            return lowrank_linear(x, self, self.A * self.lam(), self.B, self.scaling)
        return self.base(x) + (self.dropout(x) @ (self.A * self.lam()).t() @ self.B.t()) * self.scaling

    def peft_state(self):
        idx = self.keep.view(-1).bool()
        return {"lora_A": self.A[idx].detach(), "lora_B": self.B[:, idx].detach(), "lora_E": self.lam()[idx].detach()}


def orthogonality(factors) -> torch.Tensor:
    """‖A Aᵀ − I‖_F or ‖Bᵀ B − I‖_F of every (matrix, side) in ``factors`` ("rows": A Aᵀ; "cols": Bᵀ B), in
    their order; the matrices of one shape and side go through one batched product (a few ops per group instead of
    several per matrix, forward and backward). The same products as matrix by matrix: for r ∈ {2, 12, 96} × d ∈
    {256, 384, 1024} (96 × 1024 excepted) value and gradient were bit for bit the per-matrix loop's, at 1 and 2
    threads (tiny or large ones may round apart)."""
    groups: dict = {}
    for i, (f, side) in enumerate(factors):
        groups.setdefault((f.shape, side, f.dtype, f.device), []).append(i)
    norms, order = [], []
    for (shape, side, dtype, device), idx in groups.items():
        f = torch.stack([factors[i][0] for i in idx])
        gram = torch.bmm(f, f.transpose(1, 2)) if side == "rows" else torch.bmm(f.transpose(1, 2), f)
        norms.append(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[-1], dtype=dtype, device=device)))
        order += idx
    out = torch.cat(norms)
    if order != sorted(order):
        out = out[torch.tensor(order, device=out.device).argsort()]
    return out


def _flat_state(ps, avg: dict, unc: dict) -> list:
    """Zero buffers for Ī and Ū, one flat pair per (dtype, device) of ``ps``: [(its tensors, Ī, Ū)]; ``avg`` and
    ``unc`` get each tensor's views into them, keyed by id."""
    groups: dict = {}
    for p in ps:
        groups.setdefault((p.dtype, p.device), []).append(p)
    out = []
    for (dtype, device), group in groups.items():
        flat = [torch.zeros(sum(p.numel() for p in group), dtype=dtype, device=device) for _ in range(2)]
        for buf, views in zip(flat, (avg, unc)):
            for p, v in zip(group, buf.split([p.numel() for p in group])):
                views[id(p)] = v.view(p.shape)
        out.append((group, *flat))
    return out


class AdaLoraCodec(LayerCodec):
    """PEFT's ADALORA files: the schedule resolved to numbers, and the ranks kept as ``rank_pattern``."""

    peft_type = "ADALORA"

    def to_peft(self, c):
        s = schedule_for(c, c.total_steps)  # PEFT needs the resolved numbers
        total = c.total_steps or s["tinit"] + s["tfinal"] + 1
        return {"init_r": c.init_r, "target_r": c.target_r, "lora_alpha": c.alpha, "tinit": s["tinit"],
                "tfinal": s["tfinal"], "deltaT": s["deltaT"], "beta1": c.beta1, "beta2": c.beta2,
                "orth_reg_weight": c.orth_reg_weight, "total_step": total, "lora_dropout": c.dropout}

    def fields(self, ad):
        """The config, and the ranks training kept (None: every rank kept)."""
        if all(bool(layer.keep.all()) for layer in ad.layers.values()):
            return {**super().fields(ad), "rank_pattern": None}
        return {**super().fields(ad), "rank_pattern": {f"{n}.lora_E": [bool(v) for v in layer.keep.view(-1).tolist()]
                                                       for n, layer in ad.layers.items()}}

    def from_peft(self, p):
        pattern = p.get("rank_pattern")
        if pattern:
            pattern = {k.removeprefix(PEFT_PREFIX).removesuffix(".lora_E").replace(".default", ""): v
                       for k, v in pattern.items()}
        return {"init_r": int(p.get("init_r", 12)), "target_r": int(p.get("target_r", 8)),
                "alpha": float(p.get("lora_alpha", 8)), "tinit": int(p.get("tinit", 0)),
                "tfinal": int(p.get("tfinal", 0)), "deltaT": int(p.get("deltaT", 1)),
                "beta1": float(p.get("beta1", 0.85)), "beta2": float(p.get("beta2", 0.85)),
                "orth_reg_weight": float(p.get("orth_reg_weight", 0.5)), "total_steps": p.get("total_step"),
                "dropout": float(p.get("lora_dropout", 0.0)), "rank_pattern": pattern or None}


@register
class AdaLora(LayerAdapter):
    name = "adalora"
    config_cls = AdaLoraConfig
    layer_classes = dict.fromkeys(LINEAR_TYPES, AdaLoraLayer)  # PEFT adapts only linear layers with AdaLoRA
    peft = AdaLoraCodec()
    # LR: measured (results/adalora): with Λ = 0 and P, Q ~ N(0, 0.02) ΔW grows ~100x slower than LoRA's, so short
    # runs need 10-30x LoRA's LR (PEFT's AdaLoRA alike); the paper's long GLUE runs used 5e-4..1.2e-3.
    # paper setting: b(0) = 1.5 b(T), the paper's ratio (PEFT's defaults)
    info = MethodInfo(paper="Zhang et al. 2023, arXiv:2303.10512",
                      equation="W x + (α/r)·P diag(Λ) Q x, ranks pruned by importance",
                      formula="r_init·(d_in + d_out + 1)", default_lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2, 1e-1),
                      budget_knob="target_r", paper_hparams={"init_r": 12, "target_r": 8})

    @classmethod
    def budget_kwargs(cls, value):
        return {"target_r": value, "init_r": value + max(1, value // 2)}  # start 1.5x wider, prune to the budget

    @classmethod
    def budget_count(cls, model, config):
        """AdaLoRA is matched on its final budget (target_r per layer), the count it ends training with."""
        return cls.count(model, dataclasses.replace(config, init_r=config.target_r))

    def __init__(self, model, config):
        super().__init__(model, config)
        self.avg_ipt, self.avg_unc = {}, {}
        self.steps_seen, self.extra_loss_calls, self._warned = 0, 0, False
        self.init_bgt = sum(layer.A.shape[0] for layer in self.layers.values())
        self.target_bgt = config.target_r * len(self.layers)
        first = next(iter(self.layers.values()))
        # watches for a loop that never calls on_step(); removed once on_step() runs or the warning is given
        self._watch = first.register_forward_pre_hook(self._count_forward)

    @classmethod
    def validate(cls, c):
        if not (isinstance(c.init_r, int) and c.init_r >= 1):
            raise ValueError(f"init_r={c.init_r} must be a positive integer")
        if not 1 <= c.target_r <= c.init_r:
            raise ValueError(f"target_r={c.target_r} must be in [1, init_r={c.init_r}]: AdaLoRA only prunes ranks")
        for k, lo in (("tinit", 0), ("tfinal", 0), ("deltaT", 1)):
            v = getattr(c, k)
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
                raise ValueError(f"{k}={v!r}: need {k} >= {lo} (an integer, or None to derive it from the "
                                 "total steps)")
        if not (0 < c.beta1 < 1 and 0 < c.beta2 < 1):
            raise ValueError(f"beta1={c.beta1}, beta2={c.beta2} must lie in (0, 1)")
        if c.orth_reg_weight < 0:
            raise ValueError(f"orth_reg_weight={c.orth_reg_weight} must be >= 0")
        s = schedule_for(c, c.total_steps)
        if c.total_steps is not None and c.total_steps <= s["tinit"] + s["tfinal"]:
            raise ValueError(f"total_steps={c.total_steps} leaves no budgeting phase: it must exceed "
                             f"tinit + tfinal = {s['tinit'] + s['tfinal']}")

    def set_total_steps(self, total_steps):
        """The schedule's length, kept on the adapter: it takes a copy of its config carrying it (checked first), so
        a config object the caller holds is never changed."""
        cfg = dataclasses.replace(self.config, total_steps=total_steps)
        self.validate(cfg)
        self.config = cfg

    def _count_forward(self, module, args):
        if module.training and torch.is_grad_enabled() and not self._warned:
            self._forwards = getattr(self, "_forwards", 0) + 1
            s = self.schedule()
            if self.steps_seen == 0 and self._forwards > s["tinit"] + 10 * s["deltaT"]:
                self._warned = True
                warnings.warn(f"AdaLoRA: {self._forwards} training forward passes and on_step() was never called: "
                              "ranks are not being reallocated (this is plain SVD-LoRA). Call ad.on_step(step) "
                              "after optimizer.step() and add ad.extra_loss() to the loss, or train with "
                              "peftzoo.bench.train.", stacklevel=2)
                self._watch.remove()

    def extra_loss(self):
        self.extra_loss_calls += 1
        if self.config.orth_reg_weight == 0:
            return None
        factors = [f for layer in self.layers.values() for f in ((layer.A, "rows"), (layer.B, "cols"))]
        return self.config.orth_reg_weight * orthogonality(factors).mean()

    # ---- the rank allocator ------------------------------------------------------------------------------------
    def schedule(self) -> dict:
        """This run's resolved (tinit, tfinal, deltaT): see ``schedule_for``."""
        return schedule_for(self.config, self.config.total_steps)

    def budget(self, step: int) -> tuple[int, bool]:
        total, s = self.config.total_steps, self.schedule()
        tinit, tfinal = s["tinit"], s["tfinal"]
        if step <= tinit:
            return self.init_bgt, False
        if step > total - tfinal:
            return self.target_bgt, True
        mul = 1 - (step - tinit) / (total - tfinal - tinit)
        return int((self.init_bgt - self.target_bgt) * mul ** 3 + self.target_bgt), step % s["deltaT"] == 0

    @torch.no_grad()
    def _update_importance(self):
        """Ī ← β1 Ī + (1−β1)|p·∇p|,  Ū ← β2 Ū + (1−β2)|I − Ī| for every adapter tensor at once: the tensors of one
        dtype and device are updated as one flat buffer (``avg_ipt[id(p)]`` / ``avg_unc[id(p)]`` are views into it),
        a few ops per step instead of a few per tensor."""
        b1, b2 = self.config.beta1, self.config.beta2
        ps = self.adapter_parameters()
        if any(p.grad is None for p in ps):
            raise RuntimeError("AdaLoRA on_step() found no gradients: call it after backward() and "
                               "optimizer.step(), before zero_grad()")
        if not self.avg_ipt:
            self._flat = _flat_state(ps, self.avg_ipt, self.avg_unc)
        for group, avg, unc in self._flat:
            ipt = torch.cat([p.reshape(-1) for p in group]).mul_(torch.cat([p.grad.reshape(-1) for p in group]))
            ipt.abs_()
            avg.mul_(b1).add_(ipt, alpha=1 - b1)
            unc.mul_(b2).add_(ipt.sub_(avg).abs_(), alpha=1 - b2)

    def _score(self, p):
        return self.avg_ipt[id(p)] * self.avg_unc[id(p)]

    @torch.no_grad()
    def _mask_to_budget(self, budget: int):
        scores = {n: (self._score(l.E).view(-1) + self._score(l.A).mean(1) + self._score(l.B).mean(0))
                  for n, l in self.layers.items()}
        allsc = torch.cat([s.double().cpu() for s in scores.values()])  # exact for every dtype (float() rounded fp64)
        k = self.init_bgt - budget
        if k <= 0:
            return
        threshold = torch.kthvalue(allsc, min(k, allsc.numel())).values.item()
        for n, layer in self.layers.items():
            keep = (scores[n].double() > threshold).to(layer.keep.dtype).view(-1, 1)
            layer.keep.copy_(keep)
            layer.E.mul_(keep)

    def on_step(self, step: int) -> None:
        c = self.config
        if c.total_steps is None:
            raise RuntimeError("AdaLoRA needs the schedule length: ad.set_total_steps(n) before training "
                               "(peftzoo's training loop does this)")
        self._watch.remove()  # the loop calls on_step(): nothing left to watch for
        if self.steps_seen >= 10 and self.extra_loss_calls == 0 and c.orth_reg_weight > 0 and not self._warned:
            self._warned = True
            warnings.warn("AdaLoRA: on_step() runs but extra_loss() was never added to the loss", stacklevel=2)
        self.steps_seen += 1
        final = c.total_steps - self.schedule()["tfinal"]
        if step < final:
            self._update_importance()
            budget, mask = self.budget(step)
            if mask:
                self._mask_to_budget(budget)
        elif step == final or not all(layer.enforce for layer in self.layers.values()):
            if not self.avg_ipt:
                self._update_importance()
            self._mask_to_budget(self.target_bgt)
            for layer in self.layers.values():
                layer.enforce = True
            self.avg_ipt, self.avg_unc = {}, {}

    # ---- reporting and files --------------------------------------------------------------------------------------
    def ranks(self) -> dict[str, int]:
        return {n: int(layer.keep.sum().item()) for n, layer in self.layers.items()}

    def effective_count(self):
        return sum(int(l.keep.sum()) * (l.in_features + l.out_features + 1) for l in self.layers.values())

    def summary(self):
        return {**super().summary(), "initial_budget": self.init_bgt, "rank_budget_now": sum(self.ranks().values()),
                "target_budget": self.target_bgt}

    def report(self):
        return {"adalora_ranks": self.ranks()}

    def extra_state(self):
        return {"enforce": {n: l.enforce for n, l in self.layers.items()}, "ranks": self.ranks()}

    def load_extra_state(self, extra):
        for n, flag in extra.get("enforce", {}).items():
            self.layers[n].enforce = flag
