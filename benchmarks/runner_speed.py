"""What each of the runner's throughput changes buys, before vs after, interleaved in one process.

The job is the brief's: SST-2, 2,000 training examples, all-MiniLM-L6-v2, batch 16, length 64, full dev (872).
Each comparison runs its variants in alternation for ``--rounds`` rounds, so that load on a shared machine hits
all alike; we report the median over rounds and the spread (min..max), in examples per second of wall time, and
the ratio of medians (after / before).

* train, full FT and LoRA r=8 (query, value): ``--steps`` training steps per round on batches drawn from
  - before: the old runner's batches (fixed at the start, random rows, padded to the batch's longest row), fp32
  - grouped: this runner's length-grouped batches (sorted inside shuffled chunks of 50 batches), fp32
  - grouped+bf16: the same under CPU bf16 autocast
* eval (LoRA model, 872 dev rows, batch 128): before = rows in file order; sorted = rows in length order.
* tokenise per run: before = tokenise the 2,000 + 872 rows every run; after = the per-process cache's hit.
* model per run (a change measured and dropped): from_pretrained vs a deep copy of a model kept in memory, each
  followed by one write to every weight (training writes them all; the mmap'd checkpoint pages are faulted in then).

    python benchmarks/runner_speed.py --rounds 5 --steps 16
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import peftzoo
from peftzoo.bench import batches
from peftzoo.bench.models import default_model, load_model
from peftzoo.bench.tasks import get_task, load_task
from peftzoo.bench.train import autocast, train_step

OUT = Path(__file__).resolve().parents[1] / "results" / "speed"


def old_batches(tok, split, idx, bs, max_len, labels):
    """The runner before this change: consecutive rows of a fixed permutation, padded to the batch's longest."""
    out = []
    for i in range(0, len(idx), bs):
        rows = idx[i:i + bs]
        enc = tok(*zip(*[split.texts[j] for j in rows]), truncation=True, max_length=max_len, padding=True,
                  return_tensors="pt")
        out.append({**dict(enc), "labels": torch.as_tensor(labels[rows])})
    return out


