"""What a d_90 search's JSON says, in words (``summary``), as a markdown table (``table``) and as a plot.

Files written before the trivial-score check (issue 22) have no ``trivial``: they are read as they are and flagged
(``OLD``), never shown as informative.
"""
from __future__ import annotations

from pathlib import Path

from peftzoo import palette
from peftzoo.bench.store import write_figure
from peftzoo.intrinsic.d90 import fmt2

OLD = "written before the trivial-score check (issue 22): no trivial score, informativeness not checked"
NOT_INFORMATIVE = "NOT INFORMATIVE"


def is_old(r: dict) -> bool:
    return "trivial" not in r


def _d(x) -> str:
    return "-" if x is None else f"{int(round(x)):,}"


def _seed(s: str, p: dict) -> str:
    lo, hi = p["bracket"]
    if hi is None:
        return f"s{s} {p['message']}"
    return f"s{s} {_d(lo)}..{_d(hi)}" if lo is not None else f"s{s} <= {_d(hi)} (below the grid)"


def d90_text(b: dict) -> str:
    """``d90 = 1,234 (95% CI ...)`` or ``d90 not reached ...`` of one definition's result."""
    n = len(b["per_seed"])
    if not b["reached"]:
        short = [p for p in b["per_seed"].values() if p["d90"] is None]
        best = max((p["best"] for p in short if p["best"] is not None), default=None)
        got, want = fmt2(best, b["target"]) if best is not None else ("-", f"{b['target']:.3f}")
        return f"d90 not reached: best {got} < target {want} ({len(short)} of {n} seeds short of it)"
    below = any(p["bracket"][0] is None for p in b["per_seed"].values())
    ci = f"95% CI {_d(b['d90_ci'][0])}..{_d(b['d90_ci'][1])} over {n} seeds" if b.get("d90_ci") else \
        f"{n} seed{'s' * (n != 1)}"
    brackets = [p["bracket"] for p in b["per_seed"].values()]
    width = "" if below else f", brackets <= {max(hi / lo for lo, hi in brackets):.2f}x"
    return f"d90 {'<=' if below else '='} {_d(b['d90'])} ({ci}{width})"


def baseline_text(r: dict) -> str:
    n = len(r.get("baseline_scores") or [])
    ci = r.get("baseline_ci")
    spread = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    given = ", given" if r.get("baseline_given") else ""
    return f"full FT {r['baseline']:.3f}{spread} ({n} seed{'s' * (n != 1)}{given})"


def definitions(r: dict) -> list[dict]:
    """Each definition's result, the headline one (``r["definition"]``) first (JSON files sort their keys)."""
    by = r.get("by_definition", {})
    first = r.get("definition", {}).get("name")
    return [by[k] for k in sorted(by, key=lambda k: k != first)]


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def summary(name: str, r: dict) -> str:
    """A few lines: the three numbers that decide informativeness, then per definition its target, d_90 with its
    CI over seeds, and each seed's bracket (or why it has none)."""
    if is_old(r):
        return (f"{name}: {OLD}; d90 = {_d(r.get('d90'))} (bracket {r.get('bracket')}, full FT "
                f"{_num(r.get('baseline'))})")
    head = f"{name}: trivial {r['trivial']:.3f} ({r.get('trivial_note', 'the best constant prediction')}); " \
           f"{baseline_text(r)}"
    lines = [head] + ([f"  {NOT_INFORMATIVE}: {r['not_informative_because']}"] if not r["informative"] else [])
    for b in definitions(r):
        per = "; ".join(_seed(s, p) for s, p in b["per_seed"].items())
        lines.append(f"  {b['definition']['name']} ({b['definition']['text']}): target {b['target']:.3f}; "
                     f"{d90_text(b)}; per seed: {per}")
    if "by_definition" not in r:  # --baseline-only
        lines.append("  targets: " + ", ".join(f"{k} {v:.3f}" for k, v in r["targets"].items())
                     + ("; a search would be informative" if r["informative"] else ""))
    return "\n".join(lines)


def table(results: dict[str, dict]) -> str:
    """One markdown row per (search, definition); not informative and old results are marked in the first cell."""
    rows = ["| search | trivial | full FT | definition | target | d_90 | per-seed brackets |", "|---" * 7 + "|"]
    for name, r in results.items():
        if is_old(r):
            rows.append(f"| {name} ({OLD}) | - | {_num(r.get('baseline'))} | - | {_num(r.get('target'))} | "
                        f"{_d(r.get('d90'))} | {r.get('bracket')} |")
            continue
        mark = "" if r["informative"] else f" **{NOT_INFORMATIVE}**"
        for b in definitions(r):
            per = "; ".join(_seed(s, p) for s, p in b["per_seed"].items())
            rows.append(f"| {name}{mark} | {r['trivial']:.3f} | {baseline_text(r)} | {b['definition']['text']} | "
                        f"{b['target']:.3f} | {d90_text(b)} | {per} |")
    return "\n".join(rows) + "\n"


def plot(results: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Score vs d (log axis), one colour per result, its method's (``peftzoo.palette``; shades of it where results
    share a method): the mean over seeds where every seed was scored (error bars:
    std), single-seed bisection points faint; full FT dotted, the target dashed, the trivial score thin solid, the
    d_90 dash-dotted. Not informative (and old, unchecked) results say so in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = palette.series([r.get("method") or label for label, r in results.items()])  # DID, SAID: their colours
    for c, (label, r) in zip(colors, results.items()):
        n = len(r.get("seeds") or [0])
        pts = sorted((int(d), v) for d, v in r["curve"].items())
        full = [(d, v) for d, v in pts if len(v["scores"]) >= n]
        part = [(d, s) for d, v in pts if len(v["scores"]) < n for s in v["scores"]]
        mark = f" ({NOT_INFORMATIVE})" if not r.get("informative", True) else " (old: unchecked)" if is_old(r) else ""
        reached = r.get("reached") and r.get("d90") is not None
        how = f" ({r['definition']['name']})" if "definition" in r else ""
        ax.errorbar([d for d, _ in full], [v["mean"] for _, v in full], yerr=[v["std"] for _, v in full], marker="o",
                    ms=4, capsize=2, color=c,
                    label=f"{label}: d90 {'= ' + _d(r['d90']) if reached else 'not reached'}{how}{mark}")
        if part:
            ax.scatter(*zip(*part), s=10, color=c, alpha=0.4)
        ax.axhline(r["target"], color=c, ls="--", lw=0.8)
        for name, b in r.get("by_definition", {}).items():  # the other definitions' targets, named
            if b["target"] != r["target"]:
                ax.axhline(b["target"], color=c, ls="--", lw=0.5, alpha=0.5)
                ax.annotate(name, (0.005, b["target"]), xycoords=("axes fraction", "data"), fontsize=7, color=c,
                            va="bottom")
        ax.axhline(r["baseline"], color=c, ls=":", lw=0.8)
        if not is_old(r):
            ax.axhline(r["trivial"], color=c, ls="-", lw=0.6, alpha=0.6)
        if reached:
            ax.axvline(r["d90"], color=c, ls="-.", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel("score")
    ax.set_title(title + "  (dotted: full FT, dashed: target, thin: trivial)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        write_figure(Path(path), fig, dpi=110)
    finally:
        plt.close(fig)
