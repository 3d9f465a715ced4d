"""Our bench vs what a user would run instead (HF ``Trainer`` + PEFT), the same job, timed in one process.

The job (the project brief's): SST-2, 2,000 training examples (the runner's fixed subset), 1 epoch,
all-MiniLM-L6-v2, batch 16, length 64, LoRA r=8 alpha=16 on query/value with the classifier trained, AdamW lr 2e-3,
6% linear warm-up then linear decay, gradient clipping 1.0, evaluation on all 872 dev rows.

Timed per run, on the wall clock: ``total`` = model load + tokenisation + training + evaluation (cold: the bench's
encoding cache is cleared first; the task's files are read and parsed before the clock starts, on both sides), and
``train+eval`` = training + evaluation only; ``cpu`` = the process's CPU time over ``total`` (with ``--threads 1``
the figure to compare on a machine other jobs load). Configurations run in alternation for ``--repeats`` rounds
(seed = round), so that load on a shared machine hits all alike; we report the median and min..max over rounds, the
dev accuracy, and the ratio Trainer / bench of the median times, each bench precision against the fastest Trainer
setting at the same precision, with the verdict on the target (>= 1.25x end to end, dev accuracy within 1 point
over >= 2 seeds).

The bench side runs the runner's defaults, or with ``--bench PRECISION:LAST_LAYER:EVAL_BATCH`` its faster run
settings (``RunSpec.last_layer="pooled"``: the last layer for the pooled token only; ``RunSpec.eval_batch``: rows per
evaluation pass), named in the report (``bench[last_layer=pooled,eval_batch=32] bf16``). ``--clock cpu``: the
verdict compares CPU time (with ``--threads 1`` on a loaded machine) instead of the wall clock.

Trainer's settings tried (stock ``TrainingArguments`` only): ``train_sampling_strategy`` "group_by_length" (the
brief's best) or "random", ``bf16`` off/on (CPU autocast), and for evaluation ``per_device_eval_batch_size`` in
``--eval-batches``: each is timed after training and the fastest counts as Trainer's evaluation time.

    python benchmarks/trainer_vs_bench.py --repeats 2 --threads 2
    python benchmarks/trainer_vs_bench.py --repeats 2 --val-cap 1 --threads 1 --clock cpu --eval-batches 32 \
        --bench fp32 fp32:pooled:32 bf16 bf16:pooled:32
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from peftzoo.bench import batches
from peftzoo.bench.models import default_model
from peftzoo.bench.runner import execute, load_data
from peftzoo.bench.spec import RunSpec
from peftzoo.bench.tasks import get_task, load_task

OUT = Path(__file__).resolve().parents[1] / "results" / "speed" / "trainer_vs_bench.json"
JOB = dict(task="SST-2", lr=2e-3, epochs=1, batch_size=16, max_len=64, max_train=2000, warmup=0.06, r=8, alpha=16)


def bench_config(text: str) -> tuple[str, dict]:
    """``PRECISION[:LAST_LAYER[:EVAL_BATCH]]`` (e.g. ``bf16:pooled:32``) -> (its name in the report, the RunSpec
    settings it sets); left out: the runner's defaults (``last_layer="full"``, ``eval_batch=128``)."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise SystemExit(f"--bench {text!r}: PRECISION[:LAST_LAYER[:EVAL_BATCH]]")
    kw = {"precision": parts[0]}
    if len(parts) > 1:
        kw["last_layer"] = parts[1]
    if len(parts) > 2:
        kw["eval_batch"] = int(parts[2])
    tag = ",".join(f"{k}={v}" for k, v in kw.items() if k != "precision" and v != getattr(RunSpec, k))
    return f"bench{f'[{tag}]' if tag else ''} {parts[0]}", kw


