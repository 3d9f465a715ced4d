"""Training-step time of every method as a ratio to the frozen-model floor, peftzoo and PEFT side by side.

Floor: the frozen base model's forward + backward with gradients flowing to the input embeddings (and the
classifier trained, as in every configuration). Each configuration runs `--steps` timed steps (forward, backward,
AdamW step, the adapter's hook) per round; rounds are interleaved so that drift hits all alike; we report the
median over rounds and the spread (min..max of the round medians). Memory: bytes saved for backward in one step
(autograd's saved tensors, distinct storages), and on CUDA the peak allocated.

    python benchmarks/speed.py                      # CPU: hidden 256, 4 layers, FFN 1024, seq 128, batch 16
    python benchmarks/speed.py --hidden 768 --layers 12 --ffn 3072
    python benchmarks/speed.py --device cuda --hidden 768 --layers 12 --ffn 3072 --seq 256 --batch 32 --bf16
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import platform
import statistics
import time
from pathlib import Path

import torch

import peftzoo

FF = r".*output\.dense"  # IA3's feedforward layers (input scaled): BERT's attention and FFN output projections
CONFIGS = {  # name: (peftzoo method, kwargs, PEFT config factory)
    "lora r=8": ("lora", dict(r=8, alpha=16), lambda p, t: p.LoraConfig(r=8, lora_alpha=16, target_modules=t)),
    "rslora r=8": ("rslora", dict(r=8, alpha=16),
                   lambda p, t: p.LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=t)),
    "loraplus r=8": ("loraplus", dict(r=8, alpha=16), lambda p, t: p.LoraConfig(r=8, lora_alpha=16, target_modules=t)),
    "dora r=8": ("dora", dict(r=8, alpha=16),
                 lambda p, t: p.LoraConfig(r=8, lora_alpha=16, use_dora=True, target_modules=t)),
    "vera r=256": ("vera", dict(r=256), lambda p, t: p.VeraConfig(r=256, target_modules=t)),
    "adalora 12->8": ("adalora", dict(init_r=12, target_r=8, tinit=0, tfinal=0, deltaT=10),
                      lambda p, t: p.AdaLoraConfig(init_r=12, target_r=8, deltaT=10, total_step=10**6,
                                                   target_modules=t)),
    "ia3": ("ia3", dict(feedforward=FF), lambda p, t: p.IA3Config(target_modules=t, feedforward_modules=FF)),
    "loha r=8": ("loha", dict(r=8, alpha=8), lambda p, t: p.LoHaConfig(r=8, alpha=8, target_modules=t)),
    "lokr r=8": ("lokr", dict(r=8, alpha=8), lambda p, t: p.LoKrConfig(r=8, alpha=8, target_modules=t)),
    "oft b=32": ("oft", dict(oft_block_size=32), lambda p, t: p.OFTConfig(oft_block_size=32, target_modules=t)),
}


def build(args):
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                     intermediate_size=args.ffn, vocab_size=30522, max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def linear_targets(model):
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names - {"classifier"})


class Step:
    """One configuration: a model, its optimizer and a step closure."""

    def __init__(self, name, impl, base, args):
        self.name, self.impl = name, impl
        model = copy.deepcopy(base).to(args.device)
        self.hook = lambda s: None
        self.extra = lambda: None
        if impl == "floor":
            for p in model.parameters():
                p.requires_grad_(False)
            model.classifier.requires_grad_(True)
            params = list(model.classifier.parameters())
            self.forward = lambda b: model(inputs_embeds=self.embed(model, b), labels=b["labels"]).loss
        elif impl == "peftzoo":
            method, kw, _ = CONFIGS[name]
            ad = peftzoo.attach(model, method, targets="all-linear", train=["classifier"], **kw)
            ad.set_total_steps(10**6)
            params = ad.param_groups(lr=1e-4)
            self.hook, self.extra = ad.on_step, ad.extra_loss
            self.forward = lambda b: ad.model(**b).loss
        else:
            import peft
            _, _, make = CONFIGS[name]
            cfg = make(peft, linear_targets(model))
            cfg.modules_to_save = ["classifier"]
            pm = peft.get_peft_model(model, cfg)
            if name.startswith("loraplus"):
                from peft.optimizers import create_loraplus_optimizer
                self.opt = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=1e-4, loraplus_lr_ratio=16)
            params = [p for p in pm.parameters() if p.requires_grad]
            if name.startswith("adalora"):
                self.hook = lambda s: pm.base_model.update_and_allocate(s)
            self.forward = lambda b: pm(**b).loss  # PEFT's AdaLoRA adds its orthogonal loss inside forward
        self.model = model
        if not hasattr(self, "opt"):
            self.opt = torch.optim.AdamW(params, lr=1e-4)
        self.step_no = 0

    @staticmethod
    def embed(model, b):
        e = model.bert.embeddings.word_embeddings(b["input_ids"]).detach().requires_grad_(True)
        return e

    def run(self, batch, autocast):
        self.step_no += 1
        with autocast():
            loss = self.forward(batch)
            extra = self.extra()
            if extra is not None:
                loss = loss + extra
        loss.backward()
        self.opt.step()
        self.hook(self.step_no)
        self.opt.zero_grad(set_to_none=True)


def saved_bytes(step, batch, autocast) -> int:
    seen = {}

    def pack(t):
        try:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step.run(batch, autocast)
    return sum(seen.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration per round")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--methods", nargs="*", default=list(CONFIGS))
    ap.add_argument("--no-peft", action="store_true")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall: the wall clock; cpu: this "
                    "process's CPU time, with --threads 1 the robust choice on a machine other jobs load")
    ap.add_argument("--out", default="results/speed")
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu counts every thread's CPU time (waiting threads too): use it with --threads 1")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    base = build(args)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 30522, (args.batch, args.seq), generator=g).to(dev),
             "labels": torch.randint(0, 2, (args.batch,), generator=g).to(dev)}

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16)
    steps = [Step("floor", "floor", base, args)]
    for name in args.methods:
        steps.append(Step(name, "peftzoo", base, args))
        if not args.no_peft:
            steps.append(Step(name, "peft", base, args))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    mem = {}
    for s in steps:  # warm-up, and saved-tensor bytes of one step
        s.run(batch, autocast)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        mem[(s.name, s.impl)] = {"saved_mb": saved_bytes(s, batch, autocast) / 2**20}
        if dev.type == "cuda":
            mem[(s.name, s.impl)]["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    times = {(s.name, s.impl): [] for s in steps}
    for r in range(args.rounds):
        order = steps if r % 2 == 0 else steps[::-1]
        for s in order:
            sync()
            t = clock()
            for _ in range(args.steps):
                s.run(batch, autocast)
            sync()
            times[(s.name, s.impl)].append((clock() - t) / args.steps)
    floor = statistics.median(times[("floor", "floor")])
    rows = []
    for name in args.methods:
        row = {"method": name}
        for impl in ("peftzoo", "peft"):
            ts = times.get((name, impl))
            if not ts:
                continue
            med = statistics.median(ts)
            row[impl] = {"ratio": med / floor, "min": min(ts) / floor, "max": max(ts) / floor, "step_ms": med * 1e3,
                         **mem[(name, impl)]}
        if "peft" in row:
            row["vs_peft"] = row["peftzoo"]["ratio"] / row["peft"]["ratio"]
        rows.append(row)
    devname = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu-{args.threads}threads"
    tag = f"{dev.type}-h{args.hidden}-l{args.layers}" + ("-bf16" if args.bf16 else "")
    lines = [f"# Step time / frozen-model floor: {tag}", "",
             f"Reproduce: `python benchmarks/speed.py --device {args.device} --hidden {args.hidden} --layers "
             f"{args.layers} --ffn {args.ffn} --seq {args.seq} --batch {args.batch} --threads {args.threads}"
             f"{' --bf16' if args.bf16 else ''} --rounds {args.rounds} --steps {args.steps}"
             + (" --methods " + " ".join(shlex.quote(m) for m in args.methods) if args.methods != list(CONFIGS) else "")
             + (" --no-peft" if args.no_peft else "") + (f" --clock {args.clock}" if args.clock != "wall" else "")
             + (f" --out {args.out}" if args.out != "results/speed" else "")
             + "`", "",
             f"Device {devname}; torch {torch.__version__}; BERT hidden {args.hidden}, {args.layers} layers, FFN "
             f"{args.ffn}, seq {args.seq}, batch {args.batch}; all-linear targets, classifier trained, AdamW; "
             f"{'process CPU time' if args.clock == 'cpu' else 'wall clock'}. "
             f"Floor (frozen forward + backward to the inputs): {floor * 1e3:.1f} ms. Median of {args.rounds} "
             f"interleaved rounds of {args.steps} steps (spread: min..max round). `saved` = MB autograd keeps "
             f"for backward in one step.", "",
             "| method | peftzoo ratio | PEFT ratio | peftzoo / PEFT | peftzoo saved MB | PEFT saved MB |"
             + (" peftzoo CUDA peak MB | PEFT CUDA peak MB |" if dev.type == "cuda" else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if dev.type == "cuda" else "")]
    for r in rows:
        z, p = r["peftzoo"], r.get("peft")
        fmt = lambda x: f"{x['ratio']:.2f} ({x['min']:.2f}..{x['max']:.2f})" if x else "—"  # noqa: E731
        line = (f"| {r['method']} | {fmt(z)} | {fmt(p)} | {r.get('vs_peft', float('nan')):.2f} | "
                f"{z['saved_mb']:.0f} | {p['saved_mb'] if p else float('nan'):.0f} |")
        if dev.type == "cuda":
            line += f" {z['cuda_peak_mb']:.0f} | {p['cuda_peak_mb'] if p else float('nan'):.0f} |"
        lines.append(line)
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps({"args": vars(args), "device": devname, "floor_s": floor,
                                                  "rows": rows, "platform": platform.platform(),
                                                  "times": {f"{k[0]}|{k[1]}": v for k, v in times.items()}},
                                                 indent=2))
    (out / f"{tag}.md").write_text(md)


if __name__ == "__main__":
    main()
