"""Writing an analysis: ``analysis.json`` (strict JSON) and PNGs, each through ``peftzoo._atomic`` (a temporary file
in the same folder, fsynced and renamed into place, mode 0644 like every other output), so a reader never sees half
a file."""
from __future__ import annotations

import math
from pathlib import Path

from peftzoo import _atomic, palette


def _savefig(fig, path) -> Path:
    path = Path(path)
    _atomic.write_figure(path, fig, dpi=110, bbox_inches="tight")
    return path


def describe(source: dict) -> str:
    """How plots name an update: the method, the value of its budget knob (r, d, ...) and the adapter's folder."""
    from peftzoo.registry import REGISTRY
    method = source.get("method", "update")
    knob = getattr(REGISTRY.get(method), "budget_knob", None)
    cfg = source.get("config") or {}
    what = f"{method} {knob}={cfg[knob]}" if knob and knob in cfg else method
    return f"{what} ({source['path']})" if source.get("path") else what


def _short(name: str) -> str:
    parts = name.split(".")
    return ".".join(p for p in parts if p not in ("bert", "encoder", "layer", "attention", "self", "output")) or name


def _grid(n: int, height: float = 2.3):
    import matplotlib.pyplot as plt
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def plot_spectra(layers: dict, path, title: str, color: str | None = None) -> Path:
    """``color``: the analysed method's (``palette.color``)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    fig, axes = _grid(len(layers), 2.1)
    for ax, (n, v) in zip(axes, layers.items()):
        s = [x for x in v["singular_values"] if x > 0]
        ax.semilogy(range(1, len(s) + 1), s, lw=1, marker="." if len(s) <= 16 else None, ms=3, color=color)
        ax.set_title(_short(n), fontsize=7, pad=2)
        ax.text(0.97, 0.95, f"eff. rank {v['effective_rank']:.1f}\nstable rank {v['stable_rank']:.1f}",
                transform=ax.transAxes, ha="right", va="top", fontsize=6)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.2g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        ax.tick_params(which="both", labelsize=6)
    fig.supxlabel("i (singular values of ΔW, largest first)", fontsize=8)
    fig.supylabel("σᵢ (log scale)", fontsize=8)
    fig.suptitle(f"{title}: singular values of ΔW per layer", fontsize=9)
    try:
        return _savefig(fig, path)
    finally:
        plt.close(fig)


def plot_intruders(layers: dict, path, title: str, color: str | None = None) -> Path:
    """``color``: the analysed method's, for the mean over layers (``palette.color``)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    eps = list(next(iter(layers.values()))["intruders"]["counts"])
    xs = [float(e) for e in eps]
    for n, v in layers.items():
        ax.plot(xs, [v["intruders"]["counts"][e] for e in eps], color="0.7", lw=0.7)
    mean = [sum(v["intruders"]["counts"][e] for v in layers.values()) / len(layers) for e in eps]
    ax.plot(xs, mean, color=color or "C3", lw=2, label="mean over layers")
    k = next(iter(layers.values()))["intruders"]["k"]
    ax.set(xlabel="ε (max |cos| with every pre-trained singular vector)", ylabel=f"intruders among top {k}")
    ax.set_title(f"{title}: intruder dimensions", fontsize=9)
    ax.legend(fontsize=7)
    try:
        return _savefig(fig, path)
    finally:
        plt.close(fig)


def _int_ticks(n: int) -> list[int]:
    """At most ~6 integer ticks in 1..n."""
    from matplotlib.ticker import MaxNLocator
    if n <= 6:
        return list(range(1, n + 1))
    return [int(t) for t in MaxNLocator(integer=True, nbins=5).tick_values(1, n) if 1 <= t <= n]


def plot_similarity(similarity: dict, path, first: str, second: str) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = _grid(len(similarity), 2.2)
    for ax, (n, v) in zip(axes, similarity.items()):
        im = ax.imshow(v["phi"], vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto",
                       extent=(0.5, v["r2"] + 0.5, 0.5, v["r1"] + 0.5))
        ax.set_title(_short(n), fontsize=7, pad=2)
        ax.set_xticks(_int_ticks(v["r2"]))  # i and j count directions: integer ticks only
        ax.set_yticks(_int_ticks(v["r1"]))
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes[: len(similarity)], shrink=0.6, pad=0.01, label="φ(i, j)")
    fig.supxlabel("j: top-j singular directions of the second update", fontsize=8)
    fig.supylabel("i: top-i of the first", fontsize=8)
    fig.suptitle(f"subspace similarity φ(i, j) between the first, {first}, and the second, {second}", fontsize=9)
    try:
        return _savefig(fig, path)
    finally:
        plt.close(fig)


def write(result: dict, out, plots: bool = True) -> list[Path]:
    """analysis.json (+ spectra.png, intruders.png, similarity.png when two updates are compared) under ``out``."""
    out = Path(out)
    title = describe(result["source"])
    _atomic.write_json(out / "analysis.json", result)  # strict JSON: a NaN (e.g. of a zero update) is null
    written = [out / "analysis.json"]
    if plots:
        import matplotlib
        matplotlib.use("Agg")
        color = palette.color(result["source"].get("method", "update"))  # the method's colour in every figure
        written.append(plot_spectra(result["layers"], out / "spectra.png", title, color))
        written.append(plot_intruders(result["layers"], out / "intruders.png", title, color))
        if "compare" in result:
            written.append(plot_similarity(result["compare"]["similarity"], out / "similarity.png", title,
                                           describe(result["compare"]["source"])))
    return written
