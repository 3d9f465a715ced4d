"""The numbers behind each claim's row, from the cached SST-2 runs and the d_90 searches. Each function returns a
row dict (claim, source, paper, setup, ours, verdict, command) plus the data of its plot."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def ci95(xs) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (nan for one value)."""
    xs = np.asarray(list(xs), dtype=float)
    if len(xs) < 2:
        return float(xs.mean()), float("nan")
    return float(xs.mean()), float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))


def fmt(xs, digits: int = 3) -> str:
    m, h = ci95(xs)
    return f"{m:.{digits}g} ± {h:.2g} (n={len(list(xs))})"


def _mean_layers(analysis: dict, key, pick=lambda n: True) -> float:
    vals = [key(v) for n, v in analysis["layers"].items() if pick(n)]
    return float(np.mean(vals))


def is_query(name: str) -> bool:
    return name.endswith(".query")


def is_qv(name: str) -> bool:
    return name.endswith((".query", ".value"))


def subspace(pairs: list[dict]) -> dict:
    """Claim 4: φ(1, 1) and φ(8, 8) between ΔW of LoRA r = 8 and r = 64 (independent seeds), mean over layers."""
    out = {}
    for side in ("right", "left"):
        p11 = [np.mean([v["phi"][0][0] for v in pr[side].values()]) for pr in pairs]
        p88 = [np.mean([v["phi"][7][7] for v in pr[side].values()]) for pr in pairs]
        grid = np.mean([np.array(v["phi"]) for v in pairs[0][side].values()], axis=0)
        d = next(iter(pairs[0][side].values()))["dim"]
        out[side] = {"phi11": p11, "phi88": p88, "mean_grid": grid.tolist(), "dim": d}
    return out


def amplification(runs4: list[dict], runs64: list[dict]) -> dict:
    """Claim 5: ‖ΔW‖_F / ‖UᵀWVᵀ‖_F over the query layers (as LoRA Table 7, W_q) and over query + value."""
    out = {}
    for r, runs in ((4, runs4), (64, runs64)):
        a = [x["analysis"] for x in runs]
        out[r] = {"factor_q": [_mean_layers(x, lambda v: v["amplification"]["factor"], is_query) for x in a],
                  "factor_qv": [_mean_layers(x, lambda v: v["amplification"]["factor"]) for x in a],
                  "proj_dW_q": [_mean_layers(x, lambda v: v["amplification"]["proj_dW_dirs"], is_query) for x in a],
                  "proj_W_q": [_mean_layers(x, lambda v: v["amplification"]["proj_W_dirs"], is_query) for x in a],
                  "proj_rand_q": [_mean_layers(x, lambda v: v["amplification"]["proj_random_dirs"], is_query)
                                  for x in a],
                  "dW_fro_q": [_mean_layers(x, lambda v: v["dW_fro"], is_query) for x in a],
                  "score": [x["score"] for x in runs]}
    return out


def intruders(groups: dict[str, list[dict]], eps: str = "0.5") -> dict:
    """Claim 7: intruder dimensions among the top 10 per query/value layer, LoRA ranks vs full FT, as ε varies."""
    out = {}
    for name, runs in groups.items():
        per_seed = [_mean_layers(x["analysis"], lambda v: v["intruders"]["counts"][eps], is_qv) for x in runs]
        eps_all = list(runs[0]["analysis"]["layers"][next(iter(runs[0]["analysis"]["layers"]))]["intruders"]["counts"])
        curve = {e: float(np.mean([_mean_layers(x["analysis"], lambda v, e=e: v["intruders"]["counts"][e], is_qv)
                                   for x in runs])) for e in eps_all}
        rel = [_mean_layers(x["analysis"], lambda v: v["relative_norm"], is_qv) for x in runs]
        where = sorted({n for x in runs for n, v in x["analysis"]["layers"].items()
                        if is_qv(n) and v["intruders"]["counts"][eps] > 0})
        out[name] = {"count": per_seed, "curve": curve, "relative_norm": rel, "score": [x["score"] for x in runs],
                     "layers_with_intruders": where}
    return out


def grad_rank(full_runs: list[dict]) -> dict:
    """Claim 8: stable / effective rank of full fine-tuning's ∇W (mean over nn.Linear layers and recorded steps)."""
    stable = [np.mean([s["mean_stable_rank"] for s in r["grad_rank"]["steps"]]) for r in full_runs]
    frac = [np.mean([s["mean_effective_rank_fraction"] for s in r["grad_rank"]["steps"]]) for r in full_runs]
    eff = [np.mean([s["mean_effective_rank"] for s in r["grad_rank"]["steps"]]) for r in full_runs]
    curves = [[(s["step"], s["mean_stable_rank"], s["mean_effective_rank"]) for s in r["grad_rank"]["steps"]]
              for r in full_runs]
    layers = full_runs[0]["grad_rank_layers"][0]["layers"]
    max_rank = float(np.mean([v["max_rank"] for v in layers.values()]))
    return {"stable": stable, "effective": eff, "eff_fraction": frac, "curves": curves, "max_rank": max_rank,
            "n_layers": len(layers)}


def d90(res: dict) -> dict:
    """Claim 10: per-seed d_90 for MNIST FC at 10k and 5k training images and LeNet at 10k."""
    out = {}
    for (case, seed), r in res.items():
        o = out.setdefault(case, {"d90": [], "baseline": [], "reached": [], "wall_s": 0.0})
        o["wall_s"] += r.get("wall_s", 0.0)
        o["d90"].append(r["d90"])
        o["baseline"].append(r["baseline"])
        o["reached"].append(bool(r.get("reached", True)))
    return out
