"""Gradient low-rankness over training (GaLore, Zhao et al. 2024): the stable and effective rank of ∇W of every
trainable ``nn.Linear`` weight, every ``every`` steps. A callback for ``peftzoo.bench.train.fit``:

    probe = GradientRank(every=10)
    fit(ad, batches, epochs, lr, callbacks=[probe]);   probe.records   # [{"step", "layers": {name: {...}}}]

Gradients are caught by ``register_post_accumulate_grad_hook`` (after backward, before clipping — clipping scales
all gradients by one number, so ranks are unchanged) and their SVDs run batched once the step ends.
"""
from __future__ import annotations

import torch

from peftzoo.analysis import spectra
from peftzoo.analysis.weights import linear_weights
from peftzoo.bench.train import Callback


class GradientRank(Callback):
    def __init__(self, every: int = 10):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every} must be a positive integer")
        self.every = every  # record steps 1, 1 + every, 1 + 2·every, ...
        self.records: list[dict] = []
        self._handles, self._grads, self._step, self._total = [], {}, 0, 0

    def on_train_begin(self, ad, total_steps: int) -> None:
        self._total, self._step = total_steps, 0
        lin = {n: m.weight for n, m in linear_weights(ad.model).items() if m.weight.requires_grad}
        if not lin:
            raise ValueError("GradientRank: no trainable nn.Linear weight (it measures full fine-tuning's gradients)")
        for name, w in lin.items():
            self._handles.append(w.register_post_accumulate_grad_hook(self._catch(name)))

    def _catch(self, name: str):
        def hook(p):
            if self._step % self.every == 0 and p.grad is not None:  # self._step = steps finished so far
                self._grads[name] = p.grad.detach().float().clone()
        return hook

    def on_step_end(self, step: int, loss: float) -> None:
        self._step = step
        if self._grads:
            svals = spectra.batched_svd(self._grads, vectors=False)
            self.records.append({"step": step, "loss": loss, "layers": {
                n: {"stable_rank": spectra.stable_rank(s[0]), "effective_rank": spectra.effective_rank(s[0]),
                    "numerical_rank": spectra.numerical_rank(s[0], tuple(self._grads[n].shape)),
                    "max_rank": min(self._grads[n].shape)}
                for n, s in svals.items()}})
            self._grads = {}
        if step >= self._total:
            self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def summary(self) -> dict:
        """Per recorded step, the mean over layers of each rank and of rank / min(d_out, d_in)."""
        out = []
        for rec in self.records:
            ls = list(rec["layers"].values())
            out.append({"step": rec["step"], "loss": rec["loss"],
                        **{f"mean_{k}": sum(v[k] for v in ls) / len(ls)
                           for k in ("stable_rank", "effective_rank", "numerical_rank")},
                        "mean_effective_rank_fraction": sum(v["effective_rank"] / v["max_rank"] for v in ls) / len(ls)})
        return {"every": self.every, "steps": out}
