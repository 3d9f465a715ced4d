"""benchmarks/gpu_check.py's reading of its parts' outputs (targets) and its report (gpu_check.json, gpu_check.md)."""
from __future__ import annotations

import datetime
import json
import shutil
import sys
from pathlib import Path

MAX_LISTED = 25  # failed checks listed in the md (all of them are in the JSON)


def fresh_out(out: Path) -> None:
    """An empty results folder: a report never mixes this run's files with an earlier one's. Only an empty folder or
    an earlier check's output is replaced."""
    if out.exists() and any(out.iterdir()) and not (out / "gpu_check.json").is_file() and not (out / "logs").is_dir():
        raise SystemExit(f"gpu_check.py: error: --out {out} holds files that are not an earlier GPU check's "
                         f"(no gpu_check.json, no logs/): refusing to replace it; pass an empty or new folder")
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)


def target(ctx, name: str, value: float | None, limit: float, note: str = "") -> None:
    ok = None if ctx.dry or value is None else value <= limit
    ctx.targets.append({"target": name, "value": value, "limit": limit, "pass": ok, "note": note})


def speed_json(folder: Path) -> dict:
    found = sorted(folder.glob("*.json"))
    if len(found) != 1:
        raise ValueError(f"expected one JSON from speed.py in {folder}, found {[f.name for f in found]}")
    return json.loads(found[0].read_text())


def judge_speed(ctx, res: dict) -> None:
    from gpu_check import SPEED, TARGETS, TINY
    d = speed_json(ctx.out / res["part"])
    rows = {r["method"]: r for r in d["rows"]}
    shape = "h{hidden} L{layers}, seq {seq}, batch {batch}".format(**(TINY if ctx.dry else SPEED))
    for name, limit in TARGETS.items():
        r = rows.get(name)
        if r is None:
            raise KeyError(f"speed.py wrote no row {name!r} (rows: {sorted(rows)}); update TARGETS in gpu_check.py")
        peft = r.get("peft", {}).get("ratio")
        target(ctx, f"{name.split()[0]} step time / frozen floor ({shape}, bf16)", r["peftzoo"]["ratio"], limit,
               f"PEFT {peft:.2f}" if peft else "PEFT not run")
    res["info"] = {"device": d.get("device"), "floor_ms": d["floor_s"] * 1e3, "rows": d["rows"]}


def judge_memory(ctx, res: dict) -> None:
    from gpu_check import MEMORY_TARGET
    got = {}
    for impl in ("peftzoo", "peft"):
        f = ctx.out / f"memory-{impl}.json"
        if f.is_file():
            got[impl] = json.loads(f.read_text())["info"]["by_precision"]
    res["info"] = got
    key = "step_peak_above_start_mb" if not ctx.dry else "saved_for_backward_mb"
    for prec, mine in got["peftzoo"].items():
        theirs = got.get("peft", {}).get(prec)
        if theirs is None:
            target(ctx, f"DoRA step memory / PEFT's ({prec})", None, MEMORY_TARGET,
                   "no PEFT number: PEFT is not installed, or its run failed (logs/memory.log)")
            continue
        note = (f"{mine[key]:.1f} vs {theirs[key]:.1f} MB; saved for backward "
                f"{mine['saved_for_backward_mb']:.1f} vs {theirs['saved_for_backward_mb']:.1f} MB")
        if mine["trainable"] != theirs["trainable"]:
            note += f"; trainable counts differ ({mine['trainable']:,} vs {theirs['trainable']:,}): other layers"
        target(ctx, f"DoRA {'CUDA step peak above start' if not ctx.dry else 'saved for backward'} / PEFT's ({prec})",
               mine[key] / theirs[key], MEMORY_TARGET, note)


def judge_table(ctx, res: dict) -> None:
    from gpu_check import SUITE
    md = ctx.out / "bench" / SUITE / "leaderboard.md"
    res["info"] = {"leaderboard": str(md.relative_to(ctx.out)), "lines": md.read_text().splitlines()[:40]}


# ---- the report -----------------------------------------------------------------------------------------------------
def env_lines(info: dict) -> list[str]:
    keys = ("gpu", "capability", "gpu_memory_gib", "bf16_supported", "nvidia_smi", "torch", "torch_cuda", "cudnn",
            "transformers", "peft", "safetensors", "tokenizers", "python", "cpus", "cpu_bf16_matmul", "commit", "note")
    return [", ".join(f"{k} {info[k]}" for k in keys if info.get(k) is not None)]


