"""Claims 2 (LoRA α/r vs rsLoRA α/√r across ranks, Kalajdzievski 2023) and 6 (attention- vs MLP- vs all-linear LoRA
at equal parameters, 'LoRA Without Regret' 2025) in the cpu leaderboard's SST-2 setting (the shipped preset cpu).

    PEFTZOO_DATA_DIR=../shared/data nice -n 19 python benchmarks/claims/lora_scaling.py [--work W] [--out O] [--plan]

Each run is a RunSpec made from the cpu preset (``plan.run_spec``; suite "claims", its own ranks, targets and LRs)
cached as <run_id>.json under W/scaling (claim 2: ``runner.execute`` with a per-step loss callback, kept in the
record as "step_losses") or W/targets (claim 6); finished runs are read back, never re-run. LRs and epochs are
selected on validation (protocol.selection), dev is reported.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import lb  # noqa: E402

from peftzoo import palette  # noqa: E402
from peftzoo.bench import stats, store  # noqa: E402
from peftzoo.bench.leaderboard import at_edge, dev_preds  # noqa: E402
from peftzoo.bench.plan import Cell, run_spec  # noqa: E402
from peftzoo.bench.preset import load_preset  # noqa: E402
from peftzoo.bench.protocol import selection  # noqa: E402
from peftzoo.bench.tasks import get_task  # noqa: E402
from peftzoo.bench.train import Callback  # noqa: E402

PRESET, TASK = "cpu", "SST-2"  # the cpu leaderboard's SST-2 setting
STAGES = {"sweep": 1, "seeds": 2, "shared LR": 2}  # how each kind of run is recorded (1: an LR sweep)
ALPHA, SEEDS, EARLY = 16, (0, 1, 2), 20  # EARLY: steps 1..EARLY make the "early" training loss
RANKS, SHARED_LR = (1, 4, 16, 64, 256), 3e-3  # 3e-3: LoRA's (and rsLoRA's) selected LR on the cpu leaderboard
C2_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
C6_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
BUDGET, L = 165_888, r"bert\.encoder\.layer\.\d+\."
ATT = r"attention\.(self\.(query|key|value)|output\.dense)"
TARGETS = {"attention": (L + ATT, 9, 4), "MLP": (L + r"(intermediate|output)\.dense", 7, 2),
           "all-linear": (L + f"({ATT}|intermediate\\.dense|output\\.dense)", 4, 6)}  # (regex, r, modules/layer)
SRC = "cpu leaderboard setting: all-MiniLM-L6-v2, SST-2 1,500 train, 2 epochs, batch 32, α = 16, LR selected on " \
      "validation (500 held out of train), dev reported"


def _spec(method, r, lr, seed, stage, targets=None, budget=None, achieved=None, data_dir=None):
    """The cpu preset's SST-2 run of ``method`` at rank ``r`` (α = 16), with these targets (default: the preset's)."""
    spec = run_spec(load_preset(PRESET), TASK, Cell(method, {"alpha": ALPHA, "r": r}, "—"), lr, seed, STAGES[stage])
    return dataclasses.replace(spec, suite="claims", targets=targets or spec.targets, budget=budget,
                               achieved=achieved).bind_data(data_dir)


class StepLosses(Callback, list):
    """A fit callback: the training loss of every step."""
    def on_train_begin(self, ad, total_steps):
        self.clear()

    def on_step_end(self, step, loss):
        self.append(loss)


def _run(spec, folder: Path, what: str, losses: bool, data_dir):
    """The run's record: read back when it is cached, else executed (with its per-step losses) and cached."""
    from peftzoo.bench.runner import execute
    path = Path(folder) / f"{spec.run_id}.json"
    if store.is_finished(path):
        return store.read_record(path)[0]
    print(f"  run {path.name} (lr {spec.lr:g}, {what})", flush=True)
    log = StepLosses()
    rec = execute(spec, data_dir, progress=False, callbacks=[log] if losses else ())
    if losses:
        rec = dataclasses.replace(rec, extra={**rec.extra, "step_losses": list(log)})
    store.write_record(path, rec)
    return rec


def _sel(recs, what):
    """protocol.selection over one configuration's runs (LR on the sweep seed's validation, then the epoch)."""
    for s in selection(recs).values():
        return s
    raise RuntimeError(f"{what}: every run of the LR sweep failed (see their records' 'error')")


def _summary(sel) -> dict:
    lo, hi = stats.t_interval(sel.scores())
    return {"lr": sel.lr, "epoch": sel.epoch, "edge": at_edge(sel), "per_lr": [[k, v] for k, v in sel.per_lr.items()],
            "dev": sel.scores(), "ci": [lo, hi], "seeds": sel.seeds}


