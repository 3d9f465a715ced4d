"""One run: ``execute(spec)`` prepares it (data, model, adapter, batches), fits it, evaluates it every epoch and
records it; each part lives in a module named for its job: ``spec`` (what a run is), ``models`` (model and
adapter), ``batches`` (tokenised batches), ``train`` (the loop), ``evaluation``, ``machine`` (memory, device,
versions) and ``record`` (the ``RunRecord`` it returns).

The executor here is in-process and sequential; a distributed one (e.g. Ray) only needs to call
``execute(spec, ...)`` on each spec and ``store.write_record`` the result.
"""
from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from dataclasses import dataclass
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from peftzoo.bench import batches, store
from peftzoo.bench.evaluation import Evaluation
from peftzoo.bench.machine import device_name, peak_memory, versions
from peftzoo.bench.models import load_model, make_adapter
from peftzoo.bench.pooled import pooled_last_layer
from peftzoo.bench.record import RunRecord
from peftzoo.bench.spec import RunSpec
from peftzoo.bench.tasks import get_task, load_task, split_indices


@lru_cache(maxsize=4)
def load_splits(task, data_dir: str | None, skip_bad_rows: bool = False) -> dict:
    """A task's splits (``task``: a ``Task``, or a built-in task's name), loaded and validated once per process
    (``data_dir`` as a string, or None)."""
    return load_task(get_task(task) if isinstance(task, str) else task, data_dir, skip_bad_rows)


def load_data(spec: RunSpec, data_dir):
    """(task, its splits), loaded and validated once per process."""
    task = spec.task_spec()
    return task, load_splits(task, str(data_dir) if data_dir else None, spec.skip_bad_rows)


@dataclass
class Prepared:
    """A run ready to train: its adapter (``adapter.model`` on the device), batches and evaluation."""
    adapter: object
    epoch_batches: object  # epoch -> that epoch's batches (reshuffled every epoch, length-grouped)
    n_batches: int
    evaluation: Evaluation
    idx: np.ndarray  # the training subset
    val_idx: np.ndarray  # the validation split carved from train (disjoint)
    device: torch.device
    enc: object = None  # the training subset, encoded (batches.Encoded)
    labels: np.ndarray | None = None  # its labels as trained on (standardised when the spec says so)


