"""peftzoo command line: demo | methods | bench | table | d90 | analyze.

demo and methods live here; bench and table are registered by ``bench.cli``, d90 by ``intrinsic.cli``, analyze by
``analysis.cli`` (each module parses its own arguments and calls the library).

Exit status: 0 done (bench: every planned run ok); 2 bad input or setting (bench: also a planned cell that cannot
run, e.g. an unreachable budget: every one is listed), or an output that could not be written (nothing half-done is
left; earlier results are intact); 3 bench finished but some runs are recorded as failed (rerun with --retry-failed
after fixing the cause).
"""
from __future__ import annotations

import argparse
import os
import sys


def _demo(args):
    import torch

    import peftzoo
    from peftzoo.bench.models import default_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path = args.model or default_model()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tok = AutoTokenizer.from_pretrained(path)
    total = sum(p.numel() for p in model.parameters())
    # the method's own defaults (rank, subspace dimension, ...); per-layer methods adapt query and value
    ad = peftzoo.attach(model, args.method, targets=["query", "value"], train=["classifier"])
    s, cls = ad.summary(), type(ad)
    if cls.info.baseline:  # full, head: no adapter tensors, the model's own parameters train
        print(f"model: {path}\n{total:,} parameters; {args.method} is a baseline, no adapter: {cls.info.equation}; "
              f"it trains {ad.num_trainable():,} of the model's own parameters")
    else:
        print(f"model: {path}\n{total:,} parameters; {args.method} trains {ad.num_trainable():,} "
              f"({s['adapter']:,} adapter + {s['train_modules']:,} head)")
    batch = tok(["a gripping, beautiful film", "dull and far too long"] * 4, return_tensors="pt", padding=True)
    batch["labels"] = torch.tensor([1, 0] * 4)
    ad.set_total_steps(args.steps)
    opt = ad.make_optimizer(cls.info.default_lr)
    ad.model.train()
    for step in range(1, args.steps + 1):  # the adapter's hooks, as README's loop calls them
        loss = ad.model(**batch).loss
        extra = ad.extra_loss()
        (loss + extra if extra is not None else loss).backward()
        opt.step()
        ad.on_step(step)
        opt.zero_grad()
        print(f"step {step}: loss {loss.item():.4f}")
    ad.model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if cls.info.baseline or not cls.merges:
        why = "a baseline has no adapter" if cls.info.baseline else f"{args.method}'s update is no weight change"
        print(f"nothing to merge: {why}")
        return
    with torch.no_grad():
        before = ad.model(**inputs).logits
        ad.merge()
        after = ad.model(**inputs).logits
    print(f"merged: max |logits change| = {(before - after).abs().max().item():.2e}")


def method_lines(name: str, cls) -> list[str]:
    """What ``peftzoo methods`` says of one method: its equation, count, paper, then its benchmark policy and
    files (all from ``cls.info`` and ``cls.peft``)."""
    i = cls.info
    head = f"{name:10s} {'(baseline) ' if i.baseline else ''}{i.equation}   [{i.formula}]  {i.paper}".rstrip()
    knob = (f"budget knob {i.budget_knob}" if i.budget_knob else "a reference of every table" if i.baseline
            else "no budget knob (one point per target set)")
    grid = "LR grid " + ", ".join(f"{x:g}" for x in cls.lr_grid())
    paper = ["paper setting " + ", ".join(f"{k}={v}" for k, v in i.paper_hparams.items())] if i.paper_hparams else []
    peft = f"PEFT file {cls.peft.peft_type}" if cls.peft is not None else "no PEFT file (ad.save only)"
    return [head, " " * 11 + " · ".join([knob, grid, *paper, peft])]


def _methods(args):
    import dataclasses

    from peftzoo import adapters
    for name in sorted(adapters.REGISTRY):
        cls = adapters.REGISTRY[name]
        print("\n".join(method_lines(name, cls)))
        if args.verbose:
            for f in dataclasses.fields(cls.config_cls):
                print(f"    {f.name} = {f.default!r}")


def _with_defaults(p: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default, unless the help already states it or there is none to state."""
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                _with_defaults(sp)
        elif (a.option_strings and a.default is not None and a.default is not False and a.default != argparse.SUPPRESS
              and "default" not in (a.help or "")):
            a.help = f"{a.help or ''} (default: %(default)s)".strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftzoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="attach a method to the embedded MiniLM, train a few steps, merge")
    d.add_argument("--method", default="lora", help="a method or baseline (peftzoo methods lists them)")
    d.add_argument("--steps", type=int, default=5, help="training steps on the demo batch")
    d.add_argument("--model", default=None, help="transformers id or path (default: the embedded all-MiniLM-L6-v2)")
    d.set_defaults(fn=_demo)
    m = sub.add_parser("methods", help="list the registered methods")
    m.add_argument("--verbose", "-v", action="store_true", help="also every option of each method and its default")
    m.set_defaults(fn=_methods)
    from peftzoo.analysis.cli import register as register_analyze
    from peftzoo.bench.cli import register as register_bench
    from peftzoo.intrinsic.cli import register as register_d90
    for register in (register_bench, register_d90, register_analyze):  # each subcommand's module adds its own
        register(sub)
    _with_defaults(p)
    return p


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (ValueError, OSError, RuntimeError, TypeError) as e:
        print(f"peftzoo {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