def _compare(sa, sb) -> dict:
    """a − b (points): seed means, paired bootstrap over dev examples (lb's test), t-interval of per-seed diffs."""
    labels = {sp: stats.decode_preds(x) for sp, x in sa.runs[0].dev_labels.items()}
    diff, p = stats.paired_bootstrap(get_task(TASK).metric, dev_preds(sa), dev_preds(sb), labels, 2000)
    a, b = dict(zip(sa.seeds, sa.scores())), dict(zip(sb.seeds, sb.scores()))
    lo, hi = stats.t_interval([100 * (a[s] - b[s]) for s in sorted(set(a) & set(b))])
    return {"diff": 100 * diff, "p": p, "a": 100 * np.mean(list(a.values())), "b": 100 * np.mean(list(b.values())),
            "n": min(len(a), len(b)), "seed_ci": [lo, hi]}


def planned() -> dict:
    ends = sorted({RANKS[0], RANKS[-1]})
    c2 = 2 * len(RANKS) + 2 * len(ends) * (len(C2_LRS) - (SHARED_LR in C2_LRS)) + 2 * (len(SEEDS) - 1)
    return {"c2": c2, "c6": len(TARGETS) * (len(C6_LRS) + len(SEEDS) - 1)}


def measure_c2(work: Path, data_dir) -> dict:
    folder, recs, ends = Path(work) / "scaling", {}, sorted({RANKS[0], RANKS[-1]})

    def go(m, r, lr, s, stage):
        if (m, r, lr, s) not in recs:
            recs[(m, r, lr, s)] = _run(_spec(m, r, lr, s, stage, data_dir=data_dir), folder, stage, True, data_dir)
        return recs[(m, r, lr, s)]
    for m in ("lora", "rslora"):
        for r in RANKS:
            go(m, r, SHARED_LR, 0, "shared LR")
        for r in ends:
            for lr in C2_LRS:
                go(m, r, lr, 0, "sweep")
        best = _sel([recs[(m, ends[-1], lr, 0)] for lr in C2_LRS], f"{m} r={ends[-1]}")
        for s in SEEDS[1:]:
            go(m, ends[-1], best.lr, s, "seeds")
    sel = {(m, r): _sel([v for (mm, rr, _, _), v in recs.items() if (mm, rr) == (m, r)], m)
           for m in ("lora", "rslora") for r in ends}
    curves = {m: {str(r): recs[(m, r, SHARED_LR, 0)].extra["step_losses"] for r in RANKS} for m in ("lora", "rslora")}
    early = {m: {r: float(np.mean(c[:EARLY])) for r, c in cs.items()} for m, cs in curves.items()}
    ratio = {m: sel[(m, ends[-1])].lr / sel[(m, ends[0])].lr for m in ("lora", "rslora")}
    return {"setting": _setting(), "ranks": list(RANKS), "ends": ends, "shared_lr": SHARED_LR, "early_steps": EARLY,
            "curves": curves, "early": early, "spread": {m: float(np.std(list(e.values()))) for m, e in early.items()},
            "dev_shared": {m: {str(r): _final(recs[(m, r, SHARED_LR, 0)]) for r in RANKS} for m in ("lora", "rslora")},
            "sweep": {m: {str(r): _summary(sel[(m, r)]) for r in ends} for m in ("lora", "rslora")},
            "lr_ratio": ratio, "lr_steps": {m: round(math.log10(v) / 0.5) for m, v in ratio.items()},
            "high": _compare(sel[("rslora", ends[-1])], sel[("lora", ends[-1])]),
            "runs": len(recs), "train_s": sum(r.wall_s or 0 for r in recs.values())}


def _final(rec):
    """The dev score at the last epoch (None for a failed run)."""
    return rec.history[-1].score if rec.ok else None


def _setting() -> dict:
    """The setting the claims ran in, as their result file states it."""
    s = _spec("lora", 1, SHARED_LR, 0, "sweep")
    return {k: getattr(s, k) for k in ("task", "epochs", "batch_size", "max_len", "max_train", "max_eval", "warmup",
                                       "weight_decay", "val_fraction", "val_cap", "val_seed")}


def check_targets(make_model=None) -> dict:
    """{target set: [matched modules, adapter elements]} (MiniLM unless ``make_model``); raises unless each regex
    matches exactly its modules in every encoder layer (never the pooler or classifier)."""
    import peftzoo
    from peftzoo.bench.models import load_model
    make_model = make_model or (lambda: load_model(None, get_task(TASK))[0])
    out = {}
    for name, (pat, r, per_layer) in TARGETS.items():
        m = make_model()
        ad = peftzoo.attach(m, "lora", targets=pat, r=r, alpha=ALPHA)
        n = per_layer * m.config.num_hidden_layers
        out[name] = [len(ad.layers), sum(p.numel() for p in ad.adapter_parameters())]
        if out[name][0] != n or any(not k.startswith("bert.encoder.layer.") for k in ad.layers):
            raise ValueError(f"{name}: {pat!r} matches {sorted(ad.layers)}, not the intended {n} modules")
    return out


