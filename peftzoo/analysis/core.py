"""Per-layer analysis of weight updates: spectrum, ranks, relative norm, amplification, intruder dimensions, and
the subspace similarity of two updates. Inputs are ``{layer name: LayerDelta}`` (see ``weights.py``)."""
from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass

import torch
from torch import nn

from peftzoo.analysis import spectra
from peftzoo.analysis.weights import LayerDelta, adapter_deltas, checkpoint_deltas


@dataclass
class AnalysisConfig:
    rank: int | None = None  # r of the amplification factor; None = ΔW's numerical rank (a LoRA adapter's r)
    top_k: int = 10  # intruder dimensions: top singular vectors of W₀ + ΔW examined (Shuttleworth et al. use 10)
    eps: tuple = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # intruder cosine thresholds ε (a curve, not one ε)
    intruder_side: str = "left"  # singular vectors compared for intruders: "left" (output space) or "right"
    phi_side: str = "right"  # φ compares these singular vectors of ΔW; "right" = input space, as LoRA §7.2 (A's)
    max_dim: int = 64  # φ(i, j) for i, j up to this many directions (also capped by each ΔW's numerical rank)
    seed: int = 0  # draws the random orthonormal U, V of the amplification baseline
    float64: bool = False  # LAPACK SVDs in float64 (the reference; slower) instead of float64 Gram eigendecompositions
    threads: int | None = None  # torch threads for the SVDs (None: torch's setting); 1 is far faster on a busy CPU

    def check(self) -> None:
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank={self.rank} must be a positive integer (or None for ΔW's numerical rank)")
        if self.top_k < 1 or self.max_dim < 1:
            raise ValueError(f"top_k={self.top_k} and max_dim={self.max_dim} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be >= 1 (or None for torch's setting)")
        if not self.eps or any(not 0 < e <= 1 for e in self.eps):
            raise ValueError(f"eps={self.eps}: cosine thresholds must lie in (0, 1]")
        for f in ("intruder_side", "phi_side"):
            if getattr(self, f) not in ("left", "right"):
                raise ValueError(f"{f}={getattr(self, f)!r}: use 'left' or 'right'")


def _basis(U: torch.Tensor, Vh: torch.Tensor, side: str) -> torch.Tensor:
    return U if side == "left" else Vh.T


def analyze_deltas(deltas: dict[str, LayerDelta], config: AnalysisConfig | None = None) -> tuple[dict, dict]:
    """(per-layer metrics, per-layer ΔW bases for ``compare_bases``). Three batched SVDs: ΔW, W₀ and W₀ + ΔW
    (``spectra.gram_svd``, or LAPACK's in float64 with ``float64=True``)."""
    cfg = config or AnalysisConfig()
    cfg.check()
    if not deltas:
        raise ValueError("nothing to analyse: no layer has a weight update")
    with spectra.num_threads(cfg.threads):
        svd = functools.partial(spectra.batched_svd, dtype=torch.float64) if cfg.float64 else spectra.gram_svd
        d_svd = svd({n: x.dW for n, x in deltas.items()})
        w_svd = svd({n: x.W for n, x in deltas.items()})
        f_svd = svd({n: x.W + x.dW for n, x in deltas.items()})
    gen = torch.Generator().manual_seed(cfg.seed)
    layers, bases = {}, {}
    for n, x in deltas.items():
        U, S, Vh = d_svd[n]
        shape = tuple(x.dW.shape)
        nrank = spectra.numerical_rank(S, shape)
        dw_norm, w_norm = float(x.dW.norm()), float(x.W.norm())
        r = min(cfg.rank or max(nrank, 1), min(shape))
        u0 = _basis(w_svd[n][0], w_svd[n][2], cfg.intruder_side)  # every singular vector of W₀
        u1 = _basis(f_svd[n][0], f_svd[n][2], cfg.intruder_side)  # those of the fine-tuned W₀ + ΔW
        layers[n] = {
            "shape": list(shape),
            "singular_values": [float(s) for s in S],
            "numerical_rank": nrank,
            "effective_rank": spectra.effective_rank(S),
            "stable_rank": spectra.stable_rank(S),
            "dW_fro": dw_norm, "W_fro": w_norm, "relative_norm": dw_norm / w_norm if w_norm > 0 else float("inf"),
            "amplification": spectra.amplification(x.W, dw_norm, U, Vh, w_svd[n][1], r, gen),
            "intruders": spectra.intruder_counts(u0, u1, cfg.top_k, list(cfg.eps)),
        }
        k = min(cfg.max_dim, max(nrank, 1))
        bases[n] = _basis(U, Vh, cfg.phi_side)[:, :k]
    return layers, bases


def compare_bases(b1: dict[str, torch.Tensor], b2: dict[str, torch.Tensor]) -> dict:
    """φ per shared layer (LoRA §7.2), with the random-subspace level max(i, j)/d for reference."""
    only1, only2 = sorted(set(b1) - set(b2)), sorted(set(b2) - set(b1))
    if only1 or only2:
        raise ValueError(f"the two updates adapt different layers: only in the first {only1[:3]}, only in the "
                         f"second {only2[:3]}; φ compares the same layer of both")
    out = {}
    for n in b1:
        if b1[n].shape[0] != b2[n].shape[0]:
            raise ValueError(f"layer {n!r}: the updates have different shapes (space of dimension "
                             f"{b1[n].shape[0]} vs {b2[n].shape[0]}): they were made for different models")
        phi = spectra.subspace_similarity(b1[n], b2[n])
        out[n] = {"phi": [[round(float(v), 6) for v in row] for row in phi], "dim": int(b1[n].shape[0]),
                  "r1": int(phi.shape[0]), "r2": int(phi.shape[1])}
    return out


def _summary(layers: dict) -> dict:
    def mean(key, sub=None):
        vals = [(v[key][sub] if sub else v[key]) for v in layers.values()]
        return sum(vals) / len(vals)
    eps = next(iter(layers.values()))["intruders"]["counts"]
    return {"layers": len(layers), "mean_effective_rank": mean("effective_rank"),
            "mean_stable_rank": mean("stable_rank"), "mean_relative_norm": mean("relative_norm"),
            "mean_amplification": mean("amplification", "factor"),
            "mean_intruders": {e: sum(v["intruders"]["counts"][e] for v in layers.values()) / len(layers)
                               for e in eps}}


def _result(source: dict, layers: dict, cfg: AnalysisConfig, t0: float) -> dict:
    return {"source": source, "config": dataclasses.asdict(cfg), "summary": _summary(layers), "layers": layers,
            "seconds": time.perf_counter() - t0}


def analyze_adapter(model: nn.Module, path, compare=None, config: AnalysisConfig | None = None) -> dict:
    """Analyse the adapter at ``path`` (peftzoo or PEFT format) on ``model``, its base; with ``compare`` (a second
    adapter folder for the same base) add φ between the two. ``model`` is cast to float64 and modified."""
    cfg = config or AnalysisConfig()
    cfg.check()
    t0 = time.perf_counter()
    spare = copy.deepcopy(model) if compare is not None else None
    deltas, info = adapter_deltas(model, path)
    layers, bases = analyze_deltas(deltas, cfg)
    res = _result(info, layers, cfg, t0)
    if compare is not None:
        deltas2, info2 = adapter_deltas(spare, compare)
        layers2, bases2 = analyze_deltas(deltas2, cfg)
        res["compare"] = {"source": info2, "summary": _summary(layers2), "layers": layers2,
                          "similarity": compare_bases(bases, bases2)}
        res["seconds"] = time.perf_counter() - t0
    return res


def analyze_checkpoints(base: nn.Module, finetuned: nn.Module, config: AnalysisConfig | None = None) -> dict:
    """Analyse full fine-tuning: ΔW = W_finetuned − W_base for every nn.Linear of the base."""
    cfg = config or AnalysisConfig()
    cfg.check()
    t0 = time.perf_counter()
    deltas, info = checkpoint_deltas(base, finetuned)
    layers, _ = analyze_deltas(deltas, cfg)
    return _result(info, layers, cfg, t0)
