"""The in-process parts of benchmarks/gpu_check.py, each run by it as a child process with a time cap.

    python benchmarks/gpu_parts.py env|model|parity|memory --result FILE [--device cuda] [--pack .model] ...

Each part writes {"checks": [...], "info": {...}} to --result and exits 1 when a check failed. A check is
{"check", "value", "tol", "ok"}: value is a relative error (max |got - want| / max |want|, gradients by norm) unless
its name says otherwise. Only the public API is used (peftzoo.attach / save / load, transformers, PEFT).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

TOL = {"fp32": 1e-4, "bf16": 5e-2}  # CUDA vs CPU: summation order (fp32, TF32 off); bf16 autocast's 8-bit mantissa
TARGETS = ["query", "value", "intermediate.dense"]  # layers of two shapes (32->32, 32->64), as in tests/conftest.py


class Checks(list):
    def add(self, name: str, value: float, tol: float, ok: bool | None = None) -> None:
        self.append({"check": name, "value": value, "tol": tol, "ok": bool(value <= tol if ok is None else ok)})


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


def rel_norm(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def autocast(device: str, bf16: bool):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else nullcontext()


# ---- env -----------------------------------------------------------------------------------------------------------
def version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v
    try:
        return v(name)
    except PackageNotFoundError:
        return None


def nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    q = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        r = subprocess.run(q, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    return r.stdout.strip() or r.stderr.strip()


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                           cwd=Path(__file__).resolve().parent)
    except OSError:
        return None
    return r.stdout.strip() or None


def part_env(a, checks: Checks) -> dict:
    cuda = torch.cuda.is_available()
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cuda_available": cuda, "cuda_devices": torch.cuda.device_count() if cuda else 0,
            "nvidia_smi": nvidia_smi(), "commit": git_commit(),
            **{k: version(k) for k in ("transformers", "peft", "safetensors", "tokenizers", "numpy", "scipy",
                                       "scikit-learn", "datasets", "matplotlib")},
            "cpu_bf16_matmul": _cpu_bf16()}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    gpu_memory_gib=round(p.total_memory / 2**30, 1), bf16_supported=torch.cuda.is_bf16_supported(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        x = torch.randn(256, 256, device="cuda")
        checks.add("cuda matmul vs cpu", rel(x @ x, x.cpu() @ x.cpu()), TOL["fp32"])
    if info["peft"] is None:
        info["note"] = "PEFT is not installed: speed.py runs with --no-peft and the DoRA memory target is not judged"
    elif info["peft"] != "0.21.2":
        info["note"] = f"PEFT {info['peft']} here; the tests pin 0.21.2 (its numbers may differ)"
    return info


def _cpu_bf16() -> bool:
    try:
        x = torch.ones(8, 8, dtype=torch.bfloat16)
        return bool(torch.equal((x @ x).float(), torch.full((8, 8), 8.0)))
    except RuntimeError:
        return False


# ---- model: the packed fp16 MiniLM ---------------------------------------------------------------------------------
def part_model(a, checks: Checks) -> dict:
    from pack_model import SENTENCES, file_table
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    pack = Path(a.pack)
    man = json.loads((pack / "manifest.json").read_text())
    now = file_table(pack)
    bad = sorted(k for k in set(man["files"]) | set(now) if man["files"].get(k) != now.get(k))
    checks.add("pack files match manifest.json (count of differing files)", len(bad), 0)
    path = pack / "minilm"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    checks.add(f"weights load as float32 (stored fp16; loaded {dtypes})", 0, 0, ok=dtypes == ["torch.float32"])
    cls = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)  # what `peftzoo bench` loads
    checks.add("classifier model loads as float32", 0, 0, ok=cls.dtype == torch.float32)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    ref = torch.tensor(man["reference"]["cls_cpu_fp32"])
    with torch.no_grad():
        checks.add("cpu forward vs the pack's reference", rel(model(**batch).last_hidden_state[:, 0], ref), TOL["fp32"])
        model.to(a.device)
        on = {k: v.to(a.device) for k, v in batch.items()}
        for prec in ("fp32", "bf16") if a.device != "cpu" else ("bf16",):  # a CPU dry run: its bf16 path
            with autocast(a.device, prec == "bf16"):
                out = model(**on).last_hidden_state[:, 0]
            checks.add(f"{a.device} {prec} forward vs cpu", rel(out, ref), TOL[prec])
    return {"bad_files": bad, "fp16_storage_max_abs_change": man["reference"]["fp16_storage_max_abs_change"],
            "data": man["data"], "source": man["model_source"]}


# ---- parity: every method on a tiny BERT, device against CPU -------------------------------------------------------
def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
                     max_position_embeddings=64, num_labels=3, initializer_range=0.2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg).eval()


def train_step(ad, ids, labels, device, bf16=False) -> dict:
    """Forward, backward (+ the adapter's extra loss): logits, loss and every gradient, on CPU, by parameter name."""
    model = ad.model
    model.zero_grad(set_to_none=True)
    with autocast(device, bf16):
        out = model(input_ids=ids, labels=labels)
        loss = out.loss
        extra = ad.extra_loss()
        loss = loss if extra is None else loss + extra
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return {"logits": out.logits.detach().float().cpu(), "grads": grads}


def lifecycle(ad, ids, labels, device) -> dict:
    """fp32: forward/backward, merge, unmerge, one SGD step + on_step; the outputs of each stage, on CPU."""
    r = train_step(ad, ids, labels, device)
    with torch.no_grad():
        ad.merge()
        r["merged"] = ad.model(input_ids=ids).logits.float().cpu()
        ad.unmerge()
        r["unmerged"] = ad.model(input_ids=ids).logits.float().cpu()
        for p in ad.trainable_parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.1)
    ad.on_step(1)
    with torch.no_grad():
        r["stepped"] = ad.model(input_ids=ids).logits.float().cpu()
    return r


