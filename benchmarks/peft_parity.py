"""How close every method with a PEFT 0.21.2 counterpart is to PEFT, in numbers (issue 24's write-up).

The reference tests (tests/test_peft_parity.py, test_oft.py, test_prompt.py, ...) assert closeness at 1e-5; this
prints the differences themselves. Per case, on the tests' tiny BERT (tests/conftest.py, float32): attach ours, move
every adapter tensor off its init (``randomize``: trained-like, not the zero init), write our PEFT file, load it with
``PeftModel.from_pretrained(..., is_trainable=True)`` on a fresh base, and measure

    logits   max |Δ| of the logits on one batch
    grad     max |Δ| of d(cross-entropy)/dθ over every adapter tensor, paired through the file's keys
    merged   max |Δ| of each adapted layer's weight after ``merge()`` / PEFT's ``merge_adapter()``
    count    our trainable count vs PEFT's ``get_peft_model`` on the same config (inference_mode off)

The step ratio (peftzoo / PEFT step time) is not timed here (this machine is shared): it is read from the speed
run named in STEP_SOURCE, for the cases that run that method's timed configuration.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/peft_parity.py --out results/parity
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TARGETS, randomize, tiny_bert  # noqa: E402  (the reference tests' model and init)

import peftzoo  # noqa: E402
from peftzoo.io import codec  # noqa: E402

STEP_SOURCE = "results/speed/quiet-s4/cpu-h256-l4.json"  # speed.py on a quiet machine, all-linear, 2 threads
COMMAND = "PYTHONPATH=$PWD HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/peft_parity.py --out results/parity"


@dataclass
class Case:
    """One row: a method and its options, as the reference tests run it."""
    name: str  # the row's label
    method: str  # peftzoo registry name
    kw: dict = field(default_factory=dict)  # the method's options (attach keywords)
    targets: list = field(default_factory=lambda: list(TARGETS))  # two layer shapes, as the reference tests use
    std: float = 0.3  # the randomize() spread; OFT's tests use 0.1 (larger entries leave the Cayley series' range)
    timed: bool = False  # True: this is the method's row in STEP_SOURCE (its step ratio applies)
    ref: str = "test_peft_parity, test_matrix"  # the reference tests (tests/*.py) that assert this case at 1e-5


_LORA = "test_peft_parity, test_peft_files, test_matrix"
_LYCO = "test_ia3_loha_lokr, test_peft_parity, test_matrix"
_OFT = "test_oft, test_peft_parity, test_matrix"
_MLP = TARGETS + ["output.dense"]  # OFT's tests add the 64->32 layer (a block count that differs from d_out's)
CASES = [
    Case("lora r=4", "lora", dict(r=4, alpha=8), timed=True, ref=_LORA),
    Case("rslora r=4", "rslora", dict(r=4, alpha=8), timed=True, ref=_LORA),
    Case("loraplus r=4", "loraplus", dict(r=4, alpha=8), timed=True, ref=_LORA),
    Case("dora r=4", "dora", dict(r=4, alpha=8), timed=True, ref=_LORA),
    Case("lora pissa r=4", "lora", dict(r=4, alpha=8, init_lora_weights="pissa"), std=0.1, ref="test_lora_init"),
    Case("lora olora r=4", "lora", dict(r=4, alpha=8, init_lora_weights="olora"), std=0.1, ref="test_lora_init"),
    Case("dora pissa r=4", "dora", dict(r=4, alpha=8, init_lora_weights="pissa"), std=0.1, ref="test_lora_init"),
    Case("vera r=16", "vera", dict(r=16), timed=True),
    Case("adalora 4->2", "adalora", dict(init_r=4, target_r=2, total_steps=10), timed=True),
    Case("ia3", "ia3", {}, timed=True, ref=_LYCO),
    Case("loha r=4", "loha", dict(r=4, alpha=6), timed=True, ref=_LYCO),
    Case("lokr r=2", "lokr", dict(r=2, alpha=5), timed=True, ref=_LYCO),
    Case("oft b=8", "oft", dict(oft_block_size=8), _MLP, std=0.1, timed=True, ref=_OFT),
    Case("oft b=8 coft eps=1", "oft", dict(oft_block_size=8, coft=True, eps=1.0), _MLP, std=0.1, ref="test_oft"),
    Case("oft b=8 on nn.Embedding", "oft", dict(oft_block_size=8), ["word_embeddings", "query"], std=0.1,
         ref="test_oft, test_matrix"),
    Case("prompt n=4", "prompt", dict(num_virtual_tokens=4), None, timed=True, ref="test_prompt, test_peft_parity"),
]


def batch() -> dict:
    """The reference tests' ``ids`` fixture (tests/conftest.py), as keywords."""
    return {"input_ids": torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(1))}