def make(method, path, task):
    torch.manual_seed(0)
    model, _ = load_model(path, task)
    if method == "full":
        from peftzoo.adapters.baselines import FullFinetune
        from peftzoo.adapters.base import AdapterConfig
        ad, lr = FullFinetune(model, AdapterConfig(train=["classifier"])), 5e-5
    else:
        ad, lr = peftzoo.attach(model, "lora", targets=["query", "value"], r=8, alpha=16, train=["classifier"]), 2e-3
    ad.model.train()
    return ad, torch.optim.AdamW(ad.param_groups(lr=lr))


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(fn):
    t = clock()
    n = fn()
    return n / (clock() - t)


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "rounds": xs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=16, help="training steps per variant per round")
    ap.add_argument("--out", default=str(OUT / "runner_speed.json"))
    ap.add_argument("--clock", choices=CLOCK, default="wall",
                    help="cpu: this process's CPU time (with --threads 1, the work done, little affected by load)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    task, path = get_task("SST-2"), default_model()
    data = load_task(task, args.data_dir)
    train, dev = data["train"], data["dev"]
    idx = np.random.default_rng(0).permutation(len(train.labels))[:2000]
    _, tok = load_model(path, task)
    old = old_batches(tok, train, idx, 16, 64, train.labels)
    enc = batches.encode_split(tok, train, idx, 64, task.name)
    denc = batches.encode_split(tok, dev, np.arange(len(dev.labels)), 64, task.name)
    cpu = torch.device("cpu")
    models = {m: make(m, path, task) for m in ("full", "lora")}
    rng = np.random.default_rng(0)
    res: dict = {}

    def train_variant(method, kind, r):
        ad, opt = models[method]
        epoch = old if kind == "before" else batches.train_batches(enc, train.labels[idx], 16, 0, r)
        start = int(rng.integers(0, len(epoch) - args.steps))
        chosen = epoch[start:start + args.steps] if kind != "before" else \
            [old[j] for j in rng.permutation(len(old))[:args.steps]]
        prec = "bf16" if kind == "grouped+bf16" else "fp32"

        def go():
            for s, b in enumerate(chosen, 1):
                train_step(ad, opt, b, s, precision=prec)
            return sum(len(b["labels"]) for b in chosen)
        return timed(go)

    def eval_variant(kind):
        model = models["lora"][0].model
        model.eval()

        def go():
            if kind == "before":
                with torch.no_grad():
                    for i in range(0, len(dev.labels), 128):
                        rows = range(i, min(len(dev.labels), i + 128))
                        b = tok(*zip(*[dev.texts[j] for j in rows]), truncation=True, max_length=64,
                                padding=True, return_tensors="pt")
                        model(**b).logits.argmax(-1)
            else:
                batches.predict(model, denc, 128, cpu, False, autocast(cpu, "fp32"))
            return len(dev.labels)
        n = timed(go)
        model.train()
        return n

    def setup_variant(kind):
        def go():
            if kind == "before":
                old_batches(tok, train, idx, 16, 64, train.labels)
                tok(*zip(*dev.texts), truncation=True, max_length=64)
            else:
                batches.encode_split(tok, train, idx, 64, task.name)
                batches.encode_split(tok, dev, np.arange(len(dev.labels)), 64, task.name)
            return 1
        return 1 / timed(go)  # seconds per run

    from transformers import AutoModelForSequenceClassification
    kept = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def model_variant(kind):
        def go():
            m = (AutoModelForSequenceClassification.from_pretrained(path, num_labels=2) if kind == "from_pretrained"
                 else copy.deepcopy(kept))
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.0)
            return 1
        return 1 / timed(go)

    plan = [(f"train {m} {k}", lambda m=m, k=k, r=0: train_variant(m, k, r))
            for m in ("full", "lora") for k in ("before", "grouped", "grouped+bf16")]
    plan += [(f"eval {k}", lambda k=k, r=0: eval_variant(k)) for k in ("before", "sorted")]
    plan += [(f"tokenise {k} (s)", lambda k=k, r=0: setup_variant(k)) for k in ("before", "after")]
    plan += [(f"model {k} (s)", lambda k=k, r=0: model_variant(k)) for k in ("from_pretrained", "deepcopy")]
    padded = {"before": float(np.mean([b["input_ids"].numel() for b in old])),
              "grouped": float(np.mean([b["input_ids"].numel() for b in batches.train_batches(
                  enc, train.labels[idx], 16, 0, 0)]))}
    for r in range(args.rounds):
        for name, fn in (plan if r % 2 == 0 else plan[::-1]):
            res.setdefault(name, []).append(fn(r=r))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in res.items()), flush=True)
        write(res, args, argv, padded, r + 1)  # after every round: a killed run keeps what it measured


def write(res, args, argv, padded, done):
    out = {k: summary(v) for k, v in res.items()}
    med = {k: v["median"] for k, v in out.items()}
    ratios = {}
    for m in ("full", "lora"):
        ratios[f"train {m}: grouped / before"] = med[f"train {m} grouped"] / med[f"train {m} before"]
        ratios[f"train {m}: grouped+bf16 / grouped"] = med[f"train {m} grouped+bf16"] / med[f"train {m} grouped"]
    ratios["eval: sorted / before"] = med["eval sorted"] / med["eval before"]
    ratios["tokenise: before / after (time)"] = med["tokenise before (s)"] / med["tokenise after (s)"]
    ratios["model: from_pretrained / deepcopy (time)"] = med["model from_pretrained (s)"] / med["model deepcopy (s)"]
    report = {"command": "python benchmarks/runner_speed.py " + " ".join(argv or []),
              "units": f"examples/s of {args.clock} time (tokenise, model: seconds per run); "
                       "median, min..max over rounds",
              "rounds_done": done, "rounds": args.rounds, "steps_per_round": args.steps, "ratios": ratios,
              "results": out, "mean_tokens_per_train_batch": padded, "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "load_avg_1min_at_write": _load(), "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for k, v in out.items():
        print(f"{k:28s} median {v['median']:8.2f}  ({v['min']:.2f}..{v['max']:.2f})")
    for k, v in ratios.items():
        print(f"{k:40s} {v:.2f}x")
    print(f"tokens per training batch: {padded}", flush=True)


def _load():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


if __name__ == "__main__":
    main()