def worst_grad(got: dict, want: dict) -> float:
    return max((rel_norm(got["grads"][n], want["grads"][n]) for n in got["grads"] if n in want["grads"]), default=0.0)


def compare(checks: Checks, tag: str, got: dict, want: dict, tol: float, like: dict | None = None) -> None:
    """got against want; with ``like`` (CPU's bf16 run), the tolerance is max(tol, 2 x like's own error)."""
    loose = (lambda e: max(tol, 2 * e)) if like else (lambda e: tol)
    for k in ("logits", "merged", "unmerged", "stepped"):
        if k in got:
            checks.add(f"{tag} {k}", rel(got[k], want[k]), loose(rel(like[k], want[k]) if like else 0))
    names = set(got["grads"]) ^ set(want["grads"])
    checks.add(f"{tag} tensors with a gradient differ (count)", len(names), 0)
    checks.add(f"{tag} gradients (worst tensor, by norm)", worst_grad(got, want),
               loose(worst_grad(like, want) if like else 0))


def parity_one(method: str, device: str, checks: Checks, tmp: Path) -> None:
    import peftzoo
    g = torch.Generator().manual_seed(1)
    ids, labels = torch.randint(0, 100, (4, 12), generator=g), torch.randint(0, 3, (4,), generator=g)
    kw = {"total_steps": 10} if method == "adalora" else {}
    model = tiny_bert()
    with torch.no_grad():
        base = model(input_ids=ids).logits
    ad = peftzoo.attach(model, method, targets=TARGETS, train=["classifier"], seed=0, **kw)
    with torch.no_grad():  # random adapter tensors, so that outputs and gradients depend on every one of them
        for p in ad.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    ad.save(tmp / method)
    want = lifecycle(ad, ids, labels, "cpu")
    checks.add(f"{method}: the adapter moves the logits by (at least)", rel(want["logits"], base), 1e-3,
               ok=rel(want["logits"], base) >= 1e-3)
    on = ids.to(device), labels.to(device)
    dev = peftzoo.load(tiny_bert().to(device), tmp / method)  # attached on a model already on the device
    compare(checks, f"{method} {device} fp32 (loaded there):", lifecycle(dev, *on, device), want, TOL["fp32"])
    # bf16: as close to fp32 as CPU's own bf16 autocast gets (x2), or within TOL["bf16"]
    cpu_bf = train_step(peftzoo.load(tiny_bert(), tmp / method), ids, labels, "cpu", bf16=True)
    got = train_step(peftzoo.load(tiny_bert().to(device), tmp / method), *on, device, bf16=True)
    compare(checks, f"{method} {device} bf16 autocast:", got, want, TOL["bf16"], like=cpu_bf)
    moved = peftzoo.load(tiny_bert(), tmp / method)  # attached on CPU, then the model moved
    moved.model.to(device)
    with torch.no_grad():
        checks.add(f"{method} {device} fp32 (attached on cpu, model moved): logits",
                   rel(moved.model(input_ids=on[0]).logits, want["logits"]), TOL["fp32"])


