"""The pre-training curve's rows (one per checkpoint: held-out MLM loss, full FT against the trivial score, SAID
d_90 per definition, or why it is not informative), its plot and its markdown summary."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from peftzoo.bench.store import write_figure
from peftzoo.intrinsic.report import d90_text

REFUSED = "not informative: full FT at trivial"
ALLOWED = "not informative (searched with --allow-uninformative)"
PAPER = ("Aghajanyan et al. 2020 (arXiv:2012.13255) re-pre-train RoBERTa-base from scratch and plot the SAID d_90 "
         "of its checkpoints against pre-training updates on several tasks: pre-training implicitly lowers the "
         "intrinsic dimension, and larger models have a lower d_90 after a fixed number of updates.")


def status(d90: dict | None) -> str:
    if d90 is None:
        return "pending"
    if "stopped" in d90:
        return REFUSED
    if "by_definition" not in d90:
        return "pending"
    return "measured" if d90["informative"] else ALLOWED


def row(meta: dict, d90_path: Path) -> dict:
    """One checkpoint: its ``pretrain.json`` and what its d90 JSON says (``pending`` when it is not done)."""
    d90 = json.loads(d90_path.read_text()) if d90_path.is_file() else None
    out = {"step": meta["step"], "name": meta["name"], "width": meta["shape"]["hidden"],
           "held_out_loss": meta["held_out_loss"], "train_loss": meta["train_loss"], "status": status(d90),
           "d90_file": d90_path.name}
    if d90 is None or "trivial" not in d90:
        return out
    full = [v for k, v in sorted(d90["scores"].items()) if k.startswith("full/")]
    from peftzoo.bench.stats import t_interval
    lo, hi = t_interval(full) if full else (None, None)
    out.update(trivial=d90["trivial"], full_ft={"scores": full, "mean": float(np.mean(full)) if full else None,
                                               "ci": None if lo is None else [lo, hi]})
    if out["status"] == REFUSED:
        out["why"] = d90["stopped"]
    for name, b in d90.get("by_definition", {}).items():
        out.setdefault("d90", {})[name] = {
            "d90": b["d90"], "ci": b["d90_ci"], "reached": b["reached"], "target": b["target"], "text": d90_text(b),
            "per_seed": {s: p["bracket"] for s, p in b["per_seed"].items()}}
    return out


def _f(x, k=3) -> str:
    return "-" if x is None else f"{x:.{k}f}"


def table(rows: list[dict], definitions) -> str:
    head = ["checkpoint", "step", "held-out MLM loss", "full FT (95% CI)", "trivial",
            *[f"{d} d_90" for d in definitions], "status"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        ft = r.get("full_ft") or {}
        ci = f" [{_f(ft['ci'][0])}, {_f(ft['ci'][1])}]" if ft.get("ci") else ""
        ds = [r.get("d90", {}).get(d, {}).get("text", "-") for d in definitions]
        lines.append(f"| {r['name']} | {r['step']:,} | {_f(r['held_out_loss'])} | {_f(ft.get('mean'))}{ci} | "
                     f"{_f(r.get('trivial'))} | " + " | ".join(ds) + f" | {r['status']} |")
    return "\n".join(lines) + "\n"


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 360 else f"{s:.0f} s"


def markdown(result: dict) -> str:
    t = result["time"]
    rows = result["rows"]
    notes = [f"- {r['name']}: {r['why']}" for r in rows if r.get("why")]
    return "\n".join([
        "# d_90 along pre-training (benchmarks/pretrain_d90.py)", "", PAPER, "",
        f"Command: `{result['command']}`", "",
        f"Time: {_hours(t['wall_s'])} wall, {_hours(t['cpu_s'])} CPU over {len(t['invocations'])} "
        f"invocation(s) ({result['threads']} torch thread(s)); per phase in pretrain-d90.json.", "",
        f"Downstream: {result['downstream']}. {result['corpus_text']}.", "",
        table(rows, result["definitions"]), *(["Not informative:", *notes, ""] if notes else []),
        "d_90: SAID, the geometric mean over seeds with its 95% CI and each seed's bracket (`peftzoo d90`; its "
        "JSON per checkpoint in d90/). A checkpoint whose full fine-tuning does not clearly beat the trivial score "
        f"is refused by `peftzoo d90` and shown as *{REFUSED}*: no d_90 exists there to be lowered.", ""])


def _d90_points(a, rs: list[dict], definition: str, colour: str, marker: str, label: str, line: bool) -> None:
    """One definition's d_90 per checkpoint with its 95% CI over seeds; hollow where not informative, a down
    triangle where a seed crossed below the grid (the d_90 is then an upper bound)."""
    pts = [(r["step"], r["d90"][definition], r["status"]) for r in rs
           if r.get("d90", {}).get(definition, {}).get("d90")]
    if not pts:
        return
    if line:
        a.plot([s for s, _, _ in pts], [p["d90"] for _, p, _ in pts], color=colour, lw=1)
    for i, (s, p, st) in enumerate(pts):
        lo, hi = p["ci"] or (p["d90"], p["d90"])
        bound = any(b[0] is None for b in p["per_seed"].values())
        a.errorbar([s], [p["d90"]], yerr=[[p["d90"] - lo], [hi - p["d90"]]], capsize=3, color=colour,
                   marker="v" if bound else marker, mfc="none" if st != "measured" else colour,
                   label=label if i == 0 else None)


def plot(rows: list[dict], path: Path, definitions, title: str = "") -> None:
    """Three panels over pre-training steps (symlog, ticks at the checkpoints): d_90 per definition (95% CI over
    seeds; hollow: not informative; refused checkpoints as x at the bottom), the held-out MLM loss, full FT's
    score (95% CI) with the trivial score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(6.4, 8.0), sharex=True)
    widths = sorted({r["width"] for r in rows}, reverse=True)
    for wi, w in enumerate(widths):
        rs = sorted((r for r in rows if r["width"] == w), key=lambda r: r["step"])
        mk, xs = "osD^"[wi % 4], [r["step"] for r in rs]
        for di, d in enumerate(definitions):
            _d90_points(a, rs, d, f"C{di}", mk, f"h{w} {d}", wi == 0)
        refused = [r["step"] for r in rs if r["status"] == REFUSED]
        if refused:
            a.scatter(refused, [0.05] * len(refused), marker="x", color="k", transform=a.get_xaxis_transform(),
                      label=f"h{w} {REFUSED}")
        b.plot(xs, [r["held_out_loss"] for r in rs], marker=mk, color="C3", label=f"h{w}")
        ft = [r for r in rs if r.get("full_ft", {}).get("mean") is not None]
        if ft:
            m = np.array([r["full_ft"]["mean"] for r in ft])
            ci = np.array([r["full_ft"]["ci"] or [x, x] for r, x in zip(ft, m)], float)
            c.errorbar([r["step"] for r in ft], m, yerr=[m - ci[:, 0], ci[:, 1] - m], marker=mk, capsize=3,
                       color="C2", label=f"h{w} full FT")
            c.plot([r["step"] for r in ft], [r["trivial"] for r in ft], color="grey", ls=":",
                   label="trivial" if wi == 0 else None)
    steps = sorted({r["step"] for r in rows})
    for ax, lab in ((a, "SAID d_90 (hollow: not informative)"), (b, "held-out MLM loss (nats)"), (c, "dev score")):
        ax.set_ylabel(lab, fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.set_xscale("symlog", linthresh=min((s for s in steps if s > 0), default=1))
    if a.has_data():
        a.set_yscale("log")
    c.set_xticks(steps, [f"{s:,}" for s in steps], fontsize=7)
    c.set_xlabel("pre-training steps")
    a.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        write_figure(Path(path), fig, dpi=110)
    finally:
        plt.close(fig)