def parity_table(res: dict) -> list[str]:
    """Per method: the worst fp32 and bf16 errors (relative) and its failed checks."""
    rows = {}
    for c in res.get("checks", []):
        m = c["check"].split()[0].rstrip(":")
        r = rows.setdefault(m, {"fp32": 0.0, "bf16": 0.0, "bad": 0, "n": 0})
        r["n"] += 1
        r["bad"] += not c["ok"]
        for prec in ("fp32", "bf16"):
            if f" {prec} " in c["check"] and "count" not in c["check"]:
                r[prec] = max(r[prec], c["value"])
    out = ["| method | worst fp32 error | worst bf16 error | checks failed |", "|---|---|---|---|"]
    out += [f"| {m} | {r['fp32']:.1e} | {r['bf16']:.1e} | {r['bad']} of {r['n']} |" for m, r in rows.items()]
    return out


def part_rows(ctx) -> list[str]:
    out = ["| part | status | seconds (cap) | note |", "|---|---|---|---|"]
    for n, r in ctx.results.items():
        note = r.get("reason", "")
        if r.get("failed_checks"):
            note = f"{len(r['failed_checks'])} failed checks; " + note
        out.append(f"| {n} | {r['status']} | {r['seconds']:.0f} ({r['cap_s']:.0f}) | {note.replace('|', '/')} |")
    return out


def target_lines(ctx) -> list[str]:
    out = []
    for t in ctx.targets:
        word = {True: "PASS", False: "FAIL", None: "DRY " if ctx.dry else "N/A "}[t["pass"]]
        v = "—" if t["value"] is None else f"{t['value']:.2f}"
        out.append(f"- {word} {t['target']}: {v} (target <= {t['limit']:.2f}){'; ' + t['note'] if t['note'] else ''}")
    return out or ["- none measured (see Parts)"]


def write(ctx, total_s: float) -> str:
    r, a = ctx.results, ctx.args
    env = r.get("env", {}).get("info", {})
    cmd = " ".join(["bash benchmarks/gpu_check.sh", *sys.argv[1:]])
    dry = " (DRY RUN at tiny sizes: its numbers mean nothing)" if ctx.dry else ""
    lines = [f"# GPU check: {env.get('gpu') or 'no GPU'}, {datetime.date.today()}", "",
             f"`{cmd}`: {total_s:.0f} s of the {a.budget_s:.0f} s budget, device {ctx.dev}{dry}", ""]
    if ctx.no_cuda_reason:
        lines += [f"CUDA parts skipped: {ctx.no_cuda_reason}.", ""]
    lines += ["## Targets", "", *target_lines(ctx), "", "## Parts", "", *part_rows(ctx), "",
              "## Environment", "", *env_lines(env), ""]
    failed = [c for p in r.values() for c in p.get("failed_checks", [])]
    if failed:
        lines += ["## Failed checks", "", *[f"- {c}" for c in failed[:MAX_LISTED]],
                  *([f"- ... {len(failed) - MAX_LISTED} more in gpu_check.json"] if len(failed) > MAX_LISTED else []),
                  ""]
    if "checks" in r.get("parity", {}):
        lines += ["## Parity: every method, device against CPU", "", *parity_table(r["parity"]), ""]
    for name in ("speed", "speed-all"):
        md = sorted((ctx.out / name).glob("*.md")) if (ctx.out / name).is_dir() else []
        if md:
            lines += [f"## {name} (benchmarks/speed.py)", "", *md[0].read_text().splitlines()[2:], ""]
    if r.get("table", {}).get("info"):
        lines += ["## Sweep slice (peftzoo table)", "", *r["table"]["info"]["lines"], ""]
    md = "\n".join(lines) + "\n"
    (ctx.out / "gpu_check.md").write_text(md)
    (ctx.out / "gpu_check.json").write_text(json.dumps({"total_s": total_s, "budget_s": a.budget_s, "device": ctx.dev,
                                                        "dry_run": ctx.dry, "cuda": ctx.cuda, "argv": sys.argv[1:],
                                                        "no_cuda_reason": ctx.no_cuda_reason, "targets": ctx.targets,
                                                        "parts": r}, indent=1, default=str))
    return md
