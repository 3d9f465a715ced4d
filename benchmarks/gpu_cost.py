"""Estimate the one-GPU cost of the GPU presets (glue, roberta-base) from FLOPs: `PEFTZOO_DATA_DIR=DIR python
benchmarks/gpu_cost.py`. Nothing is trained and no GPU is measured: the hours rest on an ASSUMED throughput.

Runs: the preset's plan, ``make_plan(...).stage1() + .stage2({(task, method): placeholder LR})`` (runs the budget
solver marks skipped are left out). Tokens: every example costs its own tokenised length L (dynamic padding, no
padding counted), capped at the task's max_len; L is measured on the local TSVs with the MiniLM (BERT wordpiece)
tokenizer, on the exact training subset and validation split the runner carves (``split_indices``). Per run:
train = epochs × Σ_train-subset, eval = epochs × (Σ_val + Σ_dev) (evaluation after every epoch).
FLOPs of one forward example: 2·N·L + 4·layers·hidden·L² (N = the encoder's nn.Linear weights, embeddings and
the classifier head excluded; the L² term is QKᵀ and AV). Training = forward × 3 for full and SAID (input and
weight gradients), × 2 for the adapter methods (input gradients through the frozen weights, no weight gradients),
× 1 for head-only (nothing below the head needs a gradient); adapter matmuls are not counted. Evaluation = 1×.
Hours = FLOPs / (989e12 × MFU), 989 TFLOP/s being the H100 SXM bf16 dense peak, at two assumed MFUs per model.
Small batches of short sequences may be bound by per-step latency instead: the optimizer steps and evaluation
batches (128 rows) are counted too, with the hours each 1 ms of per-step latency adds (no latency is assumed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from peftzoo.bench.preset import load_preset
from peftzoo.bench.plan import make_plan
from peftzoo.bench.store import write_text
from peftzoo.bench.tasks import get_task, load_task, split_indices

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "speed"
PEAK = 989e12  # H100 SXM bf16 dense, FLOP/s
MFU = {"glue": (0.03, 0.10), "roberta-base": (0.10, 0.30)}  # assumed model-FLOP utilisation
HUB = {"MNLI": (392_702, 9_815 + 9_832), "QNLI": (104_743, 5_463), "QQP": (363_846, 40_430)}  # public split sizes
PAIRS = ("MRPC", "RTE", "STS-B", "WNLI")  # local sentence-pair tasks: their mean stands in for the hub ones
TRAIN_MULT = {"full": 3, "said": 3, "head": 1}  # every other (adapter) method: 2
COMMAND = "PEFTZOO_DATA_DIR=/work/shared/data python benchmarks/gpu_cost.py"


def lengths(tok, data_dir) -> dict:
    """{task: {split: untruncated token lengths}} for the local tasks ("train", "dev")."""
    out = {}
    for name in ("CoLA", "SST-2", "MRPC", "RTE", "STS-B", "WNLI"):
        task, data = get_task(name), load_task(get_task(name), data_dir)
        out[name] = {s: np.array([len(x) for x in tok(*zip(*data[s].texts))["input_ids"]], dtype=np.float64)
                     for s in ("train", *task.dev)}
    return out


def moments(L, max_len):
    L = np.minimum(L, max_len)
    return float(L.mean()), float((L * L).mean())


def task_stats(task, max_len, lens, prot) -> dict:
    """n_train, n_eval (val + dev) and the mean L and L² of the training subset and of the evaluated rows."""
    if task in HUB:
        n, n_dev = HUB[task]
        n_val = min(prot.val_cap, int(round(prot.val_fraction * n)))
        m = [np.mean([moments(np.concatenate(list(lens[t].values())), max_len)[k] for t in PAIRS]) for k in (0, 1)]
        return dict(n_train=n - n_val, n_eval=n_val + n_dev, train_L=m[0], train_L2=m[1], eval_L=m[0], eval_L2=m[1],
                    lengths="assumed: mean of the local pair tasks " + ", ".join(PAIRS))
    tr, dev = lens[task]["train"], np.concatenate([v for k, v in lens[task].items() if k != "train"])
    idx, val = split_indices(len(tr), None, prot.val_fraction, prot.val_cap, prot.val_seed)
    ev = np.concatenate([tr[val], dev])
    (a, b), (c, d) = moments(tr[idx], max_len), moments(ev, max_len)
    return dict(n_train=len(idx), n_eval=len(ev), train_L=a, train_L2=b, eval_L=c, eval_L2=d,
                lengths="measured (MiniLM wordpiece tokenizer)")


def model_of(name, preset):
    if name == "glue":
        from peftzoo.bench.models import load_model
        return load_model(None, get_task(preset.tasks[0]))[0]
    from transformers import RobertaConfig, RobertaForSequenceClassification  # roberta-base's config, random weights
    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(vocab_size=50265, max_position_embeddings=514,
                                                          type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                                                          num_labels=get_task(preset.tasks[0]).num_labels))


def estimate(name, lens) -> dict:
    preset = load_preset(name)
    model = model_of(name, preset)
    cfg = model.config
    N = sum(m.weight.numel() for m in model.base_model.encoder.modules() if isinstance(m, torch.nn.Linear))
    att = 4 * cfg.num_hidden_layers * cfg.hidden_size
    plan = make_plan(preset, model=model)
    specs = [s for n in plan.stages for s in plan.stage(n, None)]  # every stage; the LR does not change the cost
    skipped = [s for s in specs if s.skip_reason]
    specs = [s for s in specs if not s.skip_reason]
    stats = {t: task_stats(t, next(s.max_len for s in specs if s.task == t), lens, plan.protocol) for t in plan.tasks}
    per_task, total = {}, 0.0
    for s in specs:
        st = stats[s.task]
        tr_tok, ev_tok = s.epochs * st["n_train"] * st["train_L"], s.epochs * st["n_eval"] * st["eval_L"]
        tr_fwd = s.epochs * st["n_train"] * (2 * N * st["train_L"] + att * st["train_L2"])
        ev_fwd = s.epochs * st["n_eval"] * (2 * N * st["eval_L"] + att * st["eval_L2"])
        f = TRAIN_MULT.get(s.method, 2) * tr_fwd + ev_fwd
        row = per_task.setdefault(s.task, {**st, "epochs": s.epochs, "max_len": s.max_len, "runs": 0,
                                           "train_tokens": 0.0, "eval_tokens": 0.0, "flops": 0.0, "steps": 0,
                                           "eval_batches": 0})
        row["runs"] += 1
        row["steps"] += s.epochs * -(-st["n_train"] // s.batch_size)
        row["eval_batches"] += s.epochs * -(-st["n_eval"] // 128)  # ≈: each split is batched on its own
        row["train_tokens"] += tr_tok
        row["eval_tokens"] += ev_tok
        row["flops"] += f
        total += f
    hours = {f"{m:.0%}": float(total / (PEAK * m) / 3600) for m in MFU[name]}
    steps, ev = (sum(r[k] for r in per_task.values()) for k in ("steps", "eval_batches"))
    return {"preset": name, "model": preset.model or "all-MiniLM-L6-v2 (embedded)", "runs": len(specs),
            "runs_stage1": len([s for s in plan.stage1() if not s.skip_reason]), "runs_skipped": len(skipped),
            "encoder_matmul_params_N": N, "forward_flops_per_token_2N": 2 * N,
            "attention_flops_per_token_per_L": att, "per_task": per_task, "total_flops": total,
            "gpu_hours_h100_at_assumed_mfu": hours, "train_steps": steps, "eval_batches": ev,
            "hours_per_ms_per_train_step": steps * 1e-3 / 3600, "hours_per_ms_per_eval_batch": ev * 1e-3 / 3600}


def main():
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    from peftzoo.bench.models import default_model
    tok = AutoTokenizer.from_pretrained(default_model())
    tok.model_max_length = 10 ** 6  # lengths untruncated here; each preset caps them at its max_len
    lens = lengths(tok, os.environ.get("PEFTZOO_DATA_DIR"))
    out = {"command": COMMAND, "assumptions": [
        "No GPU measured: hours = FLOPs / (989 TFLOP/s H100 bf16 dense peak x assumed MFU); MiniLM (hidden 384) "
        "at 3% and 10% (small, launch-bound kernels), roberta-base at 10% and 30%.",
        "FLOPs per forward example: 2N·L + 4·layers·hidden·L² (N: encoder nn.Linear weights; embeddings, head, "
        "softmax, layer norms, padding and adapter matmuls not counted).",
        "Training = 3x forward for full and SAID, 2x for adapter methods (no weight gradients of frozen weights), "
        "1x for head-only (no gradient below the head); evaluation (val + dev after every epoch) = 1x.",
        "Token lengths: MiniLM BERT wordpiece tokenizer on the local TSVs for every local task, also under "
        "roberta-base (RoBERTa's BPE tokenizer is not available offline and gives somewhat different lengths).",
        f"MNLI, QNLI, QQP (not local): public split sizes, mean length = the mean of the local pair tasks "
        f"{', '.join(PAIRS)} (the nearest measured stand-in; likely high for QQP's short questions).",
        "Runs the budget solver marks skipped are not counted; stage 2 counted with one LR per (task, method).",
        "Steps of ~16-32 short sequences may be latency-bound (kernel launches, optimizer): train_steps x the "
        "per-step time is a second estimate; no per-step time is assumed here (none could be measured)."],
        "presets": {n: estimate(n, lens) for n in ("glue", "roberta-base")}}
    md = [f"# GPU cost estimate (FLOPs-based, assumed MFU)\n\n`{COMMAND}`\n"]
    for n, e in out["presets"].items():
        hrs = ", ".join(f"{h:,.1f} h at {m} MFU" for m, h in e["gpu_hours_h100_at_assumed_mfu"].items())
        md += [f"## {n} ({e['model']})\n", f"{e['runs']:,} runs ({e['runs_stage1']:,} in the LR sweep), "
               f"{e['total_flops']:.3g} FLOPs, one H100: {hrs} (assumed). N = {e['encoder_matmul_params_N']:,}. "
               f"{e['train_steps']:,} optimizer steps: each 1 ms of per-step latency is "
               f"{e['hours_per_ms_per_train_step']:.1f} h; {e['eval_batches']:,} eval batches.\n",
               "| task | runs | epochs | n_train | n_eval | mean L train | train tokens | eval tokens | PFLOPs "
               "| steps | lengths |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        md += [f"| {t} | {r['runs']} | {r['epochs']} | {r['n_train']:,} | {r['n_eval']:,} | {r['train_L']:.1f} | "
               f"{r['train_tokens']:.3g} | {r['eval_tokens']:.3g} | {r['flops'] / 1e15:,.0f} | {r['steps']:,} | "
               f"{r['lengths']} |"
               for t, r in e["per_task"].items()] + [""]
    md += ["Assumptions:\n"] + [f"- {a}" for a in out["assumptions"]]
    OUT.mkdir(parents=True, exist_ok=True)
    write_text(OUT / "gpu_cost.json", json.dumps(out, indent=1) + "\n")
    write_text(OUT / "gpu_cost.md", "\n".join(md) + "\n")
    for n, e in out["presets"].items():
        print(n, e["runs"], f"{e['total_flops']:.3e}", e["gpu_hours_h100_at_assumed_mfu"], e["train_steps"],
              f"{e['hours_per_ms_per_train_step']:.1f} h per ms/step")


if __name__ == "__main__":
    main()