def prepare(spec: RunSpec, task, data: dict, dev: torch.device, attach=make_adapter) -> Prepared:
    """Seeds, the training subset and validation split (the same for every run), model, adapter (``attach(model,
    spec)``), batches."""
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    train = data["train"]
    idx, val_idx = split_indices(len(train.labels), spec.max_train, spec.val_fraction, spec.val_cap, spec.val_seed)
    if min(spec.batch_size, spec.epochs, len(idx), 1 if spec.max_train is None else spec.max_train) < 1:
        raise ValueError(f"no training step: epochs={spec.epochs}, batch_size={spec.batch_size}, max_train="
                         f"{spec.max_train} ({len(train.labels)} training rows); each must be >= 1")
    if spec.random_init:
        torch.manual_seed(0)  # the same random θ0 for every run (its training RNG continues from here, as always)
    model, tok = load_model(spec.model, task, spec.random_init)
    ad = attach(model, spec)
    ad.model.to(dev)
    enc = batches.encode_split(tok, train, idx, spec.max_len, task.name)  # cached per process
    scale = target_scale(spec, task, train.labels[idx])
    labels = ((train.labels[idx] - scale[0]) / scale[1]).astype(np.float32) if scale else train.labels[idx]

    def epoch_batches(epoch):
        return batches.train_batches(enc, labels, spec.batch_size, spec.seed, epoch, dev)
    return Prepared(ad, epoch_batches, -(-len(idx) // spec.batch_size),
                    Evaluation(spec, task, data, val_idx, tok, ad.model, dev, scale), idx, val_idx, dev, enc, labels)


def target_scale(spec: RunSpec, task, labels) -> tuple[float, float] | None:
    """(mean, std) of the training subset's labels when the spec standardises regression targets, else None."""
    if not (task.regression and spec.regression_targets == "standardize"):
        return None
    sd = float(np.std(labels))
    if not sd > 0:
        raise ValueError(f"regression_targets='standardize' needs labels that vary; the {len(labels)} training "
                         f"labels are all {float(labels[0])}")
    return float(np.mean(labels)), sd


def fit_run(spec: RunSpec, run: Prepared, progress: bool, callbacks=()):
    """The training loop (``train.fit``), or for ``head_fit="cached"`` the head fitted on cached features."""
    from tqdm.auto import tqdm

    from peftzoo.bench.train import fit
    with pooled_last_layer(run.adapter.model, spec.last_layer):  # a no-op for last_layer="full"
        if spec.head_fit == "cached":  # (RunSpec keeps "cached" only for a method that trains nothing but its head)
            from peftzoo.bench.headfit import fit_cached
            res = fit_cached(spec, run, callbacks)
        else:
            with tqdm(total=spec.epochs * run.n_batches, desc=spec.label, leave=False, disable=not progress) as bar:
                res = fit(run.adapter, run.epoch_batches, spec.epochs, spec.lr, run.evaluation, spec.warmup,
                          spec.weight_decay, progress=bar, precision=spec.precision, callbacks=callbacks)
    if res.steps < 1:
        raise ValueError(f"no training step was taken (epochs={spec.epochs}, {run.n_batches} batches)")
    return res


def execute(spec: RunSpec, data_dir=None, device: str | None = None, progress: bool = True, callbacks=(),
            attach=make_adapter, save_adapter: bool = False) -> RunRecord:
    """Train and evaluate one run; returns its record (status ok/failed/skipped), never raises. ``callbacks``:
    ``train.Callback`` objects the training loop calls (a per-step probe, timings); ``attach(model, spec)``: the
    adapter (default: the spec's method by name; a benchmark passes another implementation to run it here);
    ``save_adapter``: the record carries the trained adapter's files (``keep_adapter``) for the store to write."""
    try:
        spec = spec.bind_data(data_dir)
    except (OSError, ValueError):
        pass  # loading the data below fails and records why
    if spec.skip_reason:
        return RunRecord(spec, "skipped", versions(), reason=spec.skip_reason)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0, skipped = time.perf_counter(), None
    try:
        task, data = load_data(spec, data_dir)
        skipped = {s: data[s].skipped for s in task.split_names}
        run = prepare(spec, task, data, dev, attach)
        with peak_memory(dev) as peak:
            res = fit_run(spec, run, progress, callbacks)
        rec = finished(spec, run, res, peak, t0, skipped)
        return keep_adapter(rec, run.adapter) if save_adapter else rec
    except Exception as e:  # recorded, the sweep goes on
        return RunRecord(spec, "failed", versions(), error=f"{type(e).__name__}: {e}", data_skipped=skipped,
                         traceback=traceback.format_exc()[-4000:], wall_s=time.perf_counter() - t0)


def finished(spec: RunSpec, run: Prepared, res, peak: dict, t0: float, skipped: dict) -> RunRecord:
    """The record of a run that trained: its epochs, counts (taken after training, so a pruning method reports
    what it ends with), costs, and the adapter's own fields (``report()``)."""
    ad, ev = run.adapter, run.evaluation
    summary = ad.summary()
    st = sorted(res.step_times)[len(res.step_times) // 2]  # fit took >= 1 step
    return RunRecord(
        spec, "ok", versions(), res.history, data_skipped=skipped, steps=res.steps,
        params={"target": spec.budget, "achieved": summary["adapter"], "solver": spec.achieved,
                **{k: v for k, v in summary.items() if k != "method"}},
        wall_s=time.perf_counter() - t0, train_s=res.wall_s, median_step_s=st,
        throughput_ex_s=(res.examples_per_step or spec.batch_size) / st if st else None,
        peak_mem_mb=peak["mb"], peak_mem_kind=peak["kind"], device=device_name(run.device),
        adapter_file_bytes=ad.file_bytes(), dev_labels=ev.dev_labels(),
        test_labels=ev.dev_labels(ev.test_rows) if ev.test_rows else None,
        split_sizes={"train": len(run.idx), "val": len(run.val_idx),
                     **{s: len(r) for s, r in {**ev.dev_rows, **ev.test_rows}.items()}},
        target_scale={"mean": ev.scale[0], "std": ev.scale[1]} if ev.scale else None,
        extra={**ad.report(), **res.extra})


def keep_adapter(rec: RunRecord, ad) -> RunRecord:
    """``rec`` with the trained adapter's files (its own save format, ``peftzoo.io``: the head included) for the
    store to write beside the run JSON (``store.write_record``), or with why there are none: an adapter whose save
    refuses (full fine-tuning, whose trained tensors are the whole model) is recorded as skipped, with its reason."""
    with tempfile.TemporaryDirectory() as d:
        try:
            ad.save(d)
        except NotImplementedError as e:
            return dataclasses.replace(rec, saved_adapter={"skipped": str(e)})
        files = {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}
    return dataclasses.replace(rec, adapter_files=files, saved_adapter={
        "path": store.adapter_dir(Path(f"{rec.run_id}.json")).name, "bytes": sum(map(len, files.values()))})
