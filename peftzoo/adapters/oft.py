"""OFT: orthogonal fine-tuning (Qiu et al. 2023, arXiv:2306.07280), exactly as Hugging Face PEFT 0.21.2 runs it.

    y = W (R x) + b,   i.e. W' = W Rᵀ (W ∈ R^{d_out×d_in}; the paper's W' = R W with W stored d_in × d_out)
    R = diag(R_1, …, R_n) block-diagonal, n = d_in / b blocks of size b (``oft_block_size``; or ``r`` = n)
    R_i from a skew-symmetric Q_i (Q_i = U − Uᵀ, U strictly upper triangular: its b(b−1)/2 entries are trained, 0 at
    init so R = I):
      use_cayley_neumann=True (PEFT's default): R_i = I + 2Q + 2Q² + … + 2Q^{k−2} + Q^{k−1}, k =
        ``num_cayley_neumann_terms`` (5), the truncated series of (I + Q)(I − Q)⁻¹ (PEFT gives k = 3 the terms of
        k = 4: I + 2Q + 2Q² + Q³); orthogonal only approximately, up to O(‖Q‖^k);
      use_cayley_neumann=False: R_i = (I − Q)(I + Q)⁻¹, exactly orthogonal (note: the Cayley map of −Q, PEFT's sign).
    ``block_share``: one (Q, R) for every block of the layer.

The rotation acts on the layer's input, before the frozen layer: x is cut into n blocks of b and each block is
multiplied by its R_i (PEFT's forward; the d_in × d_in matrix is never built while training). With more rows than
the weight has (``fused.many_rows``) the frozen weight's blocks are rotated instead, W Rᵀ (d_out × d_in × b
products instead of N × d_in × b); backward takes ∂x = g (W Rᵀ) with that weight and ∂R from one reduction over
the rows (``fused.FusedOft``). Merging writes W Rᵀ; unmerging multiplies by the inverse blocks (R is only
near-orthogonal under Neumann, so Rᵀ would not undo it), both computed in float64.

``coft=True`` (constrained OFT, PEFT's): before every use (each forward, merge and unmerge) each block's entries are
projected in place, under no_grad, onto the ball ‖Q_i‖_F ≤ ε/√m (ε = ``eps``, 6e-5 by default; m = blocks stored:
n, or 1 with ``block_share``): Q_i ← ε/√m · Q_i/‖Q_i‖_F when outside. The optimizer steps from the projected values,
so a run equals PEFT's step by step (tests/test_oft.py: logits of forwards after 1–3 AdamW steps, and the entries).

A block size that does not divide d_in (or exceeds it) is moved to the nearest divisor as PEFT does, with a warning
naming the layers (``nearest_divisor``); a layer left with blocks of 1 (no trainable entry) is refused.
Not implemented, refused by name: ``module_dropout > 0`` (PEFT 0.21.2 builds its multiplicative dropout but never
applies it). PEFT adapts ``nn.Linear``, ``nn.Conv2d`` and ``nn.Embedding`` with OFT and refuses transformers'
``Conv1D`` (GPT-2); so does peftzoo's OFT, on ``nn.Conv2d`` with a 1×1 kernel only (oft_conv.py: y = conv(R x, W)
+ b, R on each pixel's c_in channels, merged W Rᵀ with W as c_out × c_in; larger kernels, groups > 1 and
dilation > 1 are refused there with the reason: PEFT's forward on a larger kernel does not even reproduce the base
layer at init). On ``nn.Embedding`` (oft_embedding.py) the looked-up rows are rotated, y = E[x] R, merged E R
(E ∈ R^{V×d}: d is rotated, PEFT's ``oft_embedding_R``); an embedding with ``max_norm`` is refused there.

Trainable elements per adapted layer: n · b(b−1)/2 = d_in · (b−1)/2 (``block_share``: b(b−1)/2); on a 1×1
Conv2d d_in = c_in, on an Embedding d_in = d (the embedding width; the vocabulary V does not count).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from packaging.version import Version
from torch import nn

from peftzoo.adapters.base import AdapterConfig, find_train
from peftzoo.adapters.fused import FusedOft, fusable, many_rows
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.layered import LayerAdapter, LayerCodec
from peftzoo.adapters.oft_conv import ConvRotation
from peftzoo.adapters.oft_embedding import EmbeddingRotation
from peftzoo.registry import register

# The PEFT release whose file format and Cayley-Neumann series (changed in PEFT 0.18.0) the saved files hold;
# PEFT warns on an OFT file that names no version.
PEFT_VERSION = "0.21.2"


@dataclass
class OftConfig(AdapterConfig):
    oft_block_size: int = 32  # b, the size of each rotation block: count = d_in·(b−1)/2 per layer (0: use r)
    r: int = 0  # n, blocks per layer (PEFT's r), used instead of the block size when oft_block_size=0
    use_cayley_neumann: bool = True  # PEFT's default: a 5-term series instead of the exact Cayley inverse
    num_cayley_neumann_terms: int = 5  # terms of the series: more terms, closer to orthogonal
    block_share: bool = False  # one rotation shared by all blocks of a layer: b(b−1)/2 elements per layer
    coft: bool = False  # constrained OFT (PEFT's): each block's Q projected into a Frobenius ball before use
    eps: float = 6e-5  # COFT's radius, PEFT's default: ‖Q_i‖_F ≤ eps/√(blocks stored) (no effect without coft)
    module_dropout: float = 0.0  # PEFT's block dropout: a no-op in PEFT 0.21.2, refused when > 0


def nearest_divisor(n: int, v: int) -> int:
    """PEFT's ``adjust_oft_parameters``: the divisor of ``n`` nearest to ``v`` (ties to the smaller; n if v ≥ n)."""
    if v >= n:
        return n
    up = next(k for k in range(v, n + 1) if n % k == 0)
    down = next(k for k in range(v, 0, -1) if n % k == 0)
    return down if v - down <= up - v else up


