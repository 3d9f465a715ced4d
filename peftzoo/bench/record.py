"""A run's record, the one schema of the run JSONs the store keeps: ``RunRecord`` (what ran, how it went, what it
cost) and ``EpochResult`` (one epoch's scores). ``to_json`` writes the JSON; ``from_json`` reads one back, checks
it (a ``RecordError`` says what is wrong) and fills in what older records lack (a spec field added since takes the
value those runs had: ``spec.added``).

The JSON layout is that of every committed run: the spec and its id, ``protocol`` (with the run's ``stage``) and
``bench`` (the sweep's request) beside it, ``metrics_best``/``best_epoch``/``metrics_final`` (derived from
``history``), and the adapter's own fields (``Adapter.report()``) at the top level.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from peftzoo.bench.protocol import Protocol
from peftzoo.bench.spec import RunSpec

STATUSES = ("ok", "failed", "skipped")


class RecordError(ValueError):
    """A run JSON that is not a valid record (the message says what is wrong)."""


@dataclass
class EpochResult:
    """One epoch's evaluation (``Evaluation`` returns it; ``train.fit`` adds the epoch and its mean loss)."""
    dev: dict  # the dev metrics: "score" and its parts (several dev splits: prefixed "split/", score their mean)
    val: dict | None = None  # the validation split's metrics: what selection reads (None: not evaluated)
    preds: dict | None = None  # per dev split: compact predictions (stats.encode_preds), for the table's bootstrap
    epoch: int = 0  # 1-based
    loss: float | None = None  # the epoch's mean training loss
    test: dict | None = None  # the test split's metrics, as ``dev`` (a task with a test split; never selected on)
    test_preds: dict | None = None  # ... and its compact predictions

    @property
    def score(self):
        return self.dev.get("score")

    def to_json(self) -> dict:
        out = {"epoch": self.epoch, "loss": self.loss, "metrics": self.dev}
        return {**out, **{k: v for k, v in (("val_metrics", self.val), ("dev_preds", self.preds),
                                            ("test_metrics", self.test), ("test_preds", self.test_preds))
                          if v is not None}}

    @classmethod
    def from_json(cls, d: dict) -> EpochResult:
        return cls(d["metrics"], d.get("val_metrics"), d.get("dev_preds"), d.get("epoch", 0), d.get("loss"),
                   d.get("test_metrics"), d.get("test_preds"))


