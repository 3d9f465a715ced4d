"""The verdicts of rows 14, 15 and 18 (plans.py), decided from run records by rules fixed before any number.

Common to all three: each configuration's LR is selected on validation over its sweep (``protocol.selection``, seed
0) and its dev score read at the selected epoch on every seed at that LR; "training loss" is the last epoch's mean
training loss. A comparison is a per-seed difference (configurations share their seeds, hence their batch order),
decided by its 95% t-interval over the seeds (``stats.t_interval``, >= 3 seeds): "holds" when the interval lies
above 0, "does not hold" when it lies below 0 (the reverse is significant), "undecided" otherwise. A verdict that
rests on a configuration whose selected LR is an end point of its grid says so (``at_edge``).
"""
from __future__ import annotations

import numpy as np

from peftzoo.bench.leaderboard import at_edge
from peftzoo.bench.protocol import selection
from peftzoo.bench.stats import t_interval

MIN_SEEDS = 3
SRC = "Thinking Machines, 'LoRA Without Regret' (2025)"
RULE = ("per-seed differences, 95% t-interval over ≥ 3 seeds: holds when it lies above 0, does not hold when below "
        "0, undecided otherwise; † marks a selected LR at an end point of its grid")
CMD = "`PEFTZOO_DATA_DIR=../shared/data python benchmarks/claims/run.py --rows {}`"


def select(recs):
    """The configuration's ``Selected`` (its LR and epoch), or None when no run of it finished."""
    return next(iter(selection([r for r in recs if r is not None]).values()), None)


def per_seed(sel, what: str) -> dict:
    """{seed: dev score (points) at the selected epoch, or the last epoch's training loss} at the selected LR."""
    if what == "dev":
        return {r.seed: 100 * r.history[sel.epoch - 1].dev["score"] for r in sel.runs}
    return {r.seed: r.history[-1].loss for r in sel.runs}


def decide(diffs) -> tuple[str, list]:
    """(verdict of "the mean difference > 0", its 95% interval) over per-seed differences."""
    if len(diffs) < MIN_SEEDS:
        return f"undecided ({len(diffs)} < {MIN_SEEDS} seeds)", [None, None]
    lo, hi = t_interval(diffs)
    v = "holds" if lo > 0 else "does not hold (the reverse is significant)" if hi < 0 else "undecided (CI holds 0)"
    return v, [lo, hi]


def combine(parts: dict, edge: list) -> str:
    vs = list(parts.values())
    out = ("**holds**" if all(v.startswith("holds") for v in vs) else
           "**does not hold**" if all(v.startswith("does not") for v in vs) else
           "**undecided**" if all(v.startswith("undecided") for v in vs) else "**mixed**")
    if out != "**holds**" and out != "**does not hold**":
        out += ": " + "; ".join(f"{k}: {v}" for k, v in parts.items())
    if edge:
        out += " († rests on an LR at a grid end: " + ", ".join(edge) + ")"
    return out


def _diff(a: dict, b: dict, sign=1.0) -> dict:
    """{seed: sign·(a − b)} over the seeds both have (configurations share seeds, hence batch orders)."""
    return {s: sign * (a[s] - b[s]) for s in sorted(set(a) & set(b))}


def _ci(v, ci) -> str:
    v = list(v.values()) if isinstance(v, dict) else v
    m = f"{np.mean(v):+.2f}" if v else "—"
    return m + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci[0] is not None else "")


def _name(key) -> str:
    return " ".join("all" if k is None else str(k) for k in key)


def _selected(groups) -> tuple[dict, list]:
    sel = {k: select(v) for k, v in groups.items()}
    edge = sorted(_name(k) + "†" for k, s in sel.items() if s is not None and at_edge(s))
    return sel, edge