def _pairs(keys: dict, params) -> dict:
    """file key -> the one parameter whose value the file writes under that key (the file may hold the parameter
    itself or a copy of it: AdaLoRA's factors, a prompt's embedding); keys with no such single parameter are left
    out (and the row's 'tensors compared' says so)."""
    params = [p for p in params]
    out = {}
    for k, v in keys.items():
        same = [p for p in params if p.shape == v.shape and torch.equal(p.detach(), v.detach())]
        if len(same) == 1:
            out[k] = same[0]
    return out


def _max(diffs) -> float | None:
    diffs = list(diffs)
    return max(diffs) if diffs else None


def measure(case: Case, perturb: float = 0.0) -> dict:
    """The row for ``case``. ``perturb`` > 0 adds that much to every entry of PEFT's loaded adapter tensors
    (deliberately different weights: the measure must then report a large difference)."""
    import peft
    from peft.utils import get_peft_model_state_dict
    model = tiny_bert(0)
    ad = peftzoo.attach(model, case.method, targets=case.targets, train=["classifier"], **case.kw)
    x, labels = batch(), torch.tensor([0, 1, 2])
    with torch.no_grad():  # a trained-like head (PEFT's modules_to_save) so that logits are O(1), not O(0.01)
        head = ad.train_modules["classifier"].weight
        head.add_(torch.randn(head.shape, generator=torch.Generator().manual_seed(5)) * 0.3)
        at_init = ad.model(**x).logits
    randomize(ad, std=case.std)
    with tempfile.TemporaryDirectory() as tmp:
        ad.save_peft(tmp)
        cfg = peft.PeftConfig.from_pretrained(tmp)  # PEFT refuses is_trainable for prompt learning (frozen load)
        pm = peft.PeftModel.from_pretrained(tiny_bert(0), tmp, is_trainable=not cfg.is_prompt_learning).eval()
    cfg.inference_mode = False
    n_peft = sum(p.numel() for p in peft.get_peft_model(tiny_bert(0), cfg).parameters() if p.requires_grad)
    ours_keys = codec(ad).state(ad)
    mine = _pairs(ours_keys, ad.adapter_parameters())
    theirs = _pairs({k: v for k, v in get_peft_model_state_dict(pm).items() if k in ours_keys},
                    [p for p in pm.parameters()])
    keys = [k for k in ours_keys if k in mine and k in theirs]
    for k in keys:
        theirs[k].requires_grad_(True)  # PEFT loads a prompt frozen even with is_trainable (tests/test_prompt.py)
    if perturb:
        with torch.no_grad():
            for k in keys:
                theirs[k].add_(perturb)
    out, ref = ad.model(**x).logits, pm(**x).logits
    F.cross_entropy(out, labels).backward()  # by hand: PEFT's AdaLoRA would add its orthogonal term to .loss
    F.cross_entropy(ref, labels).backward()
    row = {"case": case.name, "method": case.method, "ref": case.ref, "options": {k: v for k, v in case.kw.items()},
           "targets": case.targets, "tensors": len(ad.adapter_parameters()), "tensors_compared": len(keys),
           "logits": (out - ref).abs().max().item(),
           "adapter_effect": (out - at_init).abs().max().item(),
           "grad": _max((mine[k].grad - theirs[k].grad).abs().max().item() for k in keys),
           "grad_scale": _max(mine[k].grad.abs().max().item() for k in keys),
           "count_ours": ad.num_trainable(), "count_peft": n_peft}
    row["counts_equal"] = row["count_ours"] == row["count_peft"]
    row["merged"] = None
    if ad.layers:  # a whole-model method (prompt tuning) has no weight to merge
        with torch.no_grad():
            ad.merge()
            pm.merge_adapter()
            row["merged"] = max((layer.base.weight - pm.get_submodule("base_model.model." + n).base_layer.weight)
                                .abs().max().item() for n, layer in ad.layers.items())
    return row


