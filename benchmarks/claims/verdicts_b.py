"""The verdicts of rows 12, 13, 16, 17 and 19 (plans_b.py), decided from run records by rules fixed before any number.

As rows 14, 15, 18 (verdicts.py): each configuration's LR selected on validation over its sweep (seed 0), its dev
score read at the selected epoch on every seed at that LR; a comparison is a per-seed difference decided by its 95%
t-interval over ≥ 3 seeds ("holds" above 0, "does not hold" below 0, "undecided" otherwise); † marks a selected LR
at an end point of its grid. ΔW quantities are the probe's (probe.py) at the last epoch, mean over the q/v layers.
"""
from __future__ import annotations

import numpy as np

import plans_b
from plans_b import RowsB
from probe import last
from verdicts import RULE, _ci, _diff, _selected, combine, decide, per_seed


def _spec(sel, what: str) -> dict:
    """{seed: the last epoch's ΔW ``what`` (probe.py)} of a selection's runs that have it."""
    return {r.seed: last(r)[what] for r in sel.runs if last(r) is not None}


def _m(v: dict) -> str:
    """A quantity's seed mean [95% CI] (no sign: a rank or a norm)."""
    ci = decide(list(v.values()))[1]
    return f"{np.mean(list(v.values())):.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci[0] is not None else "")


def _edge(verdict: str, edge: list) -> str:
    return verdict + (" († rests on an LR at a grid end: " + ", ".join(edge) + ")" if edge else "")


def _pair(sel, a, b, what="dev", get=per_seed):
    """(verdict of a − b > 0, its CI, the per-seed differences) between two keys' selections (None if missing)."""
    if sel.get(a) is None or sel.get(b) is None:
        return "undecided (a configuration has no finished run)", [None, None], {}
    d = _diff(get(sel[a], what), get(sel[b], what))
    v, ci = decide(list(d.values()))
    return v, ci, d


def failed(rec, threshold: float) -> bool:
    """Row 12's failure: the run did not finish, or its final validation score (or loss) is not finite or is below
    ``threshold``."""
    if rec is None or not rec.ok:
        return True
    h = rec.history[-1]
    score, loss = h.val["score"], h.loss
    return not (np.isfinite(score) and (loss is None or np.isfinite(loss))) or score < threshold


def row12(groups: dict, threshold: float = RowsB().fail_score) -> dict:
    """Keys (f"LoRA r={r} <init>", weight decay). Three parts. "low rank": at every zero-B configuration's selected
    LR (the paper's init; a random B starts ΔW at full rank r, so there it is reported only), the 95% CI of ΔW's
    stable rank lies below r/2 (holds), or one lies above r/2 (does not hold). "decay lowers the
    rank": per init, stable rank at the smallest decay − at the largest > 0 per seed (combined over inits). "fails
    loudly": every failed run (``failed``) of the row, sweep included, has ‖ΔW‖_F above every converged run's of its
    configuration (of the row, where none of its configuration converged) and an effective rank above their median,
    or a non-finite ΔW (holds); none does (does not hold); some (mixed); no failed run: undecided (that half is
    untested). A failed run with no ΔW (it crashed) is counted apart. Reported: failures per init, effective ranks."""
    r = int(next(iter(groups))[0].split("r=")[1].split()[0])  # the rank, from the key ("LoRA r=8 zero-B")
    sel, edge = _selected(groups)
    parts, nums = {}, []
    low = []
    for k, s in sorted(sel.items(), key=str):
        st = _spec(s, "stable_rank") if s else {}
        if st:
            nums.append(f"{k[0]} wd {k[1]:g} (lr {s.lr:g}): stable rank {_m(st)}, effective "
                        f"{_m(_spec(s, 'effective_rank'))}, ‖ΔW‖_F {_m(_spec(s, 'dW_fro'))}")
        if not k[0].endswith(plans_b.INIT_LABEL[True]):
            continue
        if len(st) < 3:
            low.append(None)
            continue
        lo, hi = decide([x - r / 2 for x in st.values()])[1]
        low.append("below" if hi < 0 else "above" if lo > 0 else "inside")
    parts["low rank"] = ("undecided (a configuration has < 3 probed seeds)" if None in low or not low else
                         "holds" if all(x == "below" for x in low) else
                         "does not hold (the reverse is significant)" if "above" in low else "undecided (CI holds r/2)")
    inits = sorted({k[0] for k in groups})
    decays = sorted({k[1] for k in groups})
    dec = {i: _pair(sel, (i, decays[0]), (i, decays[-1]), "stable_rank", _spec) for i in inits}
    parts["decay lowers the rank"] = combine({i: v[0] for i, v in dec.items()}, []).replace("*", "").split(":")[0]
    nums += [f"{i}: stable rank wd {decays[0]:g} − wd {decays[-1]:g} {_ci(v[2], v[1])}" for i, v in dec.items()]
    loud, quiet, crashed, fails = 0, 0, 0, {i: 0 for i in inits}
    every = [last(x) for v in groups.values() for x in v if not failed(x, threshold) and last(x) is not None]
    for k, recs in groups.items():
        ok = [last(x) for x in recs if not failed(x, threshold) and last(x) is not None] or every
        for x in recs:
            if not failed(x, threshold):
                continue
            fails[k[0]] += 1
            m, ep = last(x), (x.extra or {}).get("delta_spectrum", {}).get("epochs") if x is not None and x.ok else None
            if m is None and not (ep and ep[-1].get("nonfinite")):
                crashed += 1
                continue
            big = m is None or (ok and m["dW_fro"] > max(o["dW_fro"] for o in ok) and
                                m["effective_rank"] > np.median([o["effective_rank"] for o in ok]))
            loud, quiet = loud + bool(big), quiet + (not big)
    parts["fails loudly"] = ("undecided (no run failed: untested)" if loud + quiet == 0 else "holds" if not quiet
                             else "does not hold (quiet failures)" if not loud else
                             f"mixed ({loud} loud, {quiet} quiet)")
    nums.append("failed runs: " + ", ".join(f"{i} {n}" for i, n in fails.items())
                + (f" ({crashed} crashed, no ΔW)" if crashed else ""))
    points = [{"init": k[0], "decay": k[1], "lr": x.spec.lr, "seed": x.seed, "failed": failed(x, threshold),
               **{q: last(x)[q] for q in ("effective_rank", "stable_rank", "dW_fro")}}
              for k, recs in groups.items() for x in recs if last(x) is not None]  # every measured run: the plot's
    return {"parts": parts, "verdict": combine(parts, edge), "ours": "; ".join(nums), "edge": edge,
            "failures": fails, "points": points, "rule": row12_rule(r, threshold)}


