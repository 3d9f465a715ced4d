"""Random-subspace training: the intrinsic-dimension method, DID and SAID, as Adapters over a whole model.

    DID  (Li et al. 2018):         θ = θ0 + P z,                         z ∈ R^d
    SAID (Aghajanyan et al. 2020): θ_i = θ0,i + λ_i · (P z)_i,           z ∈ R^{d−m}, λ ∈ R^m (one per tensor)

P is a Fastfood projection (``fastfood.py``) over the D base parameters that move (all except the ``train``
modules, which are trained in full as in every method). The model is reparametrised with
``torch.func.functional_call``: no attribute is deleted or re-set, θ0 stays the model's own tensors (no copy).

Trainable elements: d. For SAID the m per-tensor scales λ are counted inside d (as in Aghajanyan et al.), so
z has d − m entries. With d = 0 the model is the base model. z starts at 0 and λ at 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from peftzoo.adapters import lifecycle
from peftzoo.adapters.base import Adapter, AdapterConfig, count_train, find_train
from peftzoo.adapters.lifecycle import AdapterModule
from peftzoo.adapters.fastfood import DenseProjection, Fastfood
from peftzoo.adapters.info import MethodInfo
from peftzoo.io import copy_checked
from peftzoo.registry import register


@dataclass
class SubspaceConfig(AdapterConfig):
    targets: object = "all"  # unused: the subspace spans every base parameter outside ``train``
    d: int = 1000  # subspace dimension = trainable elements (SAID: including its per-tensor scales)
    projection: str = "fastfood"  # "fastfood" (O(D) memory) or "dense" (explicit D × d, small models only)


class _Said(torch.autograd.Function):
    """θ_i = θ0,i + λ_i · y_i for the consecutive pieces y_i of the projection's output y, θ0 frozen. Backward writes
    ∂y_i = λ_i ∂θ_i straight into one buffer (no separate concatenation) and ∂λ_i = ⟨∂θ_i, y_i⟩ as a dot product (no
    D-sized product written): 2 passes over D fewer per step than autograd's split + addcmul."""

    @staticmethod
    def forward(ctx, y, lam, *own):
        ctx.save_for_backward(y, lam)
        ctx.shapes = [t.shape for t in own]
        out, off = [], 0
        for i, t in enumerate(own):
            out.append(torch.addcmul(t, y[off:off + t.numel()].view(t.shape), lam[i]))
            off += t.numel()
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        y, lam = ctx.saved_tensors
        gy, glam, off = torch.empty_like(y), torch.zeros_like(lam), 0
        for i, (g, shape) in enumerate(zip(grads, ctx.shapes)):
            n = shape.numel()
            if g is None:
                gy[off:off + n].zero_()
            else:
                g = g.reshape(-1)
                torch.mul(g, lam[i], out=gy[off:off + n])
                glam[i] = torch.dot(g, y[off:off + n])
            off += n
        gy[off:].zero_()  # the projection's surplus entries
        return (gy, glam, *([None] * len(grads)))


