"""Rows 14, 15 and 18 of results/claims (issue 27): runnable, resumable plans of peftzoo bench runs (and the
machinery rows 12, 13, 16, 17, 19 share: their setups are in plans_b.py).

    PEFTZOO_DATA_DIR=../shared/data python benchmarks/claims/run.py --rows 14,15,18 [--dry-run] [--smoke]

Every run is a ``RunSpec`` of the cpu preset (``plan.make_plan``'s cells: full FT, LoRA at the r = 1, 8, 64 counts,
LoRA+ at r = 8's) with the row's own settings replaced (batch size, training-set size, epochs), executed by
``runner.execute`` and kept as ``<run id>.json`` under ``--work``/plans/<row>/ (``store.write_record``). A finished
run is read back, never re-run; a run whose spec is the leaderboard's (same id) is read from results/cpu/runs.
Each configuration is swept over the preset's LR grid on seed 0, the LR selected on validation
(``protocol.selection``), then run on the other seeds at that LR (the leaderboard's protocol). Row 18's runs at the
selected LR (every seed) also record the validation score every ``eval_every`` steps (``ValCurve``), in their own
folder (their ids are the sweep's). The verdicts are in verdicts.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import plans_b
from probe import DeltaSpectrum

from peftzoo.bench import store
from peftzoo.bench.plan import make_plan
from peftzoo.bench.preset import load_preset
from peftzoo.bench.protocol import selection
from peftzoo.bench.train import Callback

ROWS = ("14", "15", "18") + plans_b.ROWS
REF_BATCH = 32  # the recorded runs' batch size (the cost fit's step time is per batch of 32)


@dataclass(frozen=True)
class Scale:
    """Where the rows run; the default is the cpu leaderboard's setting (``smoke`` gives a seconds-sized one)."""
    preset: str = "cpu"  # the shipped preset whose settings, cells and LR grids every run takes
    model: str | None = None  # None: the preset's model (embedded all-MiniLM-L6-v2); the smoke passes a tiny one
    overrides: dict = field(default_factory=dict)  # spec fields replaced in every run (the smoke's tiny sets)
    lr_points: int | None = None  # keep only the central n points of each grid (None: the preset's full grid)
    seeds: tuple = (0, 1, 2)  # >= 3 seeds: the verdicts' 95% t-intervals over seeds need them
    task14: str = "SST-2"  # the leaderboard's SST-2 setting: its batch-32 runs are reused
    batches: tuple = (8, 32, 128)  # row 14's batch sizes (4x steps; 32 is the leaderboard's)
    ranks14: tuple = (1, 64)  # row 14's two LoRA ranks: far apart, to see whether the penalty depends on rank
    task15: str = "STS-B"  # its whole training set (5,249 after validation) is affordable here; SST-2's 67k is not
    sizes: tuple = (250, 500, 1500, None)  # row 15's training-set sizes (None: the whole task)
    ranks15: tuple = (1, 8, 64)  # the claim's ranks
    min_steps: int = 94  # row 15: a small set trains for more epochs, to at least the leaderboard's 94 steps
    task18: str = "SST-2"
    eval_every: int = 5  # row 18: validation scored every this many steps (and at every epoch's end)
    lb_root: str = "results"  # the leaderboard's results root (its runs are reused where the spec is the same)
    b: plans_b.RowsB = plans_b.RowsB()  # rows 12, 13, 16, 17, 19 (plans_b.py)


def smoke(model: str) -> Scale:
    """The plan on a tiny model and tiny sets: every code path in seconds (no measurement)."""
    return Scale(model=model, overrides={"max_train": 32, "max_eval": 16, "max_len": 16,
                                         "val_cap": 8}, lr_points=2, task15="SST-2", batches=(4, 16),
                 ranks14=(1, 8), sizes=(16, 32), ranks15=(1, 8), min_steps=4, eval_every=2, lb_root="",
                 b=plans_b.smoke())


@dataclass(frozen=True)
class Config:
    """One configuration of a row: its runs differ only by LR and seed."""
    row: str
    key: tuple  # (method label, setting): e.g. ("LoRA r=1", 128)
    task: str
    cell: object  # plan.Cell: method, hparams, budget
    changes: dict  # spec fields this configuration replaces
    grid: tuple  # the LR sweep (seed 0)
    curve: bool = False  # the selected LR's runs record a validation curve (row 18)
    store: str = ""  # the folder under plans/ its runs are kept in ("": the row's own)
    probe: bool = False  # every run records its ΔW spectrum (probe.DeltaSpectrum), in <store>-probed


