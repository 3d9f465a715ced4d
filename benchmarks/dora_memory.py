"""Peak memory of one DoRA training step, peftzoo vs PEFT, on the embedded all-MiniLM-L6-v2 (CPU).

Each implementation runs in its own fresh process: build the model, attach DoRA (r=8, all-linear, classifier
trained), one warm-up step, then the peak RSS is reset (/proc/self/clear_refs) and one more step is measured.
Reported: the step's peak RSS above the RSS before it, and the bytes autograd saved for backward.

    python benchmarks/dora_memory.py [--seq 128 --batch 16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


from step_memory import measure_step  # noqa: E402  (same folder: run as a script)


def child(impl, seq, batch):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging
    logging.set_verbosity_error()
    from peftzoo.bench.models import default_model
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(default_model(), num_labels=2)
    if impl == "peftzoo":
        import peftzoo
        ad = peftzoo.attach(model, "dora", targets="all-linear", r=8, train=["classifier"])
        call, params = ad.model, ad.trainable_parameters()
    else:
        import peft
        names = "^(" + "|".join(n.replace(".", r"\.") for n, m in model.named_modules()  # exactly our layers
                                if isinstance(m, torch.nn.Linear) and "classifier" not in n and "pooler" not in n) + ")$"
        call = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, use_dora=True, target_modules=names,
                                                          modules_to_save=["classifier"]))
        params = [p for p in call.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    b = {"input_ids": torch.randint(1000, 20000, (batch, seq), generator=g), "labels": torch.randint(0, 2, (batch,))}

    def step():
        call(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    m = measure_step(step)
    print(json.dumps({"impl": impl, "trainable": sum(p.numel() for p in params),
                      "step_peak_above_start_mb": m["step_peak_mb"], "saved_for_backward_mb":
                      m["saved_for_backward_mb"]}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--child", default=None)
    ap.add_argument("--out", default="results/speed/dora_memory.json")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.seq, a.batch)
    rows = []
    for impl in ("peftzoo", "peft"):
        out = subprocess.run([sys.executable, __file__, "--child", impl, "--seq", str(a.seq), "--batch", str(a.batch)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    for r in rows:
        print(r)
    res = {"model": "all-MiniLM-L6-v2", "seq": a.seq, "batch": a.batch, "rows": rows,
           "ratio_peak": rows[0]["step_peak_above_start_mb"] / rows[1]["step_peak_above_start_mb"],
           "ratio_saved": rows[0]["saved_for_backward_mb"] / rows[1]["saved_for_backward_mb"],
           "command": f"python benchmarks/dora_memory.py --seq {a.seq} --batch {a.batch}"}
    print(f"peftzoo / PEFT: step peak {res['ratio_peak']:.2f}, saved for backward {res['ratio_saved']:.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
