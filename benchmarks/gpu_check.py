"""One prepared GPU check of peftzoo, under 8 minutes on one GPU: run it through benchmarks/gpu_check.sh.

Parts, in priority order, each a child process with its own time cap inside one overall budget (--budget-s); a part
that fails, crashes or runs out of time is reported and the next one runs:

    env     torch / CUDA / driver / GPU, bf16 support, versions (PEFT present or not)
    pack    .model/ present (from benchmarks/pack_model.py), else packed here if the sources are
    model   the packed fp16 MiniLM: files against its manifest, loads as fp32, CPU forward against the pack's
            reference; on CUDA fp32 and bf16 forwards against it
    parity  every method on a tiny BERT: forward, backward, merge, unmerge, SGD step + on_step on CUDA against CPU
            (fp32 1e-4; bf16 autocast within max(5e-2, 2 x CPU bf16's own error)); attach-then-.to(cuda) too
    speed   benchmarks/speed.py --device cuda at h768, 12 layers, seq 256, batch 32, bf16: LoRA and DoRA (targets:
            LoRA <= 1.10, DoRA <= 1.20 of the frozen forward+backward floor), PEFT beside them
    memory  one DoRA step's CUDA peak above its start, peftzoo and PEFT each in a fresh process, fp32 and bf16
            (target: peftzoo <= 0.8 x PEFT)
    bench   a glue-protocol slice (peftzoo/presets/glue.json cut to SST-2 from the pack, 7 methods at the LoRA r=8
            count, 2 LRs, 1 seed, 2 epochs) through `peftzoo bench --device cuda`
    table   `peftzoo table` on that slice
    speed-all  speed.py for the other methods (after the rest: it only informs)

Without CUDA (and --device cuda, the default) the CUDA parts are skipped with the reason, the CPU-side ones run and
the exit status is 0. --device cpu is a dry run of every part on CPU at tiny sizes (its PASS/FAIL mean nothing).
Exit status 1 when a part failed, crashed or timed out. Writes --out (results/gpu/): gpu_check.json, gpu_check.md,
logs/<part>.log, speed/, memory/, bench/; --copy-to DIR also puts gpu_check.{json,md} and gpu_check.tar.gz there.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import gpu_report  # noqa: E402  (beside this file)

SPEED = dict(hidden=768, layers=12, ffn=3072, seq=256, batch=32)
TINY = dict(hidden=64, layers=2, ffn=128, seq=16, batch=4)
TARGETS = {"lora r=8": 1.10, "dora r=8": 1.20}  # step time / floor; DoRA memory: MEMORY_TARGET x PEFT's
MEMORY_TARGET = 0.8
SLICE_METHODS = ["full", "head", "lora", "dora", "vera", "adalora", "said"]
SUITE = "gpu-slice"


@dataclass
class Part:
    name: str
    cap_s: float  # this part's own time cap (the overall budget may cut it shorter)
    device: bool  # runs on the device under test (skipped without CUDA unless --device cpu)
    commands: object  # ctx -> list of argv lists, run one after the other within the cap
    judge: object = None  # (ctx, part result) -> None: reads the part's files, adds targets and info
    needs: tuple = ()  # parts that must have run first ("pack": must have succeeded)
    fail_rc: tuple = ()  # exit statuses that mean "ran, and found a problem" (fail) rather than a crash (error)
    hint: str = ""  # what to do when it fails, added to the reason


@dataclass
class Ctx:
    args: argparse.Namespace
    out: Path
    deadline: float
    py: str = sys.executable
    env: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)  # part name -> result dict
    targets: list = field(default_factory=list)
    cuda: bool | None = None
    no_cuda_reason: str = ""

    @property
    def dry(self) -> bool:
        return self.args.device == "cpu"

    @property
    def dev(self) -> str:
        return self.args.device if self.cuda or self.dry else "cpu"

    def child(self, part: str, *extra: str, result: str | None = None) -> list[str]:
        return [self.py, str(HERE / "gpu_parts.py"), part, "--result", str(self.out / f"{result or part}.json"), *extra]


# ---- the parts ------------------------------------------------------------------------------------------------------
def speed_cmd(ctx: Ctx, methods: list[str], out: str) -> list[str]:
    s = TINY if ctx.dry else SPEED
    cmd = [ctx.py, str(HERE / "speed.py"), "--device", ctx.dev, "--bf16", "--out", str(ctx.out / out),
           "--threads", str(min(8, os.cpu_count() or 1)), "--rounds", "1" if ctx.dry else "5",
           "--steps", "1" if ctx.dry else "3"] + (["--methods", *methods] if methods else [])
    for k, v in s.items():
        cmd += [f"--{k}", str(v)]
    return cmd + (["--no-peft"] if not peft_here(ctx) else [])


def peft_here(ctx: Ctx) -> bool:
    info = ctx.results.get("env", {}).get("info")
    if info is None:  # the env part was not run (--parts) or failed
        import importlib.util
        return importlib.util.find_spec("peft") is not None
    return bool(info.get("peft"))


def memory_cmds(ctx: Ctx) -> list[list[str]]:
    shape = [f"--{k}={v}" for k, v in (TINY if ctx.dry else SPEED).items()]
    impls = ["peftzoo", "peft"] if peft_here(ctx) else ["peftzoo"]
    return [ctx.child("memory", "--device", ctx.dev, "--impl", i, *shape, result=f"memory-{i}") for i in impls]


def slice_preset(ctx: Ctx) -> Path:
    """The glue preset (peftzoo/presets/glue.json) cut to a few minutes: SST-2 (the pack's 2,000 rows), one budget, 2 LRs, 1 seed."""
    p = json.loads((REPO / "peftzoo" / "presets" / "glue.json").read_text())  # the shipped preset (package data)
    p.update(suite=SUITE, tasks=["SST-2"], methods=SLICE_METHODS, seeds=[0], budgets=["lora:r=8"],
             method_budgets={}, epochs=2, max_train=None, max_eval=None, task_overrides={}, model=None,
             description="benchmarks/gpu_check.py: the glue preset's protocol on a slice (SST-2, 2,000 packed "
                         "training rows, all of dev), 7 methods at the LoRA r=8 count, 2 LRs, 1 seed, 2 epochs")
    p["protocol"] = {**p.get("protocol", {}), "sweep_seeds": 1, "lr_points": 2, "paper_settings": []}
    p["hparams"] = {**p.get("hparams", {}), "adalora": {"tinit": 10, "tfinal": 30, "deltaT": 5}}  # 112 steps
    if ctx.dry:
        p.update(methods=["head", "lora"], epochs=1, batch_size=16, max_len=32, max_train=64, max_eval=64)
        p["protocol"].update(lr_points=1, val_cap=32)
    path = ctx.out / f"{SUITE}.json"
    path.write_text(json.dumps(p, indent=1))
    return path


def bench_cmd(ctx: Ctx) -> list[list[str]]:
    pack = Path(ctx.args.pack)
    return [[ctx.py, "-m", "peftzoo", "bench", "--preset", str(slice_preset(ctx)), "--model", str(pack / "minilm"),
             "--data-dir", str(pack / "data"), "--results", str(ctx.out / "bench"), "--device", ctx.dev, "-q"]]


def pack_cmds(ctx: Ctx) -> list[list[str]]:
    if (Path(ctx.args.pack) / "manifest.json").is_file():
        return []  # packed before (the model part checks every file against the manifest)
    return [[ctx.py, str(HERE / "pack_model.py"), "--out", ctx.args.pack]]


PARTS = [
    Part("env", 30, False, lambda c: [c.child("env")], fail_rc=(1,)),
    Part("pack", 60, False, pack_cmds, hint="run `python benchmarks/pack_model.py` where the embedded model and the "
         "GLUE data are, then carry .model to this machine (README, 'GPU check')"),
    Part("model", 45, False, lambda c: [c.child("model", "--device", c.dev, "--pack", c.args.pack)], needs=("pack",),
         fail_rc=(1,)),
    Part("parity", 60, True, lambda c: [c.child("parity", "--device", c.dev)], fail_rc=(1,)),
    Part("speed", 100, True, lambda c: [speed_cmd(c, list(TARGETS), "speed")], gpu_report.judge_speed),
    Part("memory", 70, True, memory_cmds, gpu_report.judge_memory),
    Part("bench", 120, True, bench_cmd, needs=("pack",), fail_rc=(3,)),  # 3: some runs recorded as failed
    Part("table", 20, True, lambda c: [[c.py, "-m", "peftzoo", "table", "--suite", SUITE,
                                        "--results", str(c.out / "bench")]], gpu_report.judge_table, ("bench",)),
    Part("speed-all", 90, True, lambda c: [speed_cmd(c, [], "speed-all")]),  # [] = speed.py's every method
]


# ---- running them ---------------------------------------------------------------------------------------------------
def run_cmd(ctx: Ctx, cmd: list[str], log, timeout: float) -> tuple[int | None, float]:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=ctx.env, start_new_session=True)
    try:
        rc = p.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the child's own process group: it and whatever it started
        p.wait()
        rc = None
    return rc, time.monotonic() - t