def row14(groups: dict) -> dict:
    """LoRA's batch-size penalty > full FT's at each rank. Keys (method label, batch size); smallest vs largest
    batch. dev: P_m = dev(small) − dev(large); loss: Q_m = loss(large) − loss(small); per rank, per seed,
    P_LoRA − P_full (and Q_LoRA − Q_full) > 0. Holds when every (rank, measure) part holds."""
    batches = sorted({b for _, b in groups})
    lo_b, hi_b = batches[0], batches[-1]
    sel, edge = _selected({k: v for k, v in groups.items() if k[1] in (lo_b, hi_b)})  # the ones decided on
    ranks = sorted({m for m, _ in groups if m != "full FT"}, key=lambda m: int(m.split("=")[1]))
    parts, nums = {}, []
    for m in ranks:
        for what, sign in (("dev", 1.0), ("loss", -1.0)):
            got = [sel.get((x, b)) for x in (m, "full FT") for b in (lo_b, hi_b)]
            if any(g is None for g in got):
                parts[f"{m} {what}"] = "undecided (a configuration has no finished run)"
                continue
            (ls, ll, fs, fl) = (per_seed(g, what) for g in got)
            pen_l, pen_f = _diff(ls, ll, sign), _diff(fs, fl, sign)
            d = _diff(pen_l, pen_f)
            v, ci = decide(list(d.values()))
            parts[f"{m} {what}"] = v
            nums.append(f"{m} {what}: LoRA's penalty {_ci(pen_l, decide(list(pen_l.values()))[1])}, full FT's "
                        f"{_ci(pen_f, decide(list(pen_f.values()))[1])}, difference {_ci(d, ci)}")
    lrs = "; ".join(f"{_name(k)}: lr {s.lr:g}" for k, s in sorted(sel.items(), key=lambda x: str(x[0])) if s)
    return {"parts": parts, "verdict": combine(parts, edge), "ours": "; ".join(nums) + f" (selected: {lrs})",
            "edge": edge, "rule": row14_rule(lo_b, hi_b)}


def row14_rule(lo_b, hi_b) -> str:
    return (f"penalty of batch {hi_b} vs {lo_b}: dev(batch {lo_b}) − dev(batch {hi_b}) in points, and final training "
            f"loss(batch {hi_b}) − loss(batch {lo_b}); per rank, LoRA's penalty − full FT's; holds when that is > 0 "
            f"for both ranks and both measures; {RULE}")


def _size(n):
    return float("inf") if n is None else n


def row15(groups: dict) -> dict:
    """Keys (method label, training-set size; None = the whole task). Gap = full FT − LoRA dev (points, per seed);
    it *opens* at the smallest size from which its CI lies above 0 at every larger size. Holds: no rank's gap is
    significant at the smallest size, at least one rank's gap opens, and a lower rank's opens no later than a
    higher rank's. Does not hold: a gap significant at the smallest size (LoRA behind with the least data: no
    capacity effect), or a higher rank's gap opening at a smaller size than a lower rank's. Undecided: no gap opens
    (the capacity is not reached at these sizes). The training-loss gap (LoRA − full FT) is reported, not decided."""
    sel, edge = _selected(groups)
    sizes = sorted({n for _, n in groups}, key=_size)
    ranks = sorted({m for m, _ in groups if m != "full FT"}, key=lambda m: int(m.split("=")[1]))
    opens, first_sig, nums = {}, {}, []
    for m in ranks:
        sig = []
        for n in sizes:
            f, lo = sel.get(("full FT", n)), sel.get((m, n))
            if f is None or lo is None:
                sig.append(None)
                continue
            d = list(_diff(per_seed(f, "dev"), per_seed(lo, "dev")).values())
            v, ci = decide(d)
            dl = list(_diff(per_seed(lo, "loss"), per_seed(f, "loss")).values())
            sig.append(v.startswith("holds"))
            nums.append(f"{m} n={'all' if n is None else n}: gap {_ci(d, ci)}, loss gap {_ci(dl, decide(dl)[1])}")
        first_sig[m] = sig[0]
        at = next((i for i in range(len(sizes)) if all(x is True for x in sig[i:])), None)
        opens[m] = at
    missing = [m for m in ranks if first_sig[m] is None]
    order = [opens[m] if opens[m] is not None else len(sizes) for m in ranks]
    if missing:
        verdict = "**undecided**: no finished runs at the smallest size for " + ", ".join(missing)
    elif any(first_sig.values()):
        verdict = "**does not hold**: the gap is significant already at the smallest size for " + \
            ", ".join(m for m in ranks if first_sig[m])
    elif all(o is None for o in opens.values()):
        verdict = "**undecided**: no gap opens at any size (LoRA within the CI of full FT: capacity not reached)"
    elif any(order[i] < order[j] for i in range(len(ranks)) for j in range(i)):
        verdict = "**does not hold**: a higher rank's gap opens at a smaller size than a lower rank's"
    else:
        verdict = "**holds**"
    where = "; ".join(f"{m}: " + ("never" if opens[m] is None else
                                  f"from n={'all' if sizes[opens[m]] is None else sizes[opens[m]]}") for m in ranks)
    if edge:
        verdict += " († rests on an LR at a grid end: " + ", ".join(edge) + ")"
    opened = {m: None if o is None else "all" if sizes[o] is None else sizes[o] for m, o in opens.items()}
    return {"opens": opened, "verdict": verdict,
            "ours": f"gap opens: {where}; " + "; ".join(nums), "edge": edge, "rule": ROW15_RULE}