def measure_c6(work: Path, data_dir) -> dict:
    folder, counts, out, wall = Path(work) / "targets", check_targets(), {}, 0.0
    for name, (pat, r, _) in TARGETS.items():
        run = lambda lr, s, st: _run(_spec("lora", r, lr, s, st, pat, BUDGET, counts[name][1], data_dir),  # noqa
                                     folder, st, False, data_dir)
        recs = [run(lr, 0, "sweep") for lr in C6_LRS]
        recs += [run(_sel(recs, name).lr, s, "seeds") for s in SEEDS[1:]]
        out[name], wall = _sel(recs, name), wall + sum(x.wall_s or 0 for x in recs)
    cmp = {f"{o} vs attention": _compare(out[o], out["attention"]) for o in ("MLP", "all-linear")}
    return {"setting": _setting(), "counts": counts, "r": {k: v[1] for k, v in TARGETS.items()}, "cmp": cmp,
            "sets": {k: _summary(v) for k, v in out.items()}, "runs": planned()["c6"], "train_s": wall}


def _combine(parts: dict) -> str:
    vs = list(parts.values())
    if all(v.startswith("holds") for v in vs):
        return "**holds**"
    if all(v.startswith("does not") for v in vs):
        return "**does not hold**"
    if all(v.startswith("undecided") for v in vs):
        return "**undecided**: " + "; ".join(f"{k}: {v}" for k, v in parts.items())
    return "**mixed**: " + "; ".join(f"{k}: {v}" for k, v in parts.items())


def _ci(s):
    lo, hi = (np.nan if x is None else 100 * x for x in s["ci"])
    return f"{100 * np.mean(s['dev']):.1f} [{lo:.1f}, {hi:.1f}] (n={len(s['dev'])})"


def row_c2(d) -> tuple:
    sp, st, h, lo, hi = d["spread"], d["lr_steps"], d["high"], *d["ends"]
    k, q = abs(st["lora"]), abs(st["rslora"])
    edge = [f"{m} r={r}" for m, v in d["sweep"].items() for r, s in v.items() if s["edge"]]
    parts = {"early curves": "holds" if sp["rslora"] >= 2 * sp["lora"] else "does not hold"
             if sp["lora"] >= sp["rslora"] else "undecided (between 1× and 2×)",
             "best LR": ("holds" if k <= 1 and k < q else "does not hold" if k >= q else "undecided")
             + (f" (selected LR at a grid end: {', '.join(edge)})" if edge else ""),
             f"r={hi}": lb.better(h)}
    early = "; ".join(f"{m}: " + ", ".join(f"r={r} {v:.3f}" for r, v in e.items()) for m, e in d["early"].items())
    sw = "; ".join(f"{m} r={r}: {s['lr']:g}" for m, v in d["sweep"].items() for r, s in v.items())
    ours = (f"std over ranks of the mean training loss over steps 1–{d['early_steps']} at lr {d['shared_lr']:g}: "
            f"LoRA {sp['lora']:.4f}, rsLoRA {sp['rslora']:.4f} ({early}); best LR (val) {sw}: r={hi}/r={lo} = "
            f"LoRA {d['lr_ratio']['lora']:g}× ({st['lora']:+d} grid steps), rsLoRA {d['lr_ratio']['rslora']:g}× "
            f"({st['rslora']:+d}); r={hi} rsLoRA − LoRA dev {_fmt(h)}")
    rule = ("early curves: rsLoRA's spread ≥ 2× LoRA's (not: LoRA's ≥ rsLoRA's); best LR: LoRA's moves ≤ 1 "
            "half-decade grid step and fewer than rsLoRA's (not: as many or more); rsLoRA > LoRA at r = "
            f"{hi}: Δ > 0 with paired-bootstrap p < 0.05 (not: Δ < 0 with p < 0.05)")
    return ("2", "With α/r, early curves ≈ identical for r = 1…256 and best LR ≈ rank-independent; with α/√r not, and "
            "rsLoRA learns better at high rank", "Kalajdzievski 2023 (rsLoRA): α/r collapses learning at high rank",
            f"{SRC}; LoRA and rsLoRA on query+value, r = {', '.join(map(str, d['ranks']))} at lr {d['shared_lr']:g} "
            f"(seed 0, per-step loss); LR sweeps {', '.join(f'{x:g}' for x in C2_LRS)} at r = {lo}, {hi}; r = {hi} "
            "at each one's LR on 3 seeds", ours, _combine(parts), rule, "c2_lora_scaling.png")