def skip_reason(ctx: Ctx, part: Part) -> str | None:
    for n in part.needs:
        st = ctx.results.get(n, {}).get("status")
        if st in (None, "skipped") or (n == "pack" and st != "ok"):
            return f"needs part '{n}', which {'was not run' if st is None else 'is ' + st}"
    if part.device and not (ctx.cuda or ctx.dry):
        return "needs CUDA: not here (see the report's top)"
    if ctx.deadline - time.monotonic() < ctx.args.min_part_s:
        return f"no time left in the {ctx.args.budget_s:.0f} s budget (--budget-s)"
    return None


def run_part(ctx: Ctx, part: Part) -> dict:
    res = {"part": part.name, "cap_s": part.cap_s}
    why = skip_reason(ctx, part)
    if why:
        return {**res, "status": "skipped", "reason": why, "seconds": 0.0}
    cmds = part.commands(ctx)
    left = min(part.cap_s, ctx.deadline - time.monotonic())
    status, spent, logf = "ok", 0.0, ctx.out / "logs" / f"{part.name}.log"
    with open(logf, "w") as log:
        for cmd in cmds:
            rc, s = run_cmd(ctx, cmd, log, left - spent)
            spent += s
            if rc is None:
                status = "timeout"
                res["reason"] = f"killed after {spent:.0f} s (cap {left:.0f} s)"
                break
            if rc != 0:
                status = "fail" if rc in part.fail_rc else "error"
                res["reason"] = f"exit status {rc}: {tail(logf)}" + (f"; {part.hint}" if part.hint else "")
                break
    res.update(status=status, seconds=round(spent, 1), log=str(logf.relative_to(ctx.out)))
    child = ctx.out / f"{part.name}.json"
    if child.is_file() and part.name in ("env", "model", "parity"):  # gpu_parts.py's own result file
        res.update(json.loads(child.read_text()))
        failed = [c["check"] for c in res["checks"] if not c["ok"]]
        if failed:
            res["failed_checks"] = failed
    if part.judge:  # also after an error or a timeout: what did get written is read
        try:
            part.judge(ctx, res)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            if status in ("ok", "fail"):
                res.update(status="error", reason=f"reading its output: {type(e).__name__}: {e}")
    return res