def label(method: str, r: int | None) -> str:
    return {"full": "full FT", "lora": f"LoRA r={r}", "loraplus": f"LoRA+ r={r}"}[method]


def configs(scale: Scale, rows=ROWS) -> tuple[list[Config], object]:
    """(every row's configurations, the preset's plan), from its cells (their budgets resolved on the model)."""
    pre = load_preset(scale.preset)
    if scale.model:  # (the smoke's tiny model: budgets resolve on it and every spec names it)
        pre = dataclasses.replace(pre, model=scale.model)
    tasks = list(dict.fromkeys(scale.b.task if r in plans_b.ROWS else getattr(scale, f"task{r}") for r in rows))
    plan = make_plan(pre, tasks=tasks, methods=["full", "lora", "loraplus"], seeds=list(scale.seeds))
    cells = {(c.method, c.hparams.get("r")): c for c in plan.cells}

    def grid(task, m):
        g = plan.grid(task, m)
        if scale.lr_points and len(g) > scale.lr_points:
            lo = (len(g) - scale.lr_points) // 2
            g = g[lo:lo + scale.lr_points]
        return g
    out = []
    if "14" in rows:
        out += [Config("14", (label(m, r), b), scale.task14, cells[(m, r)], {"batch_size": b}, grid(scale.task14, m))
                for b in scale.batches for m, r in [("full", None)] + [("lora", r) for r in scale.ranks14]]
    if "15" in rows:
        batch = scale.overrides.get("batch_size", pre.batch_size)
        for n in scale.sizes:
            ep = pre.epochs if n is None else max(pre.epochs, math.ceil(scale.min_steps / math.ceil(n / batch)))
            out += [Config("15", (label(m, r), n), scale.task15, cells[(m, r)], {"max_train": n, "epochs": ep},
                           grid(scale.task15, m)) for m, r in [("full", None)] + [("lora", r) for r in scale.ranks15]]
    if "18" in rows:
        out += [Config("18", (label(m, 8),), scale.task18, cells[(m, 8)], {}, grid(scale.task18, m), True)
                for m in ("lora", "loraplus")]
    out += plans_b.configs(scale.b, rows, pre, cells, grid, Config)
    return out, plan


def spec(plan, scale: Scale, c: Config, lr: float, seed: int, stage: int, data_dir=None):
    s = plan.spec(c.task, c.cell, lr, seed, stage)
    return dataclasses.replace(s, suite="claims", **{**scale.overrides, **c.changes}).bind_data(data_dir)


class ValCurve(Callback):
    """A fit callback: the validation score every ``every`` steps, as [[step, score], ...] (the model is put in eval
    mode for it and back; evaluation draws no random numbers, so the run trains as it would without it)."""

    def __init__(self, spec, data_dir, every: int):
        self.spec, self.data_dir, self.every, self.points = spec, data_dir, every, []

    def on_train_begin(self, ad, total_steps):
        from transformers import AutoTokenizer

        from peftzoo.bench.evaluation import Evaluation
        from peftzoo.bench.models import default_model
        from peftzoo.bench.runner import load_data, target_scale
        from peftzoo.bench.tasks import split_indices
        s = self.spec
        task, data = load_data(s, self.data_dir)
        idx, val = split_indices(len(data["train"].labels), s.max_train, s.val_fraction, s.val_cap, s.val_seed)
        tok = AutoTokenizer.from_pretrained(s.model or default_model())
        dev = next(ad.model.parameters()).device
        self.model, self.val, self.train = ad.model, val, data["train"]
        self.ev = Evaluation(s, task, data, val, tok, ad.model, dev, target_scale(s, task, data["train"].labels[idx]))
        self.points = []

    def on_step_end(self, step, loss):
        if step % self.every == 0:
            was = self.model.training
            self.model.eval()
            score = self.ev.val_metrics(self.ev.predict(self.train, self.val))["score"]
            self.model.train(was)
            self.points.append([step, float(score)])


def _probed(folder: Path) -> Path:
    return folder.with_name(folder.name + "-probed")


