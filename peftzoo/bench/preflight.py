"""Checks made before a sweep starts, so that a bad setting is one clear error and not N recorded failed runs.

Device, model, data (every task loaded and validated) and the results folder are checked in that order; nothing
is recorded when one fails (at most the empty results folders are created by the writability probe, which runs last).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from peftzoo.bench import store
from peftzoo.bench.tasks import ENV, get_task, resolve_data_dir

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class PreflightError(RuntimeError):
    pass


def check_device(device: str | None) -> None:
    import torch
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise PreflightError(f"--device {device!r} is not a torch device ({e}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PreflightError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                                 f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu or leave "
                                 f"--device out")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PreflightError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise PreflightError(f"--device {device}: MPS is not available here")


def check_model(model: str | None) -> None:
    from peftzoo.bench.models import default_model
    path = model or default_model()
    p = Path(path).expanduser()
    if not p.exists() and not HUB_ID.match(str(path)):
        raise PreflightError(f"--model {path}: no such folder")
    try:
        from transformers import AutoConfig
        AutoConfig.from_pretrained(str(p) if p.exists() else path)
    except Exception as e:  # transformers raises OSError / ValueError / hub errors
        where = "the folder has no usable config.json" if p.exists() else \
            "not a local folder, and not loadable from the Hugging Face hub or its cache"
        raise PreflightError(f"--model {path}: {where} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None


def check_data(tasks, data_dir, skip_bad_rows: bool = False) -> None:
    """Every task's splits (``tasks``: Tasks, or built-in names) loaded and validated now (the runs reuse them from
    the cache); rows skipped, and dev or test examples that are also training examples, are said."""
    from peftzoo.bench.runner import load_splits
    d = resolve_data_dir(data_dir)
    src = "--data-dir" if data_dir else f"${ENV}"
    if d is not None:
        if not d.is_dir():
            raise PreflightError(f"{src} {d}: no such folder")
        if not any(d.iterdir()):
            raise PreflightError(f"{src} {d}: the folder is empty (it must hold the glue_data layout: "
                                 f"<dir>/SST-2/train.tsv, dev.tsv, ...)")
    for t in tasks:
        task = get_task(t) if isinstance(t, str) else t
        data = load_splits(task, str(data_dir) if data_dir else None, skip_bad_rows)
        for split, s in data.items():  # printed even with -q: the data is not what the files say
            if s.skipped:
                print(f"{task.name} {split}: {s.skipped} bad rows skipped (--skip-bad-rows; recorded in every run)",
                      file=sys.stderr)
            if s.overlap:
                print(f"{task.name} {split}: warning: {s.overlap:,} of its {len(s.labels):,} examples are also in "
                      f"train (the same text): its score is partly on training examples", file=sys.stderr)


def check_results(root, suite: str) -> None:
    runs = Path(root) / suite / "runs"
    probe = runs / f".preflight-{os.getpid()}"
    try:
        store.write_bytes(probe, b"")
        probe.unlink()
    except (store.OutputError, OSError) as e:
        raise PreflightError(f"--results {root}: cannot write there ({e})") from None


def preset_precisions(preset) -> set[str]:
    """Every ``precision`` a preset's runs use (its own and its task overrides')."""
    return {preset.precision} | {o["precision"] for o in preset.task_overrides.values() if "precision" in o}


def check_precision(precisions, device: str | None) -> str | None:
    """Warn before any run when bf16 is asked on a CPU without native bf16 (``machine.bf16_cpu_warning``)."""
    import torch

    from peftzoo.bench.machine import warn_bf16_cpu
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return warn_bf16_cpu(dev, "bf16") if "bf16" in set(precisions) else None


def preflight(model, tasks, data_dir, results, suite: str, device=None, skip_bad_rows=False, precisions=()) -> None:
    check_device(device)
    check_precision(precisions, device)
    check_model(model)
    check_data(tasks, data_dir, skip_bad_rows)
    check_results(results, suite)
