"""Training-step time of every method as a ratio to the frozen-model floor, peftzoo and PEFT side by side.

Floor: the frozen base model's forward + backward with gradients flowing to the input embeddings (and the
classifier trained, as in every configuration); a method that lengthens every sequence (prompt tuning's virtual
tokens, in both libraries) is divided by the floor on that longer sequence, so its ratio is what it costs beyond the
longer forward it cannot avoid (peftzoo / PEFT is the same either way). Each configuration runs `--steps` timed
steps (forward, backward, the method's own optimizer step: AdamW, or GaLore's projected Adam; the adapter's hook) per
round; rounds are interleaved so that drift hits all alike; we report the median over rounds and the spread (min..max of the round medians). Memory: bytes saved for backward in one step
(autograd's saved tensors, distinct storages), and on CUDA the peak allocated. Rows come from ``CONFIGS`` (a
registry method and, where Hugging Face PEFT has the method, PEFT's equivalent; "—" where it has none: BitFit,
Delta-LoRA, GaLore).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import peftzoo

FF = r".*output\.dense"  # IA3's feedforward layers (input scaled): BERT's attention and FFN output projections


@dataclass(frozen=True)
class Config:
    """One row: a peftzoo method (by its registry name) and, where PEFT has the method, PEFT's equivalent."""

    method: str  # the registry name peftzoo.attach takes; its optimizer is the adapter's own make_optimizer
    kwargs: dict  # the method's config fields
    peft: Callable | None = None  # (peft module, linear target names) -> PEFT config; None: PEFT has no such method
    peft_optimizer: Callable | None = None  # (peft model, lr) -> optimizer where PEFT's recipe has its own (LoRA+)
    peft_hook: Callable | None = None  # (peft model, step) after the optimizer step where PEFT's recipe has one
    note: str = ""  # what the ratio includes beyond forward, backward and AdamW, printed under the table
    tokens: int = 0  # tokens the method puts before every sequence (both libraries): its floor runs seq + tokens


def _loraplus_optimizer(pm, lr):
    from peft.optimizers import create_loraplus_optimizer
    return create_loraplus_optimizer(pm, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=16)


CONFIGS = {
    "lora r=8": Config("lora", dict(r=8, alpha=16), lambda p, t: p.LoraConfig(r=8, lora_alpha=16, target_modules=t)),
    "rslora r=8": Config("rslora", dict(r=8, alpha=16),
                         lambda p, t: p.LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=t)),
    "loraplus r=8": Config("loraplus", dict(r=8, alpha=16),
                           lambda p, t: p.LoraConfig(r=8, lora_alpha=16, target_modules=t),
                           peft_optimizer=_loraplus_optimizer),
    "dora r=8": Config("dora", dict(r=8, alpha=16),
                       lambda p, t: p.LoraConfig(r=8, lora_alpha=16, use_dora=True, target_modules=t)),
    "vera r=256": Config("vera", dict(r=256), lambda p, t: p.VeraConfig(r=256, target_modules=t)),
    "adalora 12->8": Config("adalora", dict(init_r=12, target_r=8, tinit=0, tfinal=0, deltaT=10),
                            lambda p, t: p.AdaLoraConfig(init_r=12, target_r=8, deltaT=10, total_step=10**6,
                                                         target_modules=t),
                            peft_hook=lambda pm, s: pm.base_model.update_and_allocate(s)),
    "ia3": Config("ia3", dict(feedforward=FF), lambda p, t: p.IA3Config(target_modules=t, feedforward_modules=FF)),
    "loha r=8": Config("loha", dict(r=8, alpha=8), lambda p, t: p.LoHaConfig(r=8, alpha=8, target_modules=t)),
    "lokr r=8": Config("lokr", dict(r=8, alpha=8), lambda p, t: p.LoKrConfig(r=8, alpha=8, target_modules=t)),
    "oft b=32": Config("oft", dict(oft_block_size=32), lambda p, t: p.OFTConfig(oft_block_size=32, target_modules=t)),
    "prompt n=20": Config("prompt", dict(num_virtual_tokens=20),
                          lambda p, t: p.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=20),
                          note="the 20 virtual tokens lengthen every sequence by 20 in both libraries, so this row's "
                               "floor is the frozen model on seq + 20 tokens (the same longer forward and backward)",
                          tokens=20),
    "bitfit": Config("bitfit", dict(layer_norm=True)),
    "deltalora r=8": Config("deltalora", dict(r=8, alpha=16, start_steps=0),
                            note="start_steps=0: W moves by λ·(α/r)·Δ(B A) after every timed step (the cost past "
                                 "the warm-up)"),
    "galore r=4": Config("galore", dict(r=4, update_proj_gap=500),
                         note="the step includes GaLore's projected-Adam optimizer step (GaloreAdamW, from the "
                              "adapter's make_optimizer); its SVD refresh, every update_proj_gap = 500 steps, ran in "
                              "the untimed first step, so the ratio leaves out ~1/500 of one SVD per layer per step"),
}


def build(args):
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                     intermediate_size=args.ffn, vocab_size=30522, max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def floor_name(tokens: int) -> str:
    return "floor" if tokens == 0 else f"floor+{tokens}"


def make_batch(args, tokens: int, dev):
    """A fixed batch of seq + tokens random ids (tokens = 0: the batch every method runs) and its labels."""
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 30522, (args.batch, args.seq + tokens), generator=g).to(dev),
            "labels": torch.randint(0, 2, (args.batch,), generator=g).to(dev)}