def step_ratios(path: Path = ROOT / STEP_SOURCE) -> dict:
    """method -> peftzoo / PEFT step time in that speed run (its rows are named '<method> <config>')."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {r["method"].split()[0]: (r["vs_peft"], r["method"]) for r in rows if r.get("vs_peft") is not None}


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.1e}"


def write(rows: list[dict], out: Path) -> None:
    import peft
    out.mkdir(parents=True, exist_ok=True)
    ratios = step_ratios()
    for r in rows:
        timed = next(c.timed for c in CASES if c.name == r["case"])
        hit = ratios.get(r["method"]) if timed else None
        r["step_ratio"], r["step_config"] = (hit[0], hit[1]) if hit else (None, None)
    meta = {"command": COMMAND, "torch": torch.__version__, "peft": peft.__version__, "step_source": STEP_SOURCE,
            "model": "tests/conftest.py tiny_bert (BERT hidden 32, 2 layers, float32), batch 3 x 9"}
    (out / "peft_parity.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# peftzoo vs Hugging Face PEFT: the same adapter weights, measured", "",
        f"Reproduce: `{COMMAND}`", "",
        f"torch {torch.__version__}, peft {peft.__version__}; {meta['model']}. Each row: our adapter with every "
        "tensor moved off its init, written as a PEFT file and loaded by `PeftModel.from_pretrained`. logits, grad "
        "(d cross-entropy over every adapter tensor; in brackets the largest |gradient|, for scale), merged (each "
        "adapted weight after merge): max |peftzoo − PEFT|. tensors: adapter tensors compared / ours. effect: "
        "max |logits − logits at the adapter's init| (what the weights compared change). step ratio: peftzoo / PEFT "
        "step "
        f"time from `{STEP_SOURCE}` (speed.py, BERT h256 L4, all-linear) for the method's timed configuration.", "",
        "| case | reference (tests/) | logits | grad (largest g) | merged | tensors | trainable ours / PEFT | effect | "
        "step ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        step = f"{r['step_ratio']:.2f} ({r['step_config']})" if r["step_ratio"] is not None else "—"
        counts = f"{r['count_ours']} / {r['count_peft']}" + ("" if r["counts_equal"] else " **differ**")
        grad = f"{_fmt(r['grad'])} ({_fmt(r['grad_scale'])})"
        lines.append(f"| {r['case']} | {r['ref']} | {_fmt(r['logits'])} | {grad} | {_fmt(r['merged'])} | "
                     f"{r['tensors_compared']}/{r['tensors']} | {counts} | "
                     f"{_fmt(r['adapter_effect'])} | {step} |")
    worst = {k: _max(r[k] for r in rows if r[k] is not None) for k in ("logits", "grad", "merged")}
    lines += ["", "Worst over all rows: " + ", ".join(f"{k} {_fmt(v)}" for k, v in worst.items()) +
              f"; trainable counts equal in {sum(r['counts_equal'] for r in rows)}/{len(rows)} rows."]
    (out / "peft_parity.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "parity")
    ap.add_argument("--cases", nargs="*", help="case names to run (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # PEFT's and transformers' notes on tiny configs
    rows = [measure(c) for c in CASES if not args.cases or c.name in args.cases]
    write(rows, args.out)
    print((args.out / "peft_parity.md").read_text())


if __name__ == "__main__":
    main()