class SubspaceModel(AdapterModule):
    """Calls the base model with θ0 + P z (SAID: + λ-scaled pieces) substituted for its parameters; the base model
    alone when merged (θ0 holds the update), switched off (``disabled``) or without a projection (d = 0)."""

    def __init__(self, base: nn.Module, names: list[str], dz: int, m: int, projection: nn.Module | None):
        super().__init__()
        self.base = base
        self.names = names
        self.proj = projection
        self.z = nn.Parameter(torch.zeros(dz))
        self.lam = nn.Parameter(torch.ones(m)) if m else None
        self.merged = False
        self.disabled = False  # inside disable_adapter()
        self.unloaded = False  # after unload(): the model unload() returned is the one to call

    def _pieces(self, own: dict, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """P z (``y`` if already computed) cut into one piece per parameter tensor by one ``split`` of the
        projection's padded output (its backward is one concatenation), not by slices (each slice's backward fills
        a D-sized zero gradient)."""
        sizes = [own[n].numel() for n in self.names]
        y = self.proj.padded(self.z) if y is None else y
        pieces = y.split(sizes + [y.numel() - sum(sizes)])[:-1]  # the last piece: the projection's surplus
        return [p.view_as(own[n]).to(own[n].dtype) for n, p in zip(self.names, pieces)]

    def deltas(self) -> dict[str, torch.Tensor]:
        """θ − θ0 per parameter tensor: pieces of P z (SAID: scaled by λ_i)."""
        own = dict(self.base.named_parameters())
        pieces = self._pieces(own)
        if self.lam is None:
            return dict(zip(self.names, pieces))
        return {n: p * self.lam[i] for i, (n, p) in enumerate(zip(self.names, pieces))}

    def params(self) -> dict[str, torch.Tensor]:
        """θ0 + the deltas. SAID in float32: one fused function (``_Said``); otherwise (bf16 autocast, other dtypes)
        autograd's ops."""
        own = dict(self.base.named_parameters())
        tensors = [own[n] for n in self.names]
        y = self.proj.padded(self.z)  # once: the fallback below splits this same output
        if self.lam is not None and y.dtype == torch.float32 and all(t.dtype == torch.float32 for t in tensors):
            return dict(zip(self.names, _Said.apply(y, self.lam, *tensors)))  # not under a bf16 autocast
        pieces = self._pieces(own, y)
        if self.lam is None:
            return {n: own[n] + p for n, p in zip(self.names, pieces)}
        return {n: torch.addcmul(own[n], p, self.lam[i]) for i, (n, p) in enumerate(zip(self.names, pieces))}

    def forward(self, *args, **kwargs):
        if self.merged or self.disabled or self.unloaded or self.proj is None:
            if self.unloaded:
                raise RuntimeError("this DID/SAID wrapper was unloaded (ad.unload()): call the model unload() "
                                   "returned")
            if self.merged and self.training and torch.is_grad_enabled():  # a training step: backward would fail
                n = self.names[0]
                guarded = {n: lifecycle.guard_merged(self.base.get_parameter(n), [self.z, self.lam])}
                return functional_call(self.base, guarded, args, kwargs, strict=False)
            return self.base(*args, **kwargs)
        return functional_call(self.base, self.params(), args, kwargs, strict=False)


@register
class Did(Adapter):
    name = "did"
    config_cls = SubspaceConfig
    said = False
    # LR grid: a few coordinates move the whole model: far above LoRA's
    info = MethodInfo(paper="Li et al. 2018, arXiv:1804.08838", equation="θ = θ0 + P z (Fastfood P)", formula="d",
                      default_lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2, 1e-1), budget_knob="d")

    def __init__(self, model: nn.Module, config: SubspaceConfig):
        super().__init__(model, config)
        train = find_train(model, config)
        skip = {id(p) for m in train.values() for p in m.parameters()}
        names = [n for n, p in model.named_parameters() if id(p) not in skip]
        m = len(names) if self.said else 0
        dz = self._check(config, m)
        self.freeze_base(train)
        self.D = sum(p.numel() for n, p in model.named_parameters() if id(p) not in skip)
        proj = None
        if config.d > 0:
            cls = Fastfood if config.projection == "fastfood" else DenseProjection
            proj = cls(dz, self.D, seed=config.seed)
            ref = next(model.parameters())
            proj.to(ref.device)
        self.model = SubspaceModel(model, names, dz if config.d > 0 else 0, m if config.d > 0 else 0, proj)
        self.model.to(next(model.parameters()).device).train(model.training)

    @classmethod
    def _check(cls, config, m: int) -> int:
        if not isinstance(config.d, int) or config.d < 0:
            raise ValueError(f"d={config.d} must be an integer >= 0")
        if config.projection not in ("fastfood", "dense"):
            raise ValueError(f"projection={config.projection!r}: use 'fastfood' or 'dense'")
        if cls.said and 0 < config.d <= m:
            raise ValueError(f"SAID needs d > {m}: its {m} per-tensor scales are part of d")
        return config.d - m if config.d > 0 else 0

    @classmethod
    def count(cls, model, config):
        train = find_train(model, config)
        m = sum(1 for _ in model.parameters()) - sum(1 for t in train.values() for _ in t.parameters())
        cls._check(config, m if cls.said else 0)
        return config.d + count_train(train)

    def roles(self):
        out = {"z": [self.model.z]} if self.model.z.numel() else {}
        if self.model.lam is not None:
            out["scale"] = [self.model.lam]
        return out

    def state(self):
        return {k: v[0].detach() for k, v in self.roles().items()}

    def load_state(self, tensors):
        for k, v in self.roles().items():
            if k not in tensors:
                raise ValueError(f"subspace adapter file lacks {k!r}")
            copy_checked(v[0], tensors[k], k)

    def extra_state(self):
        return {"D": self.D, "projection_seed": self.config.seed}

    def load_extra_state(self, extra):
        if extra.get("D", self.D) != self.D:
            raise ValueError(f"adapter was made for D={extra['D']} parameters; this model has D={self.D}")

    @torch.no_grad()
    def _shift(self, sign: float, merged: bool):
        lifecycle.refuse_while_off(self, "merge" if merged else "unmerge")
        if self.model.proj is not None and self.model.merged != merged:
            deltas = self.model.deltas()
            for n, p in self.model.base.named_parameters():
                if n in deltas:
                    p.add_(deltas[n], alpha=sign)
            self.model.merged = merged

    def merge(self):
        self._shift(1.0, True)

    def unmerge(self):
        self._shift(-1.0, False)

    @property
    def merged(self) -> bool:
        return self.model.merged

    def enable_update(self, on: bool) -> None:
        self.model.disabled = not on

    def unload_model(self, merge: bool) -> nn.Module:
        """The base model: θ0 + the deltas (``merge``) or θ0 (the wrapper is left refusing calls)."""
        if merge:
            self.merge()
        else:
            self.unmerge()
        self.model.unloaded = True
        return self.model.base


@register
class Said(Did):
    name = "said"
    said = True
    info = Did.info.replace(paper="Aghajanyan et al. 2020, arXiv:2012.13255",
                            equation="θ_i = θ0,i + λ_i (P z)_i (Fastfood P)", formula="d (incl. one λ per tensor)")