def _get(s, folder: Path, scale: Scale, data_dir, dry: bool, curve: bool, say, probe: bool = False):
    """(where it came from, record or None): read back, from another row's folder, from the leaderboard, to run
    (dry), or run now. A probed run lives in ``<folder>-probed``; a plain request is also served by any other
    folder's record of the same run (probe and curve change nothing in training: tested), so rows share runs."""
    from peftzoo.bench.runner import execute
    path = store.run_path(_probed(folder) if probe else folder, "", s.task, s.run_id)
    if store.is_finished(path):
        return "cached", store.read_record(path)[0]
    others = sorted(d for d in folder.parent.iterdir() if d.is_dir()) if folder.parent.is_dir() else []
    for d in [] if probe or curve else others:
        p = store.run_path(d, "", s.task, s.run_id)
        if store.is_finished(p):
            return "cached in another folder", store.read_record(p)[0]
    if not curve and not probe and scale.lb_root:
        lb = store.run_path(Path(scale.lb_root), "cpu", s.task, s.run_id)
        if lb.is_file():
            rec = store.read_record(lb)[0]
            if rec is not None and rec.ok:
                return "leaderboard", rec
    if dry:
        return "to run", None
    say(f"  run {s.label} {s.method} {s.hparams} batch {s.batch_size} n {s.max_train} ep {s.epochs}")
    cb = ValCurve(s, data_dir, scale.eval_every) if curve else None
    pr = DeltaSpectrum(s) if probe else None
    rec = execute(s, data_dir, progress=False, callbacks=[c for c in (cb, pr) if c])
    if cb is not None and rec.ok:
        rec = dataclasses.replace(rec, extra={**rec.extra, "val_curve": cb.points, "eval_every": scale.eval_every})
    if pr is not None and rec.ok:
        rec = dataclasses.replace(rec, extra={**rec.extra, "delta_spectrum": pr.summary()})
    store.write_record(path, rec)
    return "ran", rec


def run_row(row: str, scale: Scale, work: Path, data_dir=None, dry: bool = False, say=print) -> dict:
    """{"groups": {config key: [records]}, "todo": [(spec, curve)], "count": {origin: runs}} of one row; with
    ``dry`` nothing runs (stage 2 is planned at the grid's middle LR when its sweep has not finished)."""
    cfgs, plan = configs(scale, (row,))
    groups, todo, count = {}, [], {}

    def get(s, folder, curve=False, probe=False):
        where, rec = _get(s, folder, scale, data_dir, dry, curve, say, probe)
        count[where] = count.get(where, 0) + 1
        if rec is None:
            todo.append((s, curve))
        return rec
    for c in cfgs:
        base = Path(work) / "plans" / (c.store or row)
        sweep = [get(spec(plan, scale, c, lr, scale.seeds[0], 1, data_dir), base, probe=c.probe) for lr in c.grid]
        ok = [r for r in sweep if r is not None]
        sel = next(iter(selection(ok).values()), None) if len(ok) == len(sweep) else None
        seeds = list(scale.seeds) if c.curve else list(scale.seeds[1:])
        folder = base.with_name(f"{row}-curves") if c.curve else base
        if sel is None:
            if dry and len(ok) < len(sweep):  # planned at the grid's middle LR (for the count and cost only)
                mid = c.grid[len(c.grid) // 2]
                todo += [(spec(plan, scale, c, mid, s, 2, data_dir), c.curve) for s in seeds]
                count["to run after the sweep"] = count.get("to run after the sweep", 0) + len(seeds)
            else:
                say(f"  {c.key}: every sweep run failed; no seeds run")
            groups[c.key] = ok
            continue
        more = [get(spec(plan, scale, c, sel.lr, s, 2, data_dir), folder, c.curve, c.probe) for s in seeds]
        groups[c.key] = [r for r in ok + more if r is not None]  # curves last: selection keeps them
    return {"groups": groups, "todo": todo, "count": count}


def cost(todo, runs=("results/cpu",), data_dir=None, every: int = 5) -> dict:
    """Predicted CPU seconds (2 threads) of the runs still to do, from benchmarks/plan_cost.py's fit over the
    recorded cpu leaderboard runs. Assumed: the cost per training example does not depend on the batch size (the fit
    is of batch-32 steps); a validation curve adds one validation pass every ``every`` steps."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: plan_cost.py
    import plan_cost
    model = plan_cost.fit(list(runs), data_dir)
    total, per = 0.0, {}
    for s, curve in todo:
        sec = plan_cost.run_seconds(dataclasses.replace(s, batch_size=REF_BATCH), model, data_dir)
        if curve:
            tk = plan_cost._spec_tokens(s, data_dir)
            e0, e1 = model[plan_cost.PROXY.get(s.method, (s.method,))[0]]["eval"]
            steps = s.epochs * math.ceil(tk["n_train"] / s.batch_size)
            sec += steps // every * tk["n_val"] * max(0.0, e0 + e1 * tk["val"])
        total += sec
        per[s.method] = per.get(s.method, 0.0) + sec
    return {"cpu_s": total, "per_method_s": per}