def linear_targets(model):
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names - {"classifier"})


class Step:
    """One configuration: a model, its optimizer and a step closure."""

    def __init__(self, name, impl, base, args, tokens=0):
        self.name, self.impl, self.tokens = name, impl, tokens  # tokens: a floor's extra sequence length
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
            c = CONFIGS[name]
            ad = peftzoo.attach(model, c.method, targets="all-linear", train=["classifier"], **c.kwargs)
            ad.set_total_steps(10**6)
            self.opt = ad.make_optimizer(1e-4)  # the method's own optimizer (GaLore: its projected Adam)
            self.hook, self.extra = ad.on_step, ad.extra_loss
            self.forward = lambda b: ad.model(**b).loss
        else:
            import peft
            c = CONFIGS[name]
            cfg = c.peft(peft, linear_targets(model))
            cfg.modules_to_save = ["classifier"]
            pm = peft.get_peft_model(model, cfg)
            if c.peft_optimizer is not None:
                self.opt = c.peft_optimizer(pm, 1e-4)
            params = [p for p in pm.parameters() if p.requires_grad]
            if c.peft_hook is not None:
                self.hook = lambda s: c.peft_hook(pm, s)
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
    floors = sorted({0} | {CONFIGS[m].tokens for m in args.methods})  # a floor per sequence length the rows run
    batches = {n: make_batch(args, n, dev) for n in floors}

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16)
    steps = [Step(floor_name(n), "floor", base, args, tokens=n) for n in floors]
    for name in args.methods:
        steps.append(Step(name, "peftzoo", base, args))
        if not args.no_peft and CONFIGS[name].peft is not None:
            steps.append(Step(name, "peft", base, args))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    mem = {}
    optim = {(s.name, s.impl): type(s.opt).__name__ for s in steps}
    for s in steps:  # warm-up, and saved-tensor bytes of one step
        batch = batches[s.tokens]
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
            batch = batches[s.tokens]
            for _ in range(args.steps):
                s.run(batch, autocast)
            sync()
            times[(s.name, s.impl)].append((clock() - t) / args.steps)
    floor_of = {n: statistics.median(times[(floor_name(n), "floor")]) for n in floors}
    floor = floor_of[0]
    rows = []
    for name in args.methods:
        row = {"method": name, **({"note": CONFIGS[name].note} if CONFIGS[name].note else {})}
        n = CONFIGS[name].tokens
        row["floor_seq"], row["floor_ms"] = args.seq + n, floor_of[n] * 1e3
        if n:
            row["note"] += f" ({floor_of[n] * 1e3:.1f} ms at seq {args.seq + n})"
        for impl in ("peftzoo", "peft"):
            ts = times.get((name, impl))
            if not ts:
                continue
            med = statistics.median(ts)
            f = floor_of[n]
            row[impl] = {"ratio": med / f, "min": min(ts) / f, "max": max(ts) / f, "step_ms": med * 1e3,
                         "optimizer": optim[(name, impl)], **mem[(name, impl)]}
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
             f"{args.ffn}, seq {args.seq}, batch {args.batch}; all-linear targets, classifier trained, each "
             f"method's own optimizer (AdamW unless said below); "
             f"{'process CPU time' if args.clock == 'cpu' else 'wall clock'}. "
             f"Floor (frozen forward + backward to the inputs): {floor * 1e3:.1f} ms at seq {args.seq} (rows "
             f"whose method lengthens the sequence: their own floor, see †). Median of {args.rounds} "
             f"interleaved rounds of {args.steps} steps (spread: min..max round). `saved` = MB autograd keeps "
             f"for backward in one step.", "",
             "| method | peftzoo ratio | PEFT ratio | peftzoo / PEFT | peftzoo saved MB | PEFT saved MB |"
             + (" peftzoo CUDA peak MB | PEFT CUDA peak MB |" if dev.type == "cuda" else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if dev.type == "cuda" else "")]
    dash = "—"  # PEFT has no such method (or --no-peft)
    for r in rows:
        z, p = r["peftzoo"], r.get("peft")
        fmt = lambda x: f"{x['ratio']:.2f} ({x['min']:.2f}..{x['max']:.2f})" if x else dash  # noqa: E731
        mb = lambda x, k="saved_mb": f"{x[k]:.0f}" if x else dash  # noqa: E731
        vs = f"{r['vs_peft']:.2f}" if "vs_peft" in r else dash
        line = f"| {r['method']}{' †' if r.get('note') else ''} | {fmt(z)} | {fmt(p)} | {vs} | {mb(z)} | {mb(p)} |"
        if dev.type == "cuda":
            line += f" {mb(z, 'cuda_peak_mb')} | {mb(p, 'cuda_peak_mb')} |"
        lines.append(line)
    notes = [f"- † {r['method']}: {r['note']}" for r in rows if r.get("note")]
    lines += ["", "Every step is forward, backward, the optimizer's step (AdamW unless said) and the adapter's hook; "
              f"{dash}: Hugging Face PEFT has no such method."] + ([""] + notes if notes else [])
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps({"args": vars(args), "device": devname, "floor_s": floor,
                                                  "floors_s": {str(args.seq + n): f for n, f in floor_of.items()},
                                                  "rows": rows, "platform": platform.platform(),
                                                  "times": {f"{k[0]}|{k[1]}": v for k, v in times.items()}},
                                                 indent=2))
    (out / f"{tag}.md").write_text(md)


if __name__ == "__main__":
    main()
