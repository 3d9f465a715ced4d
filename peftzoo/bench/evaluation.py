"""A run's evaluation after every epoch: the task's dev split(s), reported, its test split(s) if it has any
(reported beside dev, never selected on), and the validation split carved from train, which selection reads.
Predictions are kept compactly per epoch for the table's paired bootstrap."""
from __future__ import annotations

import numpy as np

from peftzoo.bench import batches
from peftzoo.bench.record import EpochResult
from peftzoo.bench.stats import encode_preds
from peftzoo.bench.tasks import compute_metrics
from peftzoo.bench.train import autocast

EVAL_BATCH = 128  # evaluation rows per forward pass (length-sorted, so little padding): RunSpec.eval_batch's default


class Evaluation:
    def __init__(self, spec, task, data: dict, val_idx, tok, model, dev, scale=None):
        self.spec, self.task, self.data, self.val_idx = spec, task, data, val_idx
        self.scale = scale  # (mean, std) the model's regression outputs are mapped back with; None = as they are
        self.tok, self.model, self.dev = tok, model, dev
        self.dev_rows = self._rows(task.dev)
        self.test_rows = self._rows(task.test)

    def _rows(self, splits) -> dict:
        """The rows scored of each split: all, or the first ``max_eval``."""
        n = {s: len(self.data[s].labels) for s in splits}
        return {s: np.arange(n[s] if self.spec.max_eval is None else min(self.spec.max_eval, n[s])) for s in splits}

    def predict(self, split, rows):
        e = batches.encode_split(self.tok, split, rows, self.spec.max_len, self.task.name)  # cached per process
        return self.unscale(batches.predict(self.model, e, self.spec.eval_batch, self.dev, self.task.regression,
                                            autocast(self.dev, self.spec.precision)))

    def unscale(self, p):
        """Model outputs in label units (regression outputs mapped back when the run standardised its targets)."""
        return p if self.scale is None else (p * self.scale[1] + self.scale[0]).astype(np.float32)

    def _score(self, rows: dict, given: dict) -> tuple[dict, dict]:
        """(metrics: several splits each prefixed, and their mean as ``score``; compact predictions) of ``rows``,
        whose predictions (label units) are ``given``."""
        task, out, preds = self.task, {}, {}
        for s, r in rows.items():
            p = given[s]
            preds[s] = encode_preds(p, task.regression)
            m = compute_metrics(task, p, self.data[s].labels[r])
            out.update(m if len(rows) == 1 else {f"{s}/{k}": v for k, v in m.items()})
        if len(rows) > 1:
            out["score"] = float(np.mean([out[f"{s}/score"] for s in rows]))
        return out, preds

    def __call__(self) -> EpochResult:
        """The model's dev, test (if any) and validation predictions, scored (``result``)."""
        dev = {s: self.predict(self.data[s], r) for s, r in self.dev_rows.items()}
        test = {s: self.predict(self.data[s], r) for s, r in self.test_rows.items()}
        return self.result(dev, self.predict(self.data["train"], self.val_idx), test)

    def result(self, dev_preds: dict, val_pred, test_preds: dict | None = None) -> EpochResult:
        """Predictions (label units) scored: the dev metrics, their compact predictions, the validation metrics and
        the test split's (when it has one and ``test_preds`` are given)."""
        dev, preds = self._score(self.dev_rows, dev_preds)
        test, tp = self._score(self.test_rows, test_preds) if self.test_rows and test_preds else (None, None)
        return EpochResult(dev, self.val_metrics(val_pred), preds, test=test, test_preds=tp)

    def val_metrics(self, val_pred) -> dict:
        """The validation split's metrics of its predictions (label units): what selection reads."""
        return compute_metrics(self.task, val_pred, self.data["train"].labels[self.val_idx])

    def dev_labels(self, rows: dict | None = None) -> dict:
        """The compact labels of the dev splits (or of ``rows``, e.g. ``test_rows``)."""
        rows = self.dev_rows if rows is None else rows
        return {s: encode_preds(self.data[s].labels[r], self.task.regression) for s, r in rows.items()}
