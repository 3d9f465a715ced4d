"""Turn a suite's run JSONs into leaderboard.md, leaderboard.csv and leaderboard.png."""
from __future__ import annotations

import csv
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from peftzoo.bench import store

# spec keys that legitimately differ between the rows of one table; every other key is the table's config
PER_ROW = frozenset({"method", "seed", "hparams", "lr", "budget", "achieved", "skip_reason", "suite"})
ORDER = ["full", "head", "lora", "rslora", "loraplus", "dora", "vera", "adalora", "said", "did"]


def _ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def _fmt(m, s, scale=100.0):
    return "—" if m is None else f"{m * scale:.1f} ± {s * scale:.1f}"


def aggregate(runs: list[dict]) -> tuple[list[str], list[dict], list[dict]]:
    ok = [r for r in runs if r.get("status") == "ok"]
    bad = [r for r in runs if r.get("status") != "ok"]
    tasks = sorted({r["task"] for r in ok})
    by = defaultdict(list)
    for r in ok:
        by[(r["method"], r["task"])].append(r)
    methods = sorted({m for m, _ in by}, key=lambda m: (ORDER.index(m) if m in ORDER else 99, m))
    head_step = {t: np.median([r["median_step_s"] for r in by[("head", t)]]) for t in tasks if by.get(("head", t))}
    full_step = {t: np.median([r["median_step_s"] for r in by[("full", t)]]) for t in tasks if by.get(("full", t))}
    rows = []
    for m in methods:
        row = {"method": m}
        bests, finals, seeds = [], [], set()
        for t in tasks:
            rs = by[(m, t)]
            mean, sd = _ms([r["metrics_best"]["score"] for r in rs])
            fmean, _ = _ms([r["metrics_final"]["score"] for r in rs])
            row[t] = (mean, sd)
            bests.append(mean)
            finals.append(fmean)
            seeds |= {r["seed"] for r in rs}
        allr = [r for t in tasks for r in by[(m, t)]]
        row["avg_best"] = float(np.mean(bests)) if all(b is not None for b in bests) else None
        row["avg_final"] = float(np.mean(finals)) if all(f is not None for f in finals) else None
        row["seeds"] = len(seeds)
        row["target"] = allr[0]["params"]["target"]
        p = allr[0]["params"]
        row["achieved"] = p["solver"] if p.get("solver") is not None else p["adapter"]  # AdaLoRA: final budget
        row["trainable"] = allr[0]["params"]["trainable"]
        row["hparams"] = allr[0]["spec"]["hparams"]
        row["step_vs_head"] = _ratio(allr, head_step)
        row["step_vs_full"] = _ratio(allr, full_step)
        row["peak_mem_mb"] = max(r["peak_mem_mb"] or 0 for r in allr)
        row["file_kb"] = allr[0]["adapter_file_bytes"] / 1024
        rows.append(row)
    return tasks, rows, bad


def _ratio(runs, ref):
    xs = [r["median_step_s"] / ref[r["task"]] for r in runs if r["task"] in ref]
    return float(np.median(xs)) if xs else None


def _differing(runs: list[dict], keys, label: str) -> list[str]:
    out = []
    for k in sorted(keys):
        vals = defaultdict(list)
        for r in runs:
            vals[json.dumps(r["spec"].get(k), sort_keys=True)].append(r)
        if len(vals) > 1:
            out.append(f"{label}: {k} " + " vs ".join(f"{v} ({len(rs)} run{'s' * (len(rs) > 1)}, e.g. "
                                                       f"{rs[0]['run_id']})" for v, rs in sorted(vals.items())))
    return out


def check_configs(runs: list[dict]) -> None:
    """One table, one config: within a task every run shares all spec keys but PER_ROW, and within a
    (method, task) cell every seed shares all of them. Otherwise a ValueError names the keys that differ."""
    problems = []
    for t in sorted({r["task"] for r in runs}):
        rs = [r for r in runs if r["task"] == t]
        problems += _differing(rs, {k for r in rs for k in r["spec"]} - PER_ROW, t)
        for m in sorted({r["method"] for r in rs}):
            problems += _differing([r for r in rs if r["method"] == m], PER_ROW - {"method", "seed", "suite"},
                                   f"{t} {m}")
    if problems:
        raise ValueError("the runs were made under different configs, so one table would mix them:\n  "
                         + "\n  ".join(problems) + "\nMove or delete the runs of the config you do not want (the "
                         "config is each run JSON's 'spec'), or bench each config into its own --suite.")


def _config_line(ok: list[dict]) -> str:
    keys = ("targets", "max_train", "max_eval", "epochs", "batch_size", "max_len", "warmup", "weight_decay",
            "random_init", "skip_bad_rows", "selection", "behaviour", "data")
    per_task = {t: next(r["spec"] for r in ok if r["task"] == t) for t in sorted({r["task"] for r in ok})}
    parts, varying = [], []
    for k in keys:
        vals = {t: s.get(k) for t, s in per_task.items()}
        if len({json.dumps(v) for v in vals.values()}) == 1:
            parts.append(f"{k} {next(iter(vals.values()))}")
        else:
            varying.append(f"{k}: " + ", ".join(f"{t} {v}" for t, v in vals.items()))
    skipped = sum(sum((r.get("data_skipped") or {}).values()) for r in ok)
    return ("; ".join(parts) + "." + (" Per task: " + "; ".join(varying) + "." if varying else "")
            + (f" Bad data rows skipped (--skip-bad-rows), summed over runs: {skipped}." if skipped else ""))


