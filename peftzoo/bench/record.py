"""A run's record: what the run store writes as its JSON (the spec, the outcome, counts, costs, the machine)."""
from __future__ import annotations

import time
import traceback

import numpy as np

from peftzoo.bench.machine import device_name, versions
from peftzoo.bench.train import median


def start(spec) -> dict:
    return {"spec": spec.to_dict(), "run_id": spec.run_id, "task": spec.task, "method": spec.method,
            "seed": spec.seed, "versions": versions()}


def finished(spec, run, res, peak: dict, t0: float) -> dict:
    """The fields of a run that trained: scores per epoch and the best one, counts (taken after training, so a
    pruning method reports what it ends with), costs, and the adapter's own fields (``report()``)."""
    ad, ev = run.adapter, run.evaluation
    summary = ad.summary()
    ev.split_history(res.history)
    best = int(np.argmax([h["metrics"]["score"] for h in res.history]))
    st = median(res.step_times)
    return {
        "status": "ok",
        "metrics_best": res.history[best]["metrics"], "best_epoch": best + 1,
        "metrics_final": res.history[-1]["metrics"], "history": res.history,
        "params": {"target": spec.budget, "achieved": summary["adapter"], "solver": spec.achieved,
                   **{k: v for k, v in summary.items() if k != "method"}},
        "wall_s": time.perf_counter() - t0, "train_s": res.wall_s, "steps": res.steps,
        "median_step_s": st, "throughput_ex_s": spec.batch_size / st if st else None,
        "peak_mem_mb": peak["mb"], "peak_mem_kind": peak["kind"], "device": device_name(run.device),
        "adapter_file_bytes": ad.file_bytes(),
        "split_sizes": {"train": len(run.idx), "val": len(run.val_idx),
                        **{s: len(r) for s, r in ev.dev_rows.items()}},
        "dev_labels": ev.dev_labels(),
        **({"target_scale": {"mean": ev.scale[0], "std": ev.scale[1]}} if ev.scale else {}),
        **ad.report(),
    }


def failed(e: BaseException, t0: float) -> dict:
    return {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:],
            "wall_s": time.perf_counter() - t0}
