"""Writing an analysis: ``analysis.json`` and PNGs, each written to a temporary file in the same folder and renamed
into place, so a reader never sees half a file."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_savefig(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _short(name: str) -> str:
    parts = name.split(".")
    return ".".join(p for p in parts if p not in ("bert", "encoder", "layer", "attention", "self", "output")) or name


def _grid(n: int):
    import matplotlib.pyplot as plt
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def plot_spectra(layers: dict, path, title: str) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = _grid(len(layers))
    for ax, (n, v) in zip(axes, layers.items()):
        s = [x for x in v["singular_values"] if x > 0]
        ax.semilogy(range(1, len(s) + 1), s, lw=1)
        ax.set_title(f"{_short(n)}\neff {v['effective_rank']:.1f} stable {v['stable_rank']:.1f}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{title}: singular values of ΔW per layer", fontsize=9)
    try:
        return atomic_savefig(fig, path)
    finally:
        plt.close(fig)


def plot_intruders(layers: dict, path, title: str) -> Path:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    eps = list(next(iter(layers.values()))["intruders"]["counts"])
    xs = [float(e) for e in eps]
    for n, v in layers.items():
        ax.plot(xs, [v["intruders"]["counts"][e] for e in eps], color="0.7", lw=0.7)
    mean = [sum(v["intruders"]["counts"][e] for v in layers.values()) / len(layers) for e in eps]
    ax.plot(xs, mean, color="C3", lw=2, label="mean over layers")
    k = next(iter(layers.values()))["intruders"]["k"]
    ax.set(xlabel="ε (max |cos| with every pre-trained singular vector)", ylabel=f"intruders among top {k}",
           title=f"{title}: intruder dimensions")
    ax.legend(fontsize=7)
    try:
        return atomic_savefig(fig, path)
    finally:
        plt.close(fig)


def plot_similarity(similarity: dict, path, title: str) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = _grid(len(similarity))
    for ax, (n, v) in zip(axes, similarity.items()):
        im = ax.imshow(v["phi"], vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto",
                       extent=(0.5, v["r2"] + 0.5, 0.5, v["r1"] + 0.5))
        ax.set_title(_short(n), fontsize=7)
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes[: len(similarity)], shrink=0.6, label="φ(i, j)")
    fig.suptitle(f"{title}: subspace similarity φ(i, j) (i: first update's top-i, j: second's top-j)", fontsize=9)
    try:
        return atomic_savefig(fig, path)
    finally:
        plt.close(fig)


def write(result: dict, out, plots: bool = True) -> list[Path]:
    """analysis.json (+ spectra.png, intruders.png, similarity.png when two updates are compared) under ``out``."""
    out = Path(out)
    title = result["source"].get("method", "update")
    written = [atomic_write_text(out / "analysis.json", json.dumps(result, indent=1, sort_keys=True))]
    if plots:
        import matplotlib
        matplotlib.use("Agg")
        written.append(plot_spectra(result["layers"], out / "spectra.png", title))
        written.append(plot_intruders(result["layers"], out / "intruders.png", title))
        if "compare" in result:
            title2 = result["compare"]["source"].get("method", "update")
            written.append(plot_similarity(result["compare"]["similarity"], out / "similarity.png",
                                           f"{title} vs {title2}"))
    return written
