"""One PNG per measured claim (written atomically)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from peftzoo import palette
from peftzoo.bench.store import write_figure

C7_METHODS = {"LoRA r=4": "lora", "LoRA r=8": "lora", "LoRA r=64": "lora", "full FT": "full"}  # run.py's c7 keys


def _fig(w=5.2, h=3.6):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt, *plt.subplots(figsize=(w, h))


def all_plots(data: dict, out: Path) -> None:
    plt, fig, axes = _fig(9, 3.6)  # claim 4
    fig.clf()
    axes = fig.subplots(1, 2)
    for ax, side in zip(axes, ("right", "left")):
        g = np.array(data["c4"][side]["mean_grid"])
        im = ax.imshow(g, vmin=0, vmax=1, origin="lower", aspect="auto", extent=(0.5, g.shape[1] + 0.5, 0.5, 8.5))
        ax.set(xlabel="j (LoRA r=64 top-j)", ylabel="i (LoRA r=8 top-i)",
               title=f"φ(i, j), {side} singular vectors,\nmean over 12 layers (seed pair 0)")
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    write_figure(out / "c4_subspace.png", fig, dpi=110, bbox_inches="tight")
    plt.close(fig)

    plt, fig, ax = _fig()
    c5 = data["c5"]
    shade = palette.shades("lora", 2)  # LoRA r=4 light, r=64 in LoRA's colour
    for i, key in enumerate(("proj_dW_q", "proj_W_q", "proj_rand_q")):
        for j, r in enumerate((4, 64)):
            v = c5[r][key]
            ax.bar(i * 3 + j, np.mean(v), yerr=np.std(v), color=shade[j], label=f"r={r}" if i == 0 else None)
    ax.set_xticks([0.5, 3.5, 6.5], ["ΔW's top-r", "W's top-r", "random"])
    ax.set_yscale("log")
    ax.set(ylabel="‖UᵀWVᵀ‖_F (query layers)", title="LoRA §7.3: how much of W lies in ΔW's directions")
    ax.legend()
    write_figure(out / "c5_amplification.png", fig, dpi=110, bbox_inches="tight")
    plt.close(fig)

    plt, fig, ax = _fig()
    colors = palette.series([C7_METHODS.get(n, n) for n in data["c7"]])
    for c, (name, v) in zip(colors, data["c7"].items()):
        xs = [float(e) for e in v["curve"]]
        ax.plot(xs, list(v["curve"].values()), marker="o", ms=3, label=name, color=c)
    ax.set(xlabel="ε", ylabel="intruders among top 10 (mean per q/v layer)",
           title="Intruder dimensions (Shuttleworth et al. 2024)")
    ax.legend(fontsize=8)
    write_figure(out / "c7_intruders.png", fig, dpi=110, bbox_inches="tight")
    plt.close(fig)

    plt, fig, ax = _fig()
    ranks = palette.shades("full", 2)  # full FT's gradients: its colour (effective rank) and a lighter one
    for i, curve in enumerate(data["c8"]["curves"]):
        st = [c[0] for c in curve]
        ax.plot(st, [c[1] for c in curve], color=ranks[0], alpha=0.7, label="stable rank" if i == 0 else None)
        ax.plot(st, [c[2] for c in curve], color=ranks[1], alpha=0.7, label="effective rank" if i == 0 else None)
    ax.axhline(data["c8"]["max_rank"], color="0.5", ls="--", lw=0.8, label="min(d_out, d_in), mean")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="rank of ∇W (mean over nn.Linear)", title="Full fine-tuning's gradients (3 seeds)")
    ax.legend(fontsize=8)
    write_figure(out / "c8_gradient_rank.png", fig, dpi=110, bbox_inches="tight")
    plt.close(fig)

    if "c10" in data:
        plt, fig, ax = _fig()
        names = list(data["c10"])
        bars = palette.series(["did"] * len(names))  # every bar a DID search: shades of DID's colour
        for i, n in enumerate(names):
            v = data["c10"][n]["d90"]
            ax.bar(i, np.mean(v), color=bars[i])
            ax.scatter([i] * len(v), v, color="k", s=10, zorder=3)
        ax.axhline(750, color="0.35", ls="--", lw=0.8, label="Li et al.: FC ≈ 750")  # the paper's: no method colour
        ax.axhline(290, color="0.35", ls=":", lw=1.0, label="Li et al.: LeNet ≈ 290")
        ax.set_xticks(range(len(names)), names)
        ax.set(ylabel="d_90 (DID, per seed)", title="MNIST intrinsic dimension")
        ax.legend(fontsize=8)
        write_figure(out / "c10_d90.png", fig, dpi=110, bbox_inches="tight")
        plt.close(fig)