def blocks(d_in: int, config: OftConfig) -> tuple[int, int, bool]:
    """(n blocks, block size b, adjusted) of a layer with input width ``d_in``, as PEFT resolves them."""
    if config.r == 0:
        b = nearest_divisor(d_in, config.oft_block_size)
        return d_in // b, b, b != config.oft_block_size
    n = nearest_divisor(d_in, config.r)
    return n, d_in // n, n != config.r


def skew(vec: torch.Tensor, b: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The (n, b, b) skew-symmetric blocks whose strict upper triangles (row-major) are ``vec`` (n, b(b−1)/2)."""
    u = vec.new_zeros(vec.shape[0], b, b)
    u[:, rows, cols] = vec
    return u - u.transpose(1, 2)


def project(vec: torch.Tensor, b: int, rows: torch.Tensor, cols: torch.Tensor, eps: float) -> torch.Tensor:
    """PEFT's ``_project_batch`` (COFT): each block's skew Q_i scaled back onto the Frobenius sphere of radius
    eps/√m (m = blocks stored: n, or 1 with block_share) when it lies outside; returns the new strict upper triangles.
    """
    q = skew(vec, b, rows, cols)
    eps = eps / torch.sqrt(torch.tensor(float(q.shape[0])))  # a float32 tensor, as PEFT's
    norm = torch.norm(q, dim=(1, 2), keepdim=True)
    return torch.where(norm <= eps, q, eps * (q / norm))[:, rows, cols]


def cayley_neumann(q: torch.Tensor, terms: int) -> torch.Tensor:
    """PEFT's truncated series for (I + Q)(I − Q)⁻¹: I + 2Q + 2Q² + … + 2Q^{k−2} + Q^{k−1} (k = 3 as k = 4)."""
    r = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).expand_as(q) + 2 * q
    if terms > 2:
        power = q @ q
        r = r + 2 * power
        for _ in range(3, terms - 1):
            power = power @ q
            r = r + 2 * power
        r = r + power @ q
    return r


