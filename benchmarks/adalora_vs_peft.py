"""Does AdaLoRA learn? peftzoo's AdaLoRA and Hugging Face PEFT's, trained by the same loop on the same data.

Both go through ``peftzoo.bench.runner.execute`` (data subset, batches, shuffling, AdamW + linear warm-up/decay,
gradient clipping, evaluation on the GLUE dev set): for PEFT the adapter is a thin shim around
``get_peft_model(model, AdaLoraConfig(...))`` whose ``on_step`` calls PEFT's ``update_and_allocate`` and whose
``extra_loss`` is None because PEFT's AdaLoraModel adds its orthogonal regulariser to ``outputs.loss`` itself.
Same targets, ranks, alpha, schedule (tinit/tfinal/deltaT as peftzoo resolves them for the run's total steps),
LR and seed; the head-only baseline at the same LRs is the reference for "learned nothing".

    PEFTZOO_DATA_DIR=../shared/data nice -n 10 python benchmarks/adalora_vs_peft.py            # 3 LRs, 1 seed
    python benchmarks/adalora_vs_peft.py --lrs 3e-3 1e-2 --schedule 10 20 5 --out /tmp/x.json  # a fixed schedule
    python benchmarks/adalora_vs_peft.py --merge /tmp/a.json /tmp/b.json --out results/adalora/x.json  # parallel runs
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from peftzoo.bench.models import make_adapter
from peftzoo.bench.runner import execute
from peftzoo.bench.spec import RunSpec


class PeftAdaLora:
    """The slice of peftzoo's Adapter interface that ``runner.execute`` and ``train.fit`` use, over PEFT's AdaLoRA."""

    name = "peft-adalora"

    def __init__(self, model, spec: RunSpec):
        import peft
        hp = {k: v for k, v in spec.hparams.items() if k not in ("tinit", "tfinal", "deltaT")}
        self.hparams = {"init_r": 12, "target_r": 8, "alpha": 8.0, **hp}
        self.fixed = {k: spec.hparams[k] for k in ("tinit", "tfinal", "deltaT") if k in spec.hparams}
        cfg = peft.AdaLoraConfig(
            task_type="SEQ_CLS", target_modules=list(spec.targets), modules_to_save=list(spec.train),
            init_r=self.hparams["init_r"], target_r=self.hparams["target_r"], lora_alpha=self.hparams["alpha"],
            total_step=10**6, tinit=0, tfinal=0, deltaT=1)  # the schedule is set in set_total_steps, as ours is
        self.model = peft.get_peft_model(model, cfg)
        self.cfg = self.model.peft_config["default"]  # the RankAllocator holds this same object

    def set_total_steps(self, total):
        import peftzoo
        ours = peftzoo.make_config("adalora", targets=["query"], **self.hparams, **self.fixed, total_steps=total)
        sched = resolved_schedule(ours, total)
        self.cfg.total_step = total
        self.cfg.tinit, self.cfg.tfinal, self.cfg.deltaT = sched["tinit"], sched["tfinal"], sched["deltaT"]
        self.schedule = {**sched, "total_steps": total}

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_groups(self, lr, weight_decay=0.0):
        return [{"params": self.trainable_parameters(), "lr": lr, "weight_decay": weight_decay}]

    def extra_loss(self):
        return None  # PEFT's AdaLoraModel.forward adds orth_reg_weight * regulariser to outputs.loss

    def on_step(self, step):
        self.model.base_model.update_and_allocate(step)

    def ranks(self):
        pattern = self.cfg.rank_pattern or {}
        return {k: int(sum(v)) for k, v in pattern.items()}

    def summary(self):
        n = sum(p.numel() for n_, p in self.model.named_parameters() if p.requires_grad and "lora_" in n_)
        return {"method": self.name, "adapter": n, "effective": n, "train_modules": 0, "trainable": n}

    def save(self, path):
        self.model.save_pretrained(path)


def resolved_schedule(config, total):
    """The (tinit, tfinal, deltaT) our AdaLoRA uses for ``total`` steps (derived when the config leaves it open)."""
    from peftzoo.adapters.adalora import schedule_for
    return schedule_for(config, total)


@torch.no_grad()
def delta_norm(ad) -> float:
    """RMS over adapted layers of ‖ΔW‖_F / ‖W‖_F at the end of training: how far the adapter moved the model."""
    import math
    vals = []
    for m in ad.model.modules():
        if hasattr(m, "delta_weight") and hasattr(m, "base") and isinstance(getattr(m, "base"), torch.nn.Linear):
            vals.append(float(m.delta_weight().norm() / m.base.weight.norm()))
        elif hasattr(m, "get_delta_weight") and hasattr(m, "lora_E"):
            vals.append(float(m.get_delta_weight("default").norm() / m.get_base_layer().weight.norm()))
    return math.sqrt(sum(v * v for v in vals) / len(vals)) if vals else 0.0


def run(spec, data_dir, impl):
    """One run through runner.execute; ``impl`` 'peft' swaps in PEFT's AdaLoRA for the adapter."""
    made = {}

    def attach(model, s):
        made["ad"] = PeftAdaLora(model, s) if impl == "peft" else make_adapter(model, s)
        return made["ad"]
    rec = execute(spec, data_dir, progress=False, attach=attach)
    ad = made.get("ad")
    out = {"impl": impl, "method": spec.method, "lr": spec.lr, "seed": spec.seed, "status": rec.status,
           "wall_s": round(rec.wall_s or 0.0, 1)}
    if not rec.ok:
        return {**out, "error": rec.error}
    out.update({"dev_acc": [h.score for h in rec.history],
                "train_loss": [round(h.loss, 4) for h in rec.history], "steps": rec.steps,
                "delta_rel_norm": delta_norm(ad) if spec.method != "head" else None,
                "ranks": sorted(ad.ranks().values()) if spec.method == "adalora" else None,
                "schedule": ad.schedule if impl == "peft" else (
                    {**ad.schedule(), "total_steps": rec.steps} if spec.method == "adalora" else None)})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--max-eval", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--init-r", type=int, default=12)
    ap.add_argument("--target-r", type=int, default=8)
    ap.add_argument("--schedule", type=int, nargs=3, metavar=("TINIT", "TFINAL", "DELTAT"), default=None,
                    help="a fixed schedule in steps; default: the adapter's own (derived from the total steps)")
    ap.add_argument("--impls", nargs="+", default=["head", "ours", "peft"], choices=["head", "lora", "ours", "peft"],
                    help="lora: peftzoo's LoRA r=8, alpha=16 (the quick preset's) as a reference for |ΔW|")
    ap.add_argument("--data-dir", default=os.environ.get("PEFTZOO_DATA_DIR"))
    ap.add_argument("--out", default="results/adalora/sst2_ours_vs_peft.json")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only combine files this script wrote into --out")
    a = ap.parse_args(argv)
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        rows = [{**r, "hparams": p["setup"]["hparams"]} for p in parts for r in p["runs"]]  # schedule given or not
        return _write(Path(a.out), {"command": [p["command"] for p in parts], "setup": parts[0]["setup"],
                                    "note": parts[0]["note"], "runs": rows,
                                    "wall_s": round(max(p["wall_s"] for p in parts), 1)})
    hp = {"init_r": a.init_r, "target_r": a.target_r}
    if a.schedule:
        hp.update(dict(zip(("tinit", "tfinal", "deltaT"), a.schedule)))
    common = dict(suite="adalora-vs-peft", task="SST-2", epochs=a.epochs, batch_size=a.batch_size, max_len=a.max_len,
                  max_train=a.max_train, max_eval=a.max_eval, targets=("query", "value"), train=("classifier",))
    rows, t0 = [], time.perf_counter()
    for lr in a.lrs:
        for seed in a.seeds:
            for impl in a.impls:
                method = {"head": "head", "lora": "lora"}.get(impl, "adalora")
                hparams = {"head": {}, "lora": {"r": 8, "alpha": 16}}.get(impl, hp)
                spec = RunSpec(method=method, seed=seed, lr=lr, hparams=hparams, **common)
                r = run(spec, a.data_dir, impl)
                rows.append(r)
                acc = " ".join(f"{x:.3f}" for x in r.get("dev_acc", [])) or r.get("error")
                extra = (f"  |ΔW|/|W| {r['delta_rel_norm']:.2e}  schedule {r['schedule']}  ranks {r['ranks']}"
                         if r.get("delta_rel_norm") is not None else "")
                print(f"lr {lr:g} seed {seed} {impl:5s} dev acc per epoch {acc}  loss {r.get('train_loss')}  "
                      f"({r['wall_s']} s){extra}", flush=True)
    import peft
    result = {"command": "python benchmarks/adalora_vs_peft.py " + " ".join(argv or os.sys.argv[1:]),
              "setup": {**common, "hparams": hp, "model": "all-MiniLM-L6-v2 (embedded)", "peft": peft.__version__,
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
              "note": "CPU shared by several jobs: wall times are under load", "runs": rows,
              "wall_s": round(time.perf_counter() - t0, 1)}
    _write(Path(a.out), result)


def _write(out: Path, result: dict):
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump(result, f, indent=1)
    os.replace(f.name, out)
    print(f"wrote {out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
