"""A run's evaluation after every epoch: the GLUE dev split(s), reported, and the validation split carved from
train, which selection reads. Predictions are kept compactly per epoch for the table's bootstrap."""
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
        self.dev_rows = {s: np.arange(len(data[s].labels) if spec.max_eval is None
                                      else min(spec.max_eval, len(data[s].labels))) for s in task.dev}

    def predict(self, split, rows):
        e = batches.encode_split(self.tok, split, rows, self.spec.max_len, self.task.name)  # cached per process
        return self.unscale(batches.predict(self.model, e, EVAL_BATCH, self.dev, self.task.regression,
                                            autocast(self.dev, self.spec.precision)))

    def unscale(self, p):
        """Model outputs in label units (regression outputs mapped back when the run standardised its targets)."""
        return p if self.scale is None else (p * self.scale[1] + self.scale[0]).astype(np.float32)

    def __call__(self) -> EpochResult:
        """The model's dev and validation predictions, scored (``result``)."""
        data = self.data
        dev = {s: self.predict(data[s], self.dev_rows[s]) for s in self.task.dev}
        return self.result(dev, self.predict(data["train"], self.val_idx))

    def result(self, dev_preds: dict, val_pred) -> EpochResult:
        """Predictions (label units) scored: the dev metrics (several dev splits: each prefixed, and their mean as
        ``score``), their compact predictions, and the validation metrics."""
        task, data, dev, preds = self.task, self.data, {}, {}
        for s in task.dev:
            p = dev_preds[s]
            preds[s] = encode_preds(p, task.regression)
            m = compute_metrics(task, p, data[s].labels[self.dev_rows[s]])
            dev.update(m if len(task.dev) == 1 else {f"{s}/{k}": v for k, v in m.items()})
        if len(task.dev) > 1:
            dev["score"] = float(np.mean([dev[f"{s}/score"] for s in task.dev]))
        return EpochResult(dev, self.val_metrics(val_pred), preds)

    def val_metrics(self, val_pred) -> dict:
        """The validation split's metrics of its predictions (label units): what selection reads."""
        return compute_metrics(self.task, val_pred, self.data["train"].labels[self.val_idx])

    def dev_labels(self) -> dict:
        return {s: encode_preds(self.data[s].labels[r], self.task.regression) for s, r in self.dev_rows.items()}