def row12_rule(r: int = RowsB().rank, threshold: float = RowsB().fail_score) -> str:
    return (f"low rank: every zero-B configuration's ΔW stable rank (selected LR; ΔW = W_eff − W_pretrained) has "
            f"its 95% CI below r/2 = {r / 2:g} (above: does not hold; both-random configurations reported); decay "
            f"lowers the rank: stable rank at the smallest decay − the largest > 0, per "
            f"init; fails loudly: every failed run (final validation accuracy < {threshold:g}, or not finite) has "
            f"‖ΔW‖_F above all converged runs' of its configuration (else of the row) and effective rank above their "
            f"median, or a non-finite ΔW (none: does not hold; no failure: undecided); {RULE}")


def row13(groups: dict) -> dict:
    """Keys ("LoRA", r), ("PiSSA", r), ("LoRAM", r). gain = PiSSA − LoRA, residual = PiSSA − LoRAM, recovered =
    LoRAM − LoRA (dev points, per seed). The premise first: LoRAM's ‖s·B A‖_F at init within ``MATCH``× of PiSSA's
    (seed means), else undecided (the magnitudes are not matched). No significant gain: undecided (nothing to
    explain); a significant residual: does not hold (the spectral init keeps a lead once magnitude is matched); else
    a significant recovered gain: holds; else undecided. The first step's ‖ΔW_eff‖_F is reported."""
    ks = {k[0]: k for k in groups}
    sel, edge = _selected(groups)
    gain, residual, recovered = (_pair(sel, ks[a], ks[b]) for a, b in (("PiSSA", "LoRA"), ("PiSSA", "LoRAM"),
                                                                        ("LoRAM", "LoRA")))
    mag = {}
    for name in ("PiSSA", "LoRAM"):
        s = sel.get(ks.get(name))
        got = [r.extra["delta_spectrum"] for r in (s.runs if s else []) if "delta_spectrum" in (r.extra or {})]
        if got:
            mag[name] = (np.mean([g["init_factor_fro"] for g in got]), np.mean([g["first_step_fro"] for g in got]))
    ratio = mag["LoRAM"][0] / mag["PiSSA"][0] if len(mag) == 2 and mag["PiSSA"][0] > 0 else None
    if ratio is None or not 1 / MATCH <= ratio <= MATCH:
        v = ("**undecided**: " + ("no init magnitude recorded" if ratio is None else
                                  f"LoRAM's init magnitude is {ratio:.2f}× PiSSA's, not matched within {MATCH:g}×"))
    elif not gain[0].startswith("holds"):
        v = f"**undecided**: no significant PiSSA gain over LoRA to explain ({gain[0]})"
    elif residual[0].startswith("holds"):
        v = "**does not hold**: PiSSA stays ahead of the magnitude-matched LoRAM"
    elif recovered[0].startswith("holds"):
        v = "**holds**"
    else:
        v = "**undecided**: LoRAM neither behind PiSSA nor ahead of LoRA, significantly"
    mags = [f"{n} ‖s·BA‖_F at init {a:.3g}, first step {b:.3g}" for n, (a, b) in mag.items()]
    lrs = ", ".join(f"{k[0]} {s.lr:g}" for k, s in sel.items() if s)
    ours = (f"PiSSA − LoRA {_ci(gain[2], gain[1])}; PiSSA − LoRAM {_ci(residual[2], residual[1])}; LoRAM − LoRA "
            f"{_ci(recovered[2], recovered[1])} (points; lr {lrs}); " + "; ".join(mags))
    return {"verdict": _edge(v, edge), "ours": ours, "edge": edge, "rule": ROW13_RULE,
            "parts": {"gain": gain[0], "residual": residual[0], "recovered": recovered[0]}}