def write(root, suite: str) -> Path:
    invalid = []
    runs = store.read_runs(Path(root), suite, invalid)
    for p, problem in invalid:
        print(f"peftzoo table: skipping invalid run record {p}: {problem}", file=sys.stderr)
    if not runs:
        what = f" ({len(invalid)} invalid records)" if invalid else ""
        raise FileNotFoundError(f"no runs under {Path(root) / suite / 'runs'}{what}: run `peftzoo bench` first")
    tasks, rows, bad = aggregate(runs)
    out = Path(root) / suite
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        listed = "\n".join(f"  {r['task']} {r['method']} s{r['seed']}: {r['status']}: "
                            f"{r.get('reason') or r.get('error')}" for r in bad[:20])
        raise ValueError(f"no successful run in {out / 'runs'} ({len(bad)} runs, none ok), so no table; "
                         f"nothing was written:\n{listed}\nFix the cause, then `peftzoo bench --retry-failed`.")
    check_configs(ok)
    dev = sorted({r["device"] for r in ok})
    v = ok[0]["versions"] if ok else {}
    spec = ok[0]["spec"] if ok else {}
    lines = [f"# Leaderboard: `{suite}`", "",
             f"Reproduce: `peftzoo bench --preset {suite} --data-dir $PEFTZOO_DATA_DIR && peftzoo table --suite {suite}`",
             "", f"Device: {', '.join(dev)}. Versions: {', '.join(f'{k} {x}' for k, x in v.items())}. "
             f"Model: `{spec.get('model') or 'all-MiniLM-L6-v2 (embedded)'}`. Config: {_config_line(ok)}", "",
             "Scores: GLUE metric ×100 at the best epoch (the LoRA paper's protocol), mean ± std over seeds "
             "(MRPC/QQP: mean of F1 and accuracy; STS-B: mean of Pearson and Spearman; CoLA: Matthews corr.). "
             "`params` = adapter elements (achieved / target; AdaLoRA: its final budget, its initial one is in `trainable`); the classification head is trained by every method "
             "and counted in `trainable`. Step time is the median training step relative to head-only and to "
             "full fine-tuning on the same task.", "",
             "| method | hparams | " + " | ".join(tasks) + " | avg (best) | avg (final) | params (achieved / target) "
             "| trainable | step / head | step / full | peak mem MB | file KB | seeds |",
             "|" + "---|" * (len(tasks) + 12)]
    for r in rows:
        hp = ", ".join(f"{k}={x}" for k, x in r["hparams"].items()) or "—"
        tgt = f"{r['target']:,}" if r["target"] else "—"
        lines.append(f"| {r['method']} | {hp} | " + " | ".join(_fmt(*r[t]) for t in tasks)
                     + f" | {_fmt(r['avg_best'], 0)} | {_fmt(r['avg_final'], 0)} | {r['achieved']:,} / {tgt} "
                     f"| {r['trainable']:,} | {_num(r['step_vs_head'])} | {_num(r['step_vs_full'])} "
                     f"| {r['peak_mem_mb']:.0f} | {r['file_kb']:.0f} | {r['seeds']} |")
    if bad:
        lines += ["", "Runs not in the table:", ""]
        lines += [f"- {r['spec']['task']} {r['spec']['method']} s{r['spec']['seed']}: {r['status']}: "
                  f"{r.get('reason') or r.get('error')}" for r in bad]
    if invalid:
        lines += ["", "Invalid run records (skipped):", ""] + [f"- `{p}`: {why}" for p, why in invalid]
    md, table_csv, fig = "\n".join(lines).replace("± 0.0 |", "|") + "\n", _csv(tasks, rows), _plot(tasks, runs)
    store.write_text(out / "leaderboard.md", md)  # each one atomic: a failed write leaves the old file whole
    store.write_text(out / "leaderboard.csv", table_csv)
    store.write_bytes(out / "leaderboard.png", fig)
    return out / "leaderboard.md"


def _num(x):
    return "—" if x is None else f"{x:.2f}"


def _csv(tasks, rows) -> str:
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["method", *[f"{t}_mean" for t in tasks], *[f"{t}_std" for t in tasks], "avg_best", "avg_final",
                "params_target", "params_achieved", "trainable", "step_vs_head", "step_vs_full", "peak_mem_mb",
                "file_kb", "seeds"])
    for r in rows:
        w.writerow([r["method"], *[r[t][0] for t in tasks], *[r[t][1] for t in tasks], r["avg_best"],
                    r["avg_final"], r["target"], r["achieved"], r["trainable"], r["step_vs_head"],
                    r["step_vs_full"], r["peak_mem_mb"], r["file_kb"], r["seeds"]])
    return f.getvalue()


def _plot(tasks, runs) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in runs if r.get("status") == "ok"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        by = defaultdict(list)
        for r in ok:
            if r["task"] == t:
                by[r["method"]].append(r)
        for m, rs in sorted(by.items()):
            x = rs[0]["params"]["trainable"]
            ys = [r["metrics_best"]["score"] * 100 for r in rs]
            ax.errorbar([x], [np.mean(ys)], yerr=[np.std(ys)], fmt="o", capsize=3, label=m)
            ax.annotate(m, (x, np.mean(ys)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(t)
        ax.set_xlabel("trainable parameters (incl. head)")
        ax.set_ylabel("score ×100 (best epoch)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
