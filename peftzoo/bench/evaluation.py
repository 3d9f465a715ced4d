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

EVAL_BATCH = 128  # evaluation rows per forward pass (length-sorted, so little padding)


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
        p = batches.predict(self.model, e, EVAL_BATCH, self.dev, self.task.regression,
                            autocast(self.dev, self.spec.precision))
        return p if self.scale is None else (p * self.scale[1] + self.scale[0]).astype(np.float32)

    def _score(self, rows: dict) -> tuple[dict, dict]:
        """(metrics: several splits each prefixed, and their mean as ``score``; compact predictions) of ``rows``."""
        task, out, preds = self.task, {}, {}
        for s, r in rows.items():
            p = self.predict(self.data[s], r)
            preds[s] = encode_preds(p, task.regression)
            m = compute_metrics(task, p, self.data[s].labels[r])
            out.update(m if len(rows) == 1 else {f"{s}/{k}": v for k, v in m.items()})
        if len(rows) > 1:
            out["score"] = float(np.mean([out[f"{s}/score"] for s in rows]))
        return out, preds

    def __call__(self) -> EpochResult:
        """The dev metrics, their compact predictions, the validation metrics, and the test split's (if any)."""
        dev, preds = self._score(self.dev_rows)
        test, test_preds = self._score(self.test_rows) if self.test_rows else (None, None)
        train = self.data["train"]
        val = compute_metrics(self.task, self.predict(train, self.val_idx), train.labels[self.val_idx])
        return EpochResult(dev, val, preds, test=test, test_preds=test_preds)

    def dev_labels(self, rows: dict | None = None) -> dict:
        """The compact labels of the dev splits (or of ``rows``, e.g. ``test_rows``)."""
        rows = self.dev_rows if rows is None else rows
        return {s: encode_preds(self.data[s].labels[r], self.task.regression) for s, r in rows.items()}
