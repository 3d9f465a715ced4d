"""Leaderboard figures, each written atomically (a reader sees the old file or the new one, never half of one).

* ``pareto``: dev score vs trainable parameters per task (log x, error bars = std over seeds), one line per method
  through its budgets: the view the VeRA and AdaLoRA papers draw.
* ``lr_curves``: the validation score of the LR sweep vs LR per method and task (the U-curves selection reads).

Each has a ``*_figure`` twin that returns the figure (the HTML page draws the same figures, per task, as inline SVG:
``svg``). Colours come from ``peftzoo.palette``: one colour per method in every figure.
"""
from __future__ import annotations

import io
from pathlib import Path

from peftzoo import palette


def _fig(ncols: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(4.8 * ncols, 3.9), squeeze=False)
    return plt, fig, axes[0]


def _legend(fig, axes) -> None:
    """One legend for the figure with every method of every panel, right of the panels."""
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))


def save_atomic(fig, path: Path, dpi: int = 110) -> None:
    from peftzoo.bench import store
    store.write_figure(Path(path), fig, dpi=dpi, bbox_inches="tight")  # temp file + rename; OutputError if it cannot be written


X_TRAINABLE = ("x", "trainable parameters (incl. head)", True)  # (point key, axis label, log axis)


def pareto(path, tasks: list[str], points: list[dict], title: str = "", titles: dict | None = None) -> None:
    """``points``: {"task", "method", "x" (trainable), "mean", "std"} (scores in [0, 1]); ``titles``: a panel's
    title by task (default: the task's name)."""
    fig = pareto_figure([(t, (titles or {}).get(t, t), X_TRAINABLE) for t in tasks], points, title)
    save_atomic(fig, path)
    _close(fig)


def pareto_figure(panels: list[tuple], points: list[dict], title: str = ""):
    """One panel per (task, panel title, (x key, x label, log x)): the task's points, x read from ``p[x key]``
    (points without it are left out), one line per method in order of trainable parameters (its budgets)."""
    plt, fig, axes = _fig(len(panels))
    for ax, (t, name, (key, xlabel, log)) in zip(axes, panels):
        by: dict = {}
        for p in points:
            if p["task"] == t and p["mean"] is not None and p.get(key) is not None:
                by.setdefault(p["method"], []).append(p)
        for m, ps in by.items():
            ps = sorted(ps, key=lambda p: p["x"])
            ax.errorbar([p[key] for p in ps], [100 * p["mean"] for p in ps], yerr=[100 * p["std"] for p in ps],
                        fmt="o-", capsize=3, label=m, ms=4, lw=1, color=palette.color(m))
        if log:
            ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("dev score ×100 (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _legend(fig, axes)
    return fig


def _close(fig) -> None:
    import matplotlib.pyplot as plt
    plt.close(fig)


def svg(fig, salt: str) -> str:
    """The figure as an inline <svg> element: text as text (searchable, no embedded glyphs), ids salted by ``salt``
    (unique in a page holding several figures, and the same on every run: a regenerated page diffs cleanly)."""
    import matplotlib
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def lr_label(lr: float) -> str:
    """3e-4, 1e-3, 2.5e-2: short enough for a tick."""
    m, e = f"{lr:.2e}".split("e")
    return f"{float(m):g}e{int(e)}"


def _lr_ticks(ax, lrs) -> None:
    """Ticks at the swept LRs only, labelled compactly (log axes label their minor ticks, which collide when the
    grid spans less than a few decades); slanted when there are many."""
    from matplotlib.ticker import FixedLocator, NullLocator
    lrs = sorted(set(lrs))
    if not lrs:
        return
    ax.xaxis.set_major_locator(FixedLocator(lrs))
    ax.xaxis.set_minor_locator(NullLocator())
    many = len(lrs) > 6
    ax.set_xticklabels([lr_label(x) for x in lrs], fontsize=7, rotation=45 if many else 0,
                       ha="right" if many else "center")


def lr_curves(path, tasks: list[str], curves: list[dict], ylabel: str = "validation score ×100") -> None:
    """``curves``: {"task", "method", "per_lr": {lr: score or None}, "selected": lr}."""
    fig = lr_curves_figure(tasks, curves, ylabel)
    save_atomic(fig, path)
    _close(fig)


def lr_curves_figure(tasks: list[str], curves: list[dict], ylabel: str = "validation score ×100"):
    plt, fig, axes = _fig(len(tasks))
    for ax, t in zip(axes, tasks):
        for c in curves:
            if c["task"] != t:
                continue
            xs = [lr for lr, v in sorted(c["per_lr"].items()) if v is not None]
            line, = ax.plot(xs, [100 * c["per_lr"][x] for x in xs], "o-", ms=4, lw=1, label=c["method"],
                            color=palette.color(c["method"]))
            if c["selected"] in c["per_lr"] and c["per_lr"][c["selected"]] is not None:
                ax.plot([c["selected"]], [100 * c["per_lr"][c["selected"]]], "*", ms=11, color=line.get_color())
        ax.set_xscale("log")
        _lr_ticks(ax, [lr for c in curves if c["task"] == t for lr, v in c["per_lr"].items() if v is not None])
        ax.set_title(f"{t} (★ selected)")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend(fig, axes)
    return fig