MATCH = 2.0  # row 13: LoRAM's init ‖s·BA‖_F within this factor of PiSSA's (loram_magnitude.py: 1.56× median at r = 8)
ROW13_RULE = (f"premise: LoRAM's ‖s·BA‖_F at init within {MATCH:g}× of PiSSA's (mean over q/v layers and seeds), else "
              "undecided; dev points per seed, each arm at its own LR: gain = PiSSA − LoRA must be significant "
              "(else undecided: "
              "nothing to explain); residual = PiSSA − LoRAM significant: does not hold; else recovered = LoRAM − "
              f"LoRA significant: holds; else undecided; {RULE}")


def by_rank(groups: dict, a: str, b: str, relative: bool = False) -> dict:
    """Keys (method, r): per rank, a − b dev (points, per seed) decided; combined over ranks. ``relative``: the
    difference's share of b's score is reported too."""
    sel, edge = _selected(groups)
    parts, nums = {}, []
    for r in sorted({k[1] for k in groups}):
        v, ci, d = _pair(sel, (a, r), (b, r))
        parts[f"r={r}"] = v
        line = f"r={r}: {a} − {b} {_ci(d, ci)}"
        if relative and d and sel.get((b, r)):
            base = per_seed(sel[(b, r)], "dev")
            rel = [100 * d[s] / base[s] for s in d]
            line += f" ({_ci(rel, decide(rel)[1])}% of {b}'s)"
        nums.append(line + f" (lr {a} {getattr(sel.get((a, r)), 'lr', float('nan')):g}, "
                           f"{b} {getattr(sel.get((b, r)), 'lr', float('nan')):g})")
    return {"parts": parts, "verdict": combine(parts, edge), "ours": "; ".join(nums), "edge": edge}


def row16(groups: dict) -> dict:
    return {**by_rank(groups, "PiSSA", "LoRA"), "rule": ROW16_RULE}


ROW16_RULE = (f"per rank, PiSSA − LoRA dev points per seed, each at its own LR; holds when it holds at every rank; "
              f"{RULE}")


def row17(groups: dict) -> dict:
    return {**by_rank(groups, "DoRA", "LoRA", relative=True), "rule": ROW17_RULE}


ROW17_RULE = (f"per rank r = 1, 2, 4: DoRA − LoRA dev points per seed, each at its own LR; holds when it holds at "
              f"every rank; the relative gain (% of LoRA's score) is reported against the paper's 22–37%; {RULE}")


def row19(groups: dict) -> dict:
    """Keys ("LoRA", r), ("Delta-LoRA", r). "rank": effective rank of the total change (Delta-LoRA − LoRA, per
    seed) > 0; "score": dev points (Delta-LoRA − LoRA) > 0; holds when both hold."""
    ks = {k[0]: k for k in groups}
    sel, edge = _selected(groups)
    rank = _pair(sel, ks.get("Delta-LoRA"), ks.get("LoRA"), "effective_rank", _spec)
    score = _pair(sel, ks.get("Delta-LoRA"), ks.get("LoRA"))
    parts = {"rank": rank[0], "score": score[0]}
    eff = {n: _spec(sel[k], "effective_rank") for n, k in ks.items() if sel.get(k)}
    num = {n: _spec(sel[k], "numerical_rank") for n, k in ks.items() if sel.get(k)}
    ours = ("effective rank of the total change: " + ", ".join(f"{n} {_m(v)}" for n, v in eff.items() if v)
            + f" (difference {_ci(rank[2], rank[1])}; numerical rank " + ", ".join(
                f"{n} {np.mean(list(v.values())):.1f}" for n, v in num.items() if v)
            + f"); dev Delta-LoRA − LoRA {_ci(score[2], score[1])} points")
    return {"parts": parts, "verdict": combine(parts, edge), "ours": ours, "edge": edge, "rule": ROW19_RULE}


ROW19_RULE = ("rank: effective rank of W_T + s·B A − W_pretrained (mean over q/v layers, selected LR), Delta-LoRA − "
              f"LoRA per seed > 0; score: dev points Delta-LoRA − LoRA > 0; holds when both hold; {RULE}")

DECIDE = {"12": row12, "13": row13, "16": row16, "17": row17, "19": row19}
RULES = {"12": row12_rule(), "13": ROW13_RULE, "16": ROW16_RULE, "17": ROW17_RULE, "19": ROW19_RULE}
