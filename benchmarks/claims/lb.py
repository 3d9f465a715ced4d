"""Claims 1, 3 and 11 from the `cpu` leaderboard's runs (results/cpu/runs): LR sweeps, budgets and 3 seeds per row.

Every number comes from ``peftzoo.bench.leaderboard.build`` (the table's own selection on validation) and
``stats.paired_bootstrap`` (the table's test: dev examples resampled, the draw shared by every seed of both rows).
A comparison "A ≈ B" holds when the bootstrap does not separate them (p ≥ 0.05) or |A − B| < 1 point; "A > B"
holds when A − B > 0 with p < 0.05, does not hold when B − A > 0 with p < 0.05, and is undecided otherwise.
"""
from __future__ import annotations

import json
import math

from peftzoo.bench import stats, store
from peftzoo.bench.leaderboard import at_edge, build, dev_preds
from peftzoo.bench.tasks import get_task

SRC = "the `cpu` leaderboard (results/cpu: all-MiniLM-L6-v2, 1,500 training examples, 2 epochs, LR selected on " \
      "validation at the r = 8 count, 3 seeds)"


def load(root="results", suite="cpu") -> dict | None:
    runs = store.read_runs(root, suite)
    if not runs:
        return None
    b = build(runs, "val", n_boot=2000)
    rows = {(r.method, r.label): r for r in b.rows}
    return {"b": b, "rows": rows, "tasks": b.tasks}


def compare(lb, a: tuple, b: tuple, task: str) -> dict | None:
    """a − b on ``task`` (rows keyed (method, budget label)): difference of seed means ×100, bootstrap p."""
    ra, rb = lb["rows"].get(a), lb["rows"].get(b)
    if ra is None or rb is None or task not in ra.tasks or task not in rb.tasks:
        return None
    sa, sb = ra.tasks[task].sel, rb.tasks[task].sel
    labels = {sp: stats.decode_preds(x) for sp, x in sa.runs[0].dev_labels.items()}
    diff, p = stats.paired_bootstrap(get_task(task).metric, dev_preds(sa), dev_preds(sb), labels, n_boot=2000)
    return {"diff": 100 * diff, "p": p, "a": 100 * ra.tasks[task].mean, "b": 100 * rb.tasks[task].mean,
            "n": min(ra.tasks[task].n, rb.tasks[task].n)}


def _fmt(c):
    return f"{c['a']:.1f} vs {c['b']:.1f} (Δ {c['diff']:+.1f}, p = {c['p']:.3f}, n = {c['n']} seeds)"


def similar(c) -> str:
    return "≈ holds" if (c["p"] >= 0.05 or abs(c["diff"]) < 1) else "≈ does not hold"


def better(c) -> str:
    if c["p"] < 0.05:
        return "holds" if c["diff"] > 0 else "does not hold (the reverse is significant)"
    return "undecided (p ≥ 0.05)"


def _verdict(parts: list[str]) -> str:
    if all(p.startswith(("holds", "≈ holds")) for p in parts):
        return "**holds**"
    if all(p.startswith(("does not", "≈ does not")) for p in parts):
        return "**does not hold**"
    return "**mixed**: " + "; ".join(parts)


def claim1(lb):
    """LoRA's best LR / full FT's, per task, from the stage-1 sweeps (seed 0) at the middle budget."""
    sel = lb["b"].selection
    out, ratios = [], []
    for t in lb["tasks"]:
        full = next((s for (tt, m, _), s in sel.items() if tt == t and m == "full"), None)
        lora = next((s for (tt, m, _), s in sel.items() if tt == t and m == "lora" and len(s.per_lr) > 1), None)
        if not full or not lora:
            continue
        r = lora.lr / full.lr
        ratios.append(r)
        out.append(f"{t}: LoRA {lora.lr:g} / full {full.lr:g} = {r:.0f}×")
    if not ratios:
        return None
    ok = [10 ** 0.5 - 1e-9 <= r <= 10 ** 1.5 + 1e-9 for r in ratios]
    verdict = ("**holds** within the grid's resolution" if all(ok) else "**does not hold**" if not any(ok)
               else "**mixed** across tasks")
    edge = [t for t in lb["tasks"] for (tt, m, _), s in sel.items()
            if tt == t and m in ("full", "lora") and len(s.per_lr) > 2 and at_edge(s)]
    if edge:
        verdict += " (a selected LR is an end point of its grid on " + ", ".join(sorted(set(edge))) + ")"
    return ("1", "LoRA's best LR ≈ 10× full fine-tuning's", "Thinking Machines, 'LoRA Without Regret' 2025: fitted "
            "multiplier 9.8", f"{SRC}; LoRA r = 8 (α = 16) and full FT, 5-point grids, selected on validation "
            "(seed 0: the sweep seed; r = 1 and 64 reuse r = 8's LR, so the rank dependence is not swept)",
            "; ".join(out), verdict, "every task's ratio within 10× ± half a decade (3.2×–32×): the grid's resolution;"
            " the LR is only as precise as the grid's half-decade steps", None)