class OftLayer(AdapterLayer):
    peft_names = {"weight_q": "oft_R.weight"}  # not "weight": the wrapper's weight is the base layer's

    def __init__(self, name: str, base: nn.Linear, config: OftConfig, shared, gen: torch.Generator):
        super().__init__(base)
        self.n, self.b, self.adjusted = blocks(self.in_features, config)
        self.neumann, self.terms = config.use_cayley_neumann, config.num_cayley_neumann_terms
        self.eps = config.eps if config.coft else None  # COFT's radius; None: unconstrained
        w = base.weight
        rows = 1 if config.block_share else self.n
        self.weight_q = nn.Parameter(torch.zeros(rows, self.b * (self.b - 1) // 2, dtype=w.dtype, device=w.device))
        rows_i, cols_i = torch.triu_indices(self.b, self.b, 1, device=w.device)
        self.register_buffer("rows", rows_i, persistent=False)
        self.register_buffer("cols", cols_i, persistent=False)

    @classmethod
    def check(cls, name, base, config):
        n, b, _ = blocks(cls.dims(base)[0], config)
        if b < 2:
            raise ValueError(f"OFT on {name!r}: d_in={cls.dims(base)[0]} has no divisor near the requested "
                             f"{'r' if config.r else 'oft_block_size'} but {n} blocks of size 1, which train "
                             "nothing; choose an oft_block_size that divides d_in")

    @classmethod
    def count(cls, name, in_features, out_features, config):
        n, b, _ = blocks(in_features, config)
        return (1 if config.block_share else n) * b * (b - 1) // 2

    def roles(self):
        return {"oft_R": [self.weight_q]}

    def rotation(self) -> torch.Tensor:
        """The n blocks R_i, (n, b, b), from the trained entries (shared blocks repeated). Under COFT the entries
        are first projected in place (``project``), as PEFT does at every forward and merge: the optimizer's next
        step starts from the projected values."""
        if self.eps is not None:
            with torch.no_grad():
                self.weight_q.copy_(project(self.weight_q, self.b, self.rows, self.cols, self.eps))
        q = skew(self.weight_q, self.b, self.rows, self.cols)
        if self.neumann:
            r = cayley_neumann(q, self.terms)
        else:
            eye = torch.eye(self.b, dtype=q.dtype, device=q.device).expand_as(q)
            r = torch.linalg.solve(eye + q, eye - q, left=False)  # X (I + Q) = I − Q
        return r.expand(self.n, -1, -1) if r.shape[0] != self.n else r

    def _rotate(self, w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """W (d_out × d_in) times the block-diagonal Rᵀ, block by block."""
        return torch.einsum("oik,ick->oic", w.reshape(w.shape[0], self.n, self.b), r).reshape(w.shape)

    def _rotated(self, w: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """W Rᵀ (or W R⁻ᵀ), computed in float64: far from orthogonal (a large Q under Neumann) R is ill-conditioned
        (cond ~2e3 for entries ~0.3 in a 32-block), and merge + unmerge in float32 then miss W by ~1e-5."""
        r = self.rotation().detach().double()
        return self._rotate(w.double(), torch.linalg.inv(r) if inverse else r).to(w.dtype)

    def delta_weight(self):
        w = self.base_weight()
        if self.merged:  # base.weight holds W Rᵀ
            return w - self._rotated(w, inverse=True)
        return self._rotate(w, self.rotation()) - w

    def adapted(self, x):
        r = self.rotation()
        base = self.base
        if (fusable(x) and many_rows(x, self) and not base.weight.requires_grad
                and (base.bias is None or not base.bias.requires_grad)):
            return FusedOft.apply(x, base.weight, base.bias, r)  # x (W Rᵀ)ᵀ + b: the weight rotated, not x
        xs = x.reshape(*x.shape[:-1], self.n, self.b)
        return base(torch.einsum("...rk,rkc->...rc", xs, r).reshape(x.shape))

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.set_base_weight(self._rotated(self.base_weight()))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.set_base_weight(self._rotated(self.base_weight(), inverse=True))
            self.merged = False


class OftCodec(LayerCodec):
    peft_type = "OFT"

    def to_peft(self, config):
        return {"r": config.r, "oft_block_size": config.oft_block_size, "module_dropout": 0.0, "coft": config.coft,
                "eps": config.eps, "block_share": config.block_share, "use_cayley_neumann": config.use_cayley_neumann,
                "num_cayley_neumann_terms": config.num_cayley_neumann_terms, "init_weights": True,
                "peft_version": PEFT_VERSION}

    def from_peft(self, peft):
        if "oft_block_size" not in peft:
            raise ValueError("PEFT OFT adapter has no oft_block_size: it is from PEFT < 0.14, whose OFT weights "
                             "PEFT itself no longer loads; retrain it with a current PEFT")
        neumann = bool(peft.get("use_cayley_neumann", True))  # PEFT's default
        version = str(peft.get("peft_version") or "0.0.0").partition("@")[0]
        if neumann and Version(version) < Version("0.18.0"):
            raise ValueError(f"PEFT OFT adapter uses the Cayley-Neumann series from PEFT {version} (< 0.18.0), "
                             "before PEFT changed it; peftzoo implements the 0.18+ series: retrain it")
        if peft.get("module_dropout"):
            warnings.warn(f"PEFT OFT adapter has module_dropout={peft['module_dropout']}, which PEFT 0.21.2 never "
                          "applies: loaded with module_dropout=0 (the same model)", stacklevel=4)
        return {"r": int(peft.get("r", 0)), "oft_block_size": int(peft["oft_block_size"]),
                "use_cayley_neumann": neumann, "num_cayley_neumann_terms": int(peft.get("num_cayley_neumann_terms", 5)),
                "block_share": bool(peft.get("block_share", False)), "coft": bool(peft.get("coft", False)),
                "eps": float(peft.get("eps", 6e-5))}


class OftConv(ConvRotation, OftLayer):
    """OFT on a 1×1 ``nn.Conv2d``: rotates each pixel's channels (oft_conv.py)."""


class OftEmbedding(EmbeddingRotation, OftLayer):
    """OFT on an ``nn.Embedding``: rotates the looked-up rows, E[x] R, merged E R (oft_embedding.py)."""


@register
class Oft(LayerAdapter):
    name = "oft"
    config_cls = OftConfig
    layer_classes = {nn.Linear: OftLayer, nn.Conv2d: OftConv, nn.Embedding: OftEmbedding}  # PEFT's (Conv2d: 1×1 only)
    peft = OftCodec()
    # LR grid: the OFT paper's experiments are text-to-image diffusion (no GLUE setting); Q starts at 0 like LoRA's
    # B, and its gradients are of the same order: LoRA's grid
    info = MethodInfo(paper="Qiu et al. 2023, arXiv:2306.07280",
                      equation="W R x, R block-diagonal, Cayley(-Neumann) of skew-symmetric blocks",
                      formula="d_in·(b−1)/2", default_lr=1e-3, lr_grid=(1e-4, 3e-4, 1e-3, 3e-3),
                      budget_knob="oft_block_size")

    def __init__(self, model, config):
        super().__init__(model, config)
        moved = [(n, layer.b) for n, layer in self.layers.items() if layer.adjusted]
        if moved:
            what = f"r={config.r}" if config.r else f"oft_block_size={config.oft_block_size}"
            warnings.warn(f"OFT: {what} does not divide d_in of {len(moved)} layer(s); moved to the nearest divisor "
                          f"as PEFT does, e.g. {moved[0][0]!r} gets blocks of {moved[0][1]}", stacklevel=3)

    @classmethod
    def budget_kwargs(cls, value):
        return {"oft_block_size": value, "r": 0}

    @classmethod
    def rank_fits(cls, model, config):
        """False when the block size would be moved on some target: the budget solver then skips the value."""
        targets = cls.find(model, config, find_train(model, config))
        return not any(blocks(cls.layer_class(m).dims(m)[0], config)[2] for m in targets.values())

    @classmethod
    def validate(cls, config):
        if (config.r == 0) == (config.oft_block_size == 0):
            raise ValueError(f"OFT takes r (blocks per layer) or oft_block_size (their size), exactly one non-zero "
                             f"(r × oft_block_size = d_in), got r={config.r}, oft_block_size={config.oft_block_size}:"
                             " e.g. r=4 with oft_block_size=0, as in PEFT")
        if min(config.r, config.oft_block_size) < 0:
            raise ValueError("OFT's r and oft_block_size must be >= 0")
        if config.coft and not config.eps > 0:
            raise ValueError(f"OFT coft=True needs eps > 0 (the radius Q is projected into), got eps={config.eps}")
        if config.module_dropout:
            raise ValueError(f"OFT module_dropout={config.module_dropout} is refused: PEFT 0.21.2 builds this "
                             "block dropout but never applies it, so it changes nothing there; use 0")
        if config.use_cayley_neumann and config.num_cayley_neumann_terms < 2:
            raise ValueError(f"num_cayley_neumann_terms={config.num_cayley_neumann_terms} makes R = I (nothing "
                             "trains): use >= 2 (PEFT's default 5), or use_cayley_neumann=False")

    @classmethod
    def find(cls, model, config, train):
        found = super().find(model, config, train)
        other = {n: type(m).__name__ for n, m in found.items() if not isinstance(m, tuple(cls.layer_classes))}
        if other:  # "all-linear" also collects transformers' Conv1D, which PEFT's OFT refuses
            n, t = next(iter(other.items()))
            raise TypeError(f"target {n!r} is a {t}: OFT adapts nn.Linear, nn.Conv2d and nn.Embedding only (PEFT "
                            f"0.21.2's OFT refuses {t} too); name other targets instead of {config.targets!r}")
        return found