def tail(path: Path, n: int = 3) -> str:
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    return " | ".join(lines[-n:])[-600:]


def decide_cuda(ctx: Ctx) -> None:
    info = ctx.results.get("env", {}).get("info")
    if info is None:  # the env part failed: ask torch here
        import torch
        info = {"cuda_available": torch.cuda.is_available(), "torch": torch.__version__,
                "torch_cuda": torch.version.cuda}
    ctx.cuda = bool(info["cuda_available"]) and ctx.args.device.startswith("cuda")
    if not ctx.cuda and not ctx.dry:
        ctx.no_cuda_reason = (f"no CUDA here (torch {info['torch']}, built for CUDA {info['torch_cuda'] or 'none'}, "
                              f"torch.cuda.is_available() is False): run this on a GPU machine (README, 'GPU check'), "
                              f"or pass --device cpu for a dry run of every part on CPU")
        print(f"[gpu_check] CUDA parts skipped: {ctx.no_cuda_reason}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="the device under test; cpu = a dry run at tiny sizes")
    ap.add_argument("--out", default=str(REPO / "results" / "gpu"), help="results folder (its contents replaced)")
    ap.add_argument("--pack", default=str(REPO / ".model"), help="the folder benchmarks/pack_model.py wrote")
    ap.add_argument("--budget-s", type=float, default=450, help="the whole check's time budget (8 min = 480 s)")
    ap.add_argument("--min-part-s", type=float, default=10, help="a part needs this much of the budget to start")
    ap.add_argument("--parts", nargs="*", default=[p.name for p in PARTS], help="run only these parts")
    ap.add_argument("--copy-to", default=None,
                    help="also copy the report and a tar.gz of --out here (the device's $OUT)")
    a = ap.parse_args(argv)
    unknown = set(a.parts) - {p.name for p in PARTS}
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; parts: {', '.join(p.name for p in PARTS)}")
    t0 = time.monotonic()
    ctx = Ctx(a, Path(a.out), t0 + a.budget_s)
    gpu_report.fresh_out(ctx.out)
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ctx.env = {**os.environ, "PYTHONPATH": path,
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONUNBUFFERED": "1"}
    for part in PARTS:
        if part.name not in a.parts:
            continue
        if part.device and ctx.cuda is None:
            decide_cuda(ctx)
        r = run_part(ctx, part)
        ctx.results[part.name] = r
        if part.name == "env" and ctx.cuda is None:
            decide_cuda(ctx)
        print(f"[gpu_check] {part.name}: {r['status']} ({r['seconds']:.0f} s)"
              + (f": {r['reason']}" if r.get("reason") else ""), flush=True)
    report = gpu_report.write(ctx, time.monotonic() - t0)
    print(report)
    if a.copy_to:
        dst = Path(a.copy_to)
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("gpu_check.json", "gpu_check.md"):
            (dst / f).write_bytes((ctx.out / f).read_bytes())
        with tarfile.open(dst / "gpu_check.tar.gz", "w:gz") as tar:
            tar.add(ctx.out, arcname=ctx.out.name)
    bad = [n for n, r in ctx.results.items() if r["status"] in ("fail", "error", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