def claim3(lb):
    parts, nums = [], []
    for t in lb["tasks"]:
        c = compare(lb, ("lora", "9,216"), ("lora", "589,824"), t)
        if c:
            nums.append(f"{t} r=1 vs r=64: {_fmt(c)}")
            parts.append(similar(c))
    if not nums:
        return None
    return ("3", "Rank matters little on GLUE-style tasks: r = 1 ≈ r = 64", "Hu et al. 2021 Tables 6–7",
            f"{SRC}; LoRA at the r = 1 and r = 64 counts (9,216 and 589,824 elements), at the LR selected at r = 8",
            "; ".join(nums), _verdict(parts), "≈: paired bootstrap p ≥ 0.05 or |Δ| < 1 point, on every task", None)


def claim11(lb):
    tests = [("VeRA (9,216: 8× fewer) ≈ LoRA (73,728)", ("vera", "9,216"), ("lora", "73,728"), similar),
             ("VeRA paper r=1024 ≈ LoRA (73,728)", ("vera", "paper"), ("lora", "73,728"), similar),
             ("DoRA > LoRA at 73,728 (DoRA's lowest)", ("dora", "73,728"), ("lora", "73,728"), better),
             ("AdaLoRA > LoRA at 9,216", ("adalora", "9,216"), ("lora", "9,216"), better),
             ("AdaLoRA > LoRA at 73,728", ("adalora", "73,728"), ("lora", "73,728"), better),
             ("AdaLoRA > LoRA at 589,824", ("adalora", "589,824"), ("lora", "589,824"), better),
             ("LoRA+ > LoRA at 73,728", ("loraplus", "73,728"), ("lora", "73,728"), better)]
    nums, verdicts = [], []
    for name, a, b, rule in tests:
        per = [(t, compare(lb, a, b, t)) for t in lb["tasks"]]
        per = [(t, c) for t, c in per if c]
        if not per:
            continue
        vs = [rule(c) for _, c in per]
        nums.append(f"{name}: " + ", ".join(f"{t} {_fmt(c)}" for t, c in per))
        verdicts.append(f"{name}: " + ("holds" if all(v.startswith(("holds", "≈ holds")) for v in vs) else
                                       "does not hold" if all(v.startswith(("does not", "≈ does not")) for v in vs)
                                       else "undecided/mixed (" + ", ".join(vs) + ")"))
    if not nums:
        return None
    return ("11", "VeRA ≈ LoRA at ~10× fewer parameters; DoRA > LoRA at low rank; AdaLoRA > LoRA at equal budget; "
            "LoRA+ > LoRA", "Kopiczko et al. 2024; Liu et al. 2024; Zhang et al. 2023; Hayou et al. 2024",
            f"{SRC}; each method at its own LR selected on validation", "; ".join(nums), "; ".join(verdicts),
            "≈: p ≥ 0.05 or |Δ| < 1 point; >: Δ > 0 with p < 0.05 (paired bootstrap over dev examples), on every task",
            None)


def rows(root="results", suite="cpu") -> dict:
    """{claim number: row} for the claims the leaderboard's runs can answer now."""
    lb = load(root, suite)
    if lb is None:
        return {}
    out = {}
    for f in (claim1, claim3, claim11):
        r = f(lb)
        if r:
            out[r[0]] = r
    return out


if __name__ == "__main__":
    for r in rows().values():
        print(json.dumps(r, ensure_ascii=False))