def part_parity(a, checks: Checks) -> dict:
    import peftzoo
    errors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.methods or peftzoo.methods():
            try:
                parity_one(m, a.device, checks, Path(tmp))
            except Exception as e:  # one method's crash is its own failed check; the others still run
                errors[m] = f"{type(e).__name__}: {e}"
                checks.add(f"{m} {a.device}: raised {type(e).__name__}: {str(e)[:300]}", 1, 0, ok=False)
    return {"errors": errors, "tolerances": TOL}


# ---- memory: one DoRA step, peftzoo and PEFT ------------------------------------------------------------------------
def bert(hidden: int, layers: int, ffn: int):
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                     intermediate_size=ffn, vocab_size=30522, max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def dora_step(impl: str, a, bf16: bool):
    """(step closure, trainable count) for DoRA r=8 on every linear layer but the classifier, which is trained."""
    model = bert(a.hidden, a.layers, a.ffn).to(a.device)
    if impl == "peftzoo":
        import peftzoo
        ad = peftzoo.attach(model, "dora", targets="all-linear", r=8, alpha=16, train=["classifier"])
        call, params = ad.model, ad.trainable_parameters()
    else:
        import peft
        names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                       - {"classifier"})
        call = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, use_dora=True, target_modules=names,
                                                          modules_to_save=["classifier"]))
        params = [p for p in call.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    b = {"input_ids": torch.randint(1000, 20000, (a.batch, a.seq), generator=g).to(a.device),
         "labels": torch.randint(0, 2, (a.batch,), generator=g).to(a.device)}

    def step():
        with autocast(a.device, bf16):
            loss = call(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, sum(p.numel() for p in params)


def saved_mb(step) -> float:
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 2**20


def part_memory(a, checks: Checks) -> dict:
    """One implementation (a.impl) in this fresh process, fp32 then bf16: the step's peak above its start."""
    cuda = torch.device(a.device).type == "cuda"
    out = {}
    for prec in ("fp32", "bf16"):
        step, n = dora_step(a.impl, a, prec == "bf16")
        step()  # warm-up: AdamW state allocated, kernels chosen
        r = {"trainable": n, "saved_for_backward_mb": saved_mb(step)}
        if cuda:
            torch.cuda.synchronize()
            start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            r["step_peak_above_start_mb"] = (torch.cuda.max_memory_allocated() - start) / 2**20
        out[prec] = r
        del step
        if cuda:
            torch.cuda.empty_cache()
    return {"impl": a.impl, "shape": vars(a) | {"result": None}, "by_precision": out}


PARTS = {"env": part_env, "model": part_model, "parity": part_parity, "memory": part_memory}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--result", required=True, help="JSON file to write")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pack", default=".model")
    ap.add_argument("--methods", nargs="*", help="parity: these methods (default: every registered one)")
    ap.add_argument("--impl", default="peftzoo", choices=["peftzoo", "peft"], help="memory: which implementation")
    for k, v in (("hidden", 768), ("layers", 12), ("ffn", 3072), ("seq", 256), ("batch", 32)):
        ap.add_argument(f"--{k}", type=int, default=v, help="memory: model and batch shape")
    a = ap.parse_args(argv)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    checks = Checks()
    info = PARTS[a.part](a, checks)
    Path(a.result).write_text(json.dumps({"checks": checks, "info": info}, indent=1, default=str))
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # pack_model, beside this file
    sys.exit(main())