@dataclass
class RunRecord:
    spec: RunSpec  # what ran (its protocol, stage and request included)
    status: str  # "ok"; "failed" (``error`` says why); "skipped" (``reason`` says why; it never trained)
    versions: dict  # peftzoo, torch, transformers, ... (machine.versions)
    history: list = field(default_factory=list)  # [EpochResult], one per epoch
    params: dict | None = None  # element counts: target, achieved, solver, trainable, adapter (Adapter.summary())
    steps: int | None = None  # training steps taken
    wall_s: float | None = None  # the whole run, loading included
    train_s: float | None = None  # the training loop with its per-epoch evaluations
    median_step_s: float | None = None  # the median training step
    throughput_ex_s: float | None = None  # training examples per second at the median step
    peak_mem_mb: float | None = None  # peak memory while training...
    peak_mem_kind: str | None = None  # ...of this kind (CUDA allocator, process RSS)
    device: str | None = None  # what it ran on
    adapter_file_bytes: int | None = None  # the adapter's saved size
    split_sizes: dict | None = None  # examples: train (the subset), val, each dev split
    dev_labels: dict | None = None  # per dev split: the labels scored against (compact), for the bootstrap
    test_labels: dict | None = None  # per test split: its labels (compact), where the task has a test split
    target_scale: dict | None = None  # {"mean", "std"} the regression labels were standardised with
    data_skipped: dict | None = None  # per split: malformed rows left out (--skip-bad-rows)
    error: str | None = None  # failed: the exception
    traceback: str | None = None  # failed: its last lines
    reason: str | None = None  # skipped: why
    ray: dict | None = None  # where a Ray worker ran it
    # --save-adapters: {"path": the adapter folder beside the run JSON, "bytes"}, or {"skipped": why}
    saved_adapter: dict | None = None
    extra: dict = field(default_factory=dict)  # the adapter's own fields (Adapter.report()) and keys kept as read
    # the saved adapter's files ({name: bytes}) on their way to the store (store.write_record), never in the JSON
    adapter_files: dict | None = field(default=None, repr=False, compare=False, metadata={"transient": True})

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def best_epoch(self) -> int:
        """1-based: the epoch of the best dev score (the first of equal ones; epochs without a score never)."""
        scores = [h.score if _number(h.score) else -math.inf for h in self.history]
        return scores.index(max(scores)) + 1

    @property
    def why(self) -> str | None:
        """Why a run has no scores: the reason it was skipped or the error it failed with."""
        return self.reason or self.error

    def to_json(self) -> dict:
        s = self.spec
        out = {"spec": s.to_dict(), "run_id": s.run_id, "task": s.task, "method": s.method, "seed": s.seed,
               "status": self.status, "versions": self.versions}
        if s.protocol is not None:
            out["protocol"] = {**s.protocol.to_dict(), "stage": s.stage}
        if s.request is not None:
            out["bench"] = s.request
        if self.ok:
            out.update(history=[h.to_json() for h in self.history], best_epoch=self.best_epoch,
                       metrics_best=self.history[self.best_epoch - 1].dev, metrics_final=self.history[-1].dev)
        for k in _FIELDS:
            v = getattr(self, k)
            if v is not None or (self.ok and k in _OK):
                out[k] = v
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d, path: Path | None = None) -> RunRecord:
        """The record of a run JSON; ``path``: its file, whose name must be its run id."""
        if not isinstance(d, dict):
            raise RecordError(f"not a JSON object (a {type(d).__name__})")
        spec = _spec(d)
        if d.get("run_id") != spec.run_id:
            raise RecordError(f"its run_id {d.get('run_id')!r} does not match its spec (hash: {spec.run_id!r}); "
                              "edited by hand?")
        if path is not None and Path(path).stem != spec.run_id:
            raise RecordError(f"file name does not match its run_id {spec.run_id!r}")
        for k in ("task", "method", "seed"):
            if d.get(k) != getattr(spec, k):
                raise RecordError(f"{k!r} {d.get(k)!r} differs from its spec's {getattr(spec, k)!r}")
        if d["status"] == "ok":
            _check_ok(d)
        rec = cls(spec, d["status"], d.get("versions") or {},
                  [EpochResult.from_json(h) for h in d.get("history") or []],
                  **{k: d.get(k) for k in _FIELDS},
                  extra={k: v for k, v in d.items() if k not in _KNOWN})
        return rec


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _spec(d: dict) -> RunSpec:
    if d.get("status") not in STATUSES:
        raise RecordError(f"status {d.get('status')!r} is not one of {', '.join(STATUSES)}")
    spec = d.get("spec")
    if not isinstance(spec, dict) or not {"method", "seed", "task"} <= set(spec):
        raise RecordError("no 'spec' object with method, task and seed")
    prot = d.get("protocol")
    try:
        return RunSpec.from_dict(spec, protocol=Protocol.from_record(prot) if prot else None,
                                 stage=prot.get("stage") if prot else None, request=d.get("bench"))
    except (TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"its spec cannot be read ({e})") from None


def _check_ok(d: dict) -> None:
    need = {"history": list, "params": dict, "steps": int, "versions": dict, "device": str,
            "adapter_file_bytes": int}
    for k, t in need.items():
        if not isinstance(d.get(k), t):
            raise RecordError(f"status ok but {k!r} is {type(d.get(k)).__name__}, not {t.__name__}")
    if not d["history"] or not all(isinstance(h, dict) and isinstance(h.get("metrics"), dict) for h in d["history"]):
        raise RecordError("status ok but 'history' has no epochs with metrics")
    scores = [h["metrics"].get("score") for h in d["history"]]
    if not _number(scores[-1]) or not any(map(_number, scores)):
        raise RecordError("status ok but the final epoch's score is missing or not a number")
    if d["steps"] < 1:
        raise RecordError(f"status ok but {d['steps']} training steps")
    if not {"target", "trainable", "adapter"} <= set(d["params"]):
        raise RecordError("status ok but params lacks target/trainable/adapter")
    if not _number(d.get("median_step_s")):
        raise RecordError("status ok but median_step_s is not a number")


_FIELDS = [f.name for f in dataclasses.fields(RunRecord)[4:]  # the optional ones, written when set
           if f.name != "extra" and not f.metadata.get("transient")]
_OK = {"params", "steps", "wall_s", "train_s", "median_step_s", "throughput_ex_s", "peak_mem_mb", "peak_mem_kind",
       "device", "adapter_file_bytes", "split_sizes", "dev_labels"}  # written by every run that trained
_KNOWN = {"spec", "run_id", "task", "method", "seed", "status", "versions", "protocol", "bench", "history",
          "best_epoch", "metrics_best", "metrics_final", *_FIELDS}