def bench_run(seed: int, settings: dict, data_dir, val_cap: int = 1000) -> dict:
    batches.clear_cache()  # cold: tokenisation is timed, as the Trainer side's is
    spec = RunSpec(suite="speed", task=JOB["task"], method="lora", seed=seed,
                   hparams={"r": JOB["r"], "alpha": JOB["alpha"]}, lr=JOB["lr"], epochs=JOB["epochs"],
                   batch_size=JOB["batch_size"], max_len=JOB["max_len"], max_train=JOB["max_train"],
                   warmup=JOB["warmup"], val_cap=val_cap, **settings)
    load_data(spec, data_dir)  # the splits read and parsed beforehand, as for the Trainer side (cached per process)
    c0 = time.process_time()
    rec = execute(spec, data_dir=data_dir, progress=False)
    if not rec.ok:
        raise RuntimeError(rec.error)
    return {"total_s": rec.wall_s, "train_eval_s": rec.train_s, "cpu_s": time.process_time() - c0,
            "accuracy": rec.history[-1].dev["accuracy"]}


def trainer_run(seed: int, strategy: str, bf16: bool, eval_batches, data_dir) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.utils import logging
    logging.set_verbosity_error()
    task = get_task(JOB["task"])
    data = load_task(task, data_dir)
    train, dev = data["train"], data["dev"]
    idx = np.random.default_rng(0).permutation(len(train.labels))[:JOB["max_train"]]  # the runner's subset
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    path = default_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(model, LoraConfig(r=JOB["r"], lora_alpha=JOB["alpha"], target_modules=["query", "value"],
                                             task_type="SEQ_CLS"))

    def rows(split, ids):
        enc = tok([split.texts[i][0] for i in ids], truncation=True, max_length=JOB["max_len"])
        return [{**{k: v[j] for k, v in enc.items()}, "labels": int(split.labels[i])} for j, i in enumerate(ids)]
    tr, dv = rows(train, idx), rows(dev, range(len(dev.labels)))
    t1 = time.perf_counter()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=JOB["batch_size"],
                             learning_rate=JOB["lr"], num_train_epochs=JOB["epochs"], warmup_steps=JOB["warmup"],
                             lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, seed=seed,
                             train_sampling_strategy=strategy, bf16=bf16, use_cpu=True, report_to=[],
                             save_strategy="no", logging_strategy="no", disable_tqdm=True)
    acc = {}
    trainer = Trainer(model=model, args=args, train_dataset=tr, eval_dataset=dv,
                      data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=lambda p: {"acc": float((p.predictions.argmax(-1) == p.label_ids).mean())})
    trainer.train()
    t2, c2 = time.perf_counter(), time.process_time()
    evals, eval_cpu = {}, {}
    for eb in eval_batches:
        trainer.args.per_device_eval_batch_size = eb
        te, ce = time.perf_counter(), time.process_time()
        acc[eb] = trainer.evaluate()["eval_acc"]
        evals[eb], eval_cpu[eb] = time.perf_counter() - te, time.process_time() - ce
    best = min(evals, key=evals.get)
    return {"total_s": (t2 - t0) + evals[best], "train_eval_s": (t2 - t1) + evals[best],
            "cpu_s": (c2 - c0) + eval_cpu[best], "accuracy": acc[best], "eval_s_by_batch": evals,
            "eval_cpu_s_by_batch": eval_cpu, "best_eval_batch": best}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0, help="round i runs seed FIRST_SEED + i (more seeds later)")
    ap.add_argument("--eval-batches", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--bench", nargs="+", default=["fp32", "fp32:pooled:32", "bf16", "bf16:pooled:32"],
                    help="bench configurations PRECISION[:LAST_LAYER[:EVAL_BATCH]] (RunSpec.last_layer 'full' or "
                    "'pooled', RunSpec.eval_batch; left out: the runner's defaults full and 128), e.g. bf16:pooled:32")
    ap.add_argument("--trainer", nargs="+", default=["group_by_length:fp32", "group_by_length:bf16"],
                    help="Trainer settings STRATEGY:PRECISION")
    ap.add_argument("--val-cap", type=int, default=1000, help="the bench's validation split (the protocol's default "
                    "1,000 rows, scored every epoch besides dev; 1 = dev only, Trainer's work)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="what the verdict compares: wall ('total_s', "
                    "a quiet machine) or the process's CPU time over the same span ('cpu_s'; with --threads 1, "
                    "the figure on a machine other jobs load)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--merge", nargs="+", metavar="JSON", default=None, help="run nothing: pool the runs of these "
                    "finished reports (the same job and settings, other seeds) into one report at --out")
    args = ap.parse_args(argv)
    if args.merge:
        runs, threads, commands = merged(args.merge)
        args.clock = json.loads(Path(args.merge[0]).read_text()).get("clock", args.clock)
        _write(args, runs, final=True, threads=threads, sources=commands)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(command(args), flush=True)
    configs = [(name, lambda s, kw=kw: bench_run(s, kw, args.data_dir, args.val_cap))
               for name, kw in map(bench_config, args.bench)]
    for c in args.trainer:
        strategy, prec = c.split(":")
        configs.append((f"trainer {strategy} {prec}",
                        lambda s, st=strategy, b=prec == "bf16": trainer_run(s, st, b, args.eval_batches,
                                                                             args.data_dir)))
    runs: dict = {name: [] for name, _ in configs}
    for rep in range(args.repeats):
        for name, fn in (configs if rep % 2 == 0 else configs[::-1]):
            r = fn(args.first_seed + rep)
            runs[name].append({"seed": args.first_seed + rep, **r})
            print(f"round {rep} (seed {args.first_seed + rep}): {name}: total {r['total_s']:.1f}s train+eval {r['train_eval_s']:.1f}s "
                  f"cpu {r['cpu_s']:.1f}s acc {r['accuracy']:.4f}", flush=True)
            _write(args, runs)
    _write(args, runs, final=True)


def _med(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def speedups(summary: dict) -> dict:
    """Trainer / bench of the medians, each bench precision against the fastest Trainer setting (by train+eval
    time) at the same precision: "<trainer> / <bench> (<time>)" -> ratio (> 1: the bench is faster)."""
    ratios = {}
    for b in (n for n in summary if n.startswith("bench")):
        prec = b.split()[-1]
        same = [n for n in summary if n.startswith("trainer ") and n.split()[-1] == prec]
        if not same:
            continue
        best = min(same, key=lambda n: summary[n]["train_eval_s"]["median"])
        for key in ("train_eval_s", "total_s", "cpu_s"):
            if key in summary[best] and key in summary[b]:
                ratios[f"{best} / {b} ({key})"] = summary[best][key]["median"] / summary[b][key]["median"]
    return ratios


TARGET, SAME_ACC = 1.25, 0.01  # the target: >= 1.25x Trainer end to end, accuracy within 1 point
CLOCKS = {"wall": "total_s", "cpu": "cpu_s"}  # --clock: the end-to-end figure the verdict compares


def verdicts(runs: dict, clock: str = "wall") -> list[str]:
    """Per bench configuration, against the fastest Trainer setting at its precision: the end-to-end speed-up
    (median total time on ``clock``), the mean dev accuracy of each over seeds, and whether the target is met at
    equal accuracy."""
    keys = ("total_s", "train_eval_s", "cpu_s")
    summary = {n: {k: {"median": statistics.median(r[k] for r in rs)} for k in keys if all(k in r for r in rs)}
               for n, rs in runs.items() if rs}
    lines, field = [], CLOCKS[clock]
    for key, ratio in speedups(summary).items():
        if not key.endswith(f"({field})"):
            continue
        t, b = key.removesuffix(f" ({field})").split(" / ")
        acc = {n: statistics.mean(r["accuracy"] for r in runs[n]) for n in (t, b)}
        seeds = min(len(runs[t]), len(runs[b]))
        same = abs(acc[b] - acc[t]) <= SAME_ACC and seeds >= 2
        met = ratio >= TARGET and same
        lines.append(f"{b}: {ratio:.2f}x {t} end to end ({clock} clock); dev accuracy {acc[b]:.4f} vs "
                     f"{acc[t]:.4f} ({100 * (acc[b] - acc[t]):+.1f} points, {seeds} seed(s)): {TARGET}x target at "
                     f"equal accuracy {'MET' if met else 'NOT met'}"
                     + ("" if seeds >= 2 else " (equal accuracy needs >= 2 seeds)"))
    return lines


def merged(paths) -> tuple[dict, int, list]:
    """(runs per configuration, threads, the commands) of finished reports of one job, each configuration's seeds
    disjoint across them; a configuration missing from a report is kept with the seeds it has."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    for p, r in zip(paths, reports):
        if not r.get("complete") or r["job"] != reports[0]["job"] or r["threads"] != reports[0]["threads"] \
                or r.get("clock") != reports[0].get("clock"):
            raise SystemExit(f"{p}: not a finished report of the same job, threads and clock as {paths[0]}")
    runs: dict = {}
    for p, r in zip(paths, reports):
        for name, rs in r["runs"].items():
            seen = {x["seed"] for x in runs.get(name, [])}
            if seen & {x["seed"] for x in rs}:
                raise SystemExit(f"{p}: {name} repeats seed(s) {sorted(seen & {x['seed'] for x in rs})}")
            runs.setdefault(name, []).extend(rs)
    return runs, reports[0]["threads"], [r["command"] for r in reports]


def _write(args, runs, final=False, threads=None, sources=None):
    summary = {name: {"total_s": _med([r["total_s"] for r in rs]),
                      "train_eval_s": _med([r["train_eval_s"] for r in rs]),
                      "cpu_s": _med([r["cpu_s"] for r in rs]),
                      "accuracy": _med([r["accuracy"] for r in rs]), "n": len(rs)}
               for name, rs in runs.items() if rs}
    ratios = speedups(summary)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() and not sources else None
    cmd = (f"python benchmarks/trainer_vs_bench.py --merge {' '.join(args.merge)} --out {args.out}" if sources
           else command(args))
    report = {"command": cmd, **({"merged_from": sources} if sources else {}), "job": JOB,
              "complete": final, "summary": summary, "speedup_vs_best_trainer": ratios,
              "verdicts": verdicts(runs, args.clock), "clock": args.clock, "runs": runs,
              "cpu": platform.processor() or platform.machine(), "threads": threads or torch.get_num_threads(),
              "load_avg_1min_at_write": load, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if final:
        for n, s in summary.items():
            print(f"{n:44s} train+eval {s['train_eval_s']['median']:7.1f}s ({s['train_eval_s']['min']:.1f}.."
                  f"{s['train_eval_s']['max']:.1f})  total {s['total_s']['median']:7.1f}s  "
                  f"cpu {s['cpu_s']['median']:7.1f}s  "
                  f"acc {s['accuracy']['median']:.4f}")
        for k, v in ratios.items():
            print(f"{k}: {v:.2f}x")
        for line in report["verdicts"]:
            print(line)
        print(cmd)


def command(args) -> str:
    """The command line that reproduces this measurement (every setting spelled out)."""
    return " ".join(["python benchmarks/trainer_vs_bench.py", f"--repeats {args.repeats}"]
                    + ([f"--first-seed {args.first_seed}"] if args.first_seed else [])
                    + [f"--val-cap {args.val_cap}", "--eval-batches " + " ".join(map(str, args.eval_batches)),
                       "--bench " + " ".join(args.bench), "--trainer " + " ".join(args.trainer)]
                    + ([f"--threads {args.threads}"] if args.threads else [])
                    + ([f"--clock {args.clock}"] if args.clock != "wall" else [])
                    + ([f"--out {args.out}"] if args.out != str(OUT) else []))


if __name__ == "__main__":
    main()