ROW15_RULE = ("gap = full FT − LoRA dev (points, per seed); it opens at the smallest size from which its 95% CI lies "
              "above 0 at every larger size; holds: no gap significant at the smallest size, at least one opens, "
              "lower ranks no later than higher ones; does not hold: a gap significant at the smallest size, or a "
              "higher rank opening first; undecided: no gap opens; training-loss gap reported only; † as row 14")


def steps_to(rec, target: float) -> tuple[int, bool]:
    """(first step whose validation score ≥ ``target``, reached): over the run's curve and its epoch ends; a run
    that never reaches it counts at its last step (a lower bound)."""
    per_epoch = rec.steps // max(1, len(rec.history))
    pts = [(s, v) for s, v in rec.extra.get("val_curve", [])]
    pts += [((i + 1) * per_epoch if i < len(rec.history) - 1 else rec.steps, h.val["score"])
            for i, h in enumerate(rec.history) if h.val]
    hit = [s for s, v in sorted(pts) if v >= target]
    return (hit[0], True) if hit else (rec.steps, False)


def row18(groups: dict, frac: float = 0.95) -> dict:
    """Keys ("LoRA r=8",) and ("LoRA+ r=8",). Target T = ``frac`` × the lower of the two methods' seed-mean final
    validation scores at their selected LRs. Per seed: steps(LoRA) − steps(LoRA+) > 0 ("faster") and
    steps(LoRA) − 2·steps(LoRA+) > 0 ("×2"); a run that never reaches T counts at its last step."""
    ka = next((k for k in groups if k[0].startswith("LoRA r")), ("LoRA",))
    kb = next((k for k in groups if k[0].startswith("LoRA+")), ("LoRA+",))
    sel, edge = _selected(groups)
    sa, sb = sel.get(ka), sel.get(kb)
    if sa is None or sb is None:
        return {"verdict": "**undecided**: a method has no finished run", "ours": "—", "edge": edge, "rule": ROW18_RULE}
    curves = [r for s in (sa, sb) for r in s.runs if "val_curve" not in r.extra]
    if curves:
        return {"verdict": f"**undecided**: {len(curves)} selected runs have no validation curve", "ours": "—",
                "edge": edge, "rule": ROW18_RULE}
    target = frac * min(np.mean([r.history[-1].val["score"] for r in s.runs]) for s in (sa, sb))
    ka, kb = ka[0], kb[0]
    got = {k: {r.seed: steps_to(r, target) for r in s.runs} for k, s in ((ka, sa), (kb, sb))}
    a, b = ({s: v[0] for s, v in got[k].items()} for k in (ka, kb))
    common = sorted(set(a) & set(b))
    parts = {"faster": decide([a[s] - b[s] for s in common])[0],
             "×2": decide([a[s] - 2 * b[s] for s in common])[0]}
    missed = [f"{k} s{s}" for k in got for s, (_, ok) in got[k].items() if not ok]
    verdict = combine(parts, edge) + (f" (not reached, counted at the last step: {', '.join(missed)})" if missed else "")
    ma, mb = np.mean([a[s] for s in common]), np.mean([b[s] for s in common])
    ours = (f"target {target:.4f} (validation); steps to it: {ka} {[a[s] for s in common]} (lr {sa.lr:g}), {kb} "
            f"{[b[s] for s in common]} (lr {sb.lr:g}); ratio of means {ma / mb:.2f}×")
    return {"target": target, "steps": {ka: a, kb: b}, "parts": parts, "verdict": verdict, "ours": ours,
            "edge": edge, "rule": ROW18_RULE}


ROW18_RULE = ("target = 0.95 × the lower of the two methods' seed-mean final validation scores (each at its own LR "
              "selected on validation); steps to the first validation score ≥ target (scored every 5 steps and at "
              "epoch ends); per seed, steps(LoRA) − steps(LoRA+) > 0: faster; steps(LoRA) − 2·steps(LoRA+) > 0: ×2; "
              "95% t-interval over ≥ 3 seeds; a run that never reaches it counts at its last step (marked); † as row 14")
