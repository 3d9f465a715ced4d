"""The figures of rows 12–19 (plans_b.py) once they have run, from their verdicts' data (claims.json's c<row>)."""
from __future__ import annotations

from pathlib import Path

from peftzoo import palette
from peftzoo.bench.store import write_figure

MARKERS = ("o", "s", "^", "D", "v")  # one per weight decay


def row12(d: dict, out: Path) -> dict:
    """ΔW at the end of every measured run of row 12: effective rank against ‖ΔW‖_F (log), one shade of LoRA's
    colour per init, one marker per weight decay, failed runs as ×. Returns {series label: runs drawn}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = d["points"]
    inits = sorted({p["init"] for p in pts})
    decays = sorted({p["decay"] for p in pts})
    colour = dict(zip(inits, palette.shades("lora", len(inits)) if len(inits) > 1 else [palette.color("lora")]))
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    drawn = {}
    for i in inits:
        for j, wd in enumerate(decays):
            for bad in (False, True):
                sel = [p for p in pts if p["init"] == i and p["decay"] == wd and p["failed"] == bad]
                if not sel:
                    continue
                label = f"{i}, wd {wd:g}" + (" (failed)" if bad else "")
                ax.scatter([p["effective_rank"] for p in sel], [p["dW_fro"] for p in sel], color=colour[i],
                           marker="x" if bad else MARKERS[j % len(MARKERS)], s=28, label=label)
                drawn[label] = len(sel)
    ax.set_yscale("log")
    ax.set(xlabel="effective rank of ΔW (mean over q/v layers)", ylabel="‖ΔW‖_F (mean over q/v layers)",
           title="Row 12: ΔW at the end of every run (× failed)")
    ax.legend(fontsize=7)
    write_figure(Path(out) / "c12_lowrank.png", fig, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return drawn


PLOTS = {"12": (row12, "c12_lowrank.png")}  # row: (draw(verdict data, out folder), its file)


def draw(data: dict, out: Path) -> None:
    """Every planned row's figure whose data ``data`` (claims.json) holds."""
    for row, (fn, _) in PLOTS.items():
        if f"c{row}" in data and data[f"c{row}"].get("points"):
            fn(data[f"c{row}"], out)