def _fmt(c):
    lo, hi = c["seed_ci"]
    ci = f", seed CI [{lo:+.1f}, {hi:+.1f}]" if lo is not None else ""
    return f"{c['a']:.1f} vs {c['b']:.1f} (Δ {c['diff']:+.1f}, p = {c['p']:.3f}{ci}, n = {c['n']} seeds)"


def row_c6(d) -> tuple:
    parts = {k: lb.better(c) for k, c in d["cmp"].items()}
    sets = "; ".join(f"{k} (r={d['r'][k]}, {d['counts'][k][1]:,} elements, lr {s['lr']:g}"
                     f"{'†' if s['edge'] else ''}): {_ci(s)}" for k, s in d["sets"].items())
    ours = sets + "; " + "; ".join(f"{k}: {_fmt(c)}" for k, c in d["cmp"].items())
    return ("6", "Attention-only LoRA < MLP-only or all-layer LoRA at equal parameters", "'LoRA Without Regret' "
            "(Thinking Machines 2025): attention-only underperforms MLP-only and all-layer LoRA",
            f"{SRC}; ~{BUDGET:,} adapter elements: attention (q, k, v, attention.output) r = 9, MLP (intermediate, "
            "output) r = 7, all six r = 4; LRs " + ", ".join(f"{x:g}" for x in C6_LRS) + " on seed 0, 3 seeds",
            ours, _combine(parts), "each of MLP and all-linear > attention: Δ > 0 with paired-bootstrap p < 0.05 "
            "(not: Δ < 0 with p < 0.05); dev mean [95% t-interval over seeds]; † selected LR at a grid end", None)


def plot_c2(d, out_dir) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    axes[1].sharey(axes[0])
    for ax, (m, name) in zip(axes, (("lora", "LoRA (α/r)"), ("rslora", "rsLoRA (α/√r)"))):
        shades = palette.shades(m, len(d["curves"][m]))  # the method's colour, lighter for smaller r
        for i, (r, c) in enumerate(d["curves"][m].items()):
            sm = np.convolve(c, np.ones(5) / 5, "valid") if len(c) >= 5 else c
            ax.plot(np.arange(len(sm)) + (len(c) - len(sm)) // 2 + 1, sm, color=shades[i], label=f"r={r}")
        ax.axvline(d["early_steps"], color="0.6", ls=":", lw=0.8)
        ax.set(xlabel="step", title=f"{name}, lr {d['shared_lr']:g}, seed 0")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training loss (5-step running mean)")
    for j, (m, v) in enumerate(d["sweep"].items()):
        for r, s in v.items():
            xs = [x for x, y in s["per_lr"] if y is not None]
            axes[2].plot(xs, [y for _, y in s["per_lr"] if y is not None], marker="o", color=palette.color(m),
                         ls="-" if r == str(d["ends"][0]) else "--", label=f"{m} r={r}")
    axes[2].set(xscale="log", xlabel="LR", ylabel="validation accuracy (best epoch)", title="LR sweeps (seed 0)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / "c2_lora_scaling.png"
    store.write_figure(path, fig, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def estimate(root="results") -> str:
    walls = [r.wall_s for r in store.read_runs(root, "cpu") if r.ok and r.task == TASK
             and r.method in ("lora", "rslora")]
    n, med = planned(), float(np.median(walls)) if walls else float("nan")
    return (f"planned runs: claim 2 {n['c2']}, claim 6 {n['c6']}; at the cpu leaderboard's median LoRA/rsLoRA SST-2 "
            f"run ({med:.0f} s, {len(walls)} runs) ≈ {sum(n.values()) * med / 60:.0f} CPU min")


if __name__ == "__main__":
    import argparse
    import os

    import torch
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in (("--work", "local-results/claims"), ("--out", "results/claims"),
                 ("--data-dir", os.environ.get("PEFTZOO_DATA_DIR"))):
        p.add_argument(k, default=v)
    p.add_argument("--plan", action="store_true", help="print the planned runs and their estimated cost only")
    a = p.parse_args()
    print(estimate())
    if not a.plan:
        torch.set_num_threads(1)
        c2, c6 = measure_c2(Path(a.work), a.data_dir), measure_c6(Path(a.work), a.data_dir)
        print(plot_c2(c2, a.out))
        for row in (row_c2(c2), row_c6(c6)):
            print(" | ".join(str(x) for x in row))
