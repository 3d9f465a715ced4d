"""Helpers for users of ``transformers.Trainer``: the adapter's hooks, called as peftzoo's own loop calls them.

    trainer = peftzoo.hf.AdapterTrainer(model=ad.model, adapter=ad, args=..., train_dataset=...)

``AdapterCallback`` sets the schedule length at the start of training and calls ``on_step`` after each optimizer
step (before gradients are zeroed); ``AdapterTrainer`` adds it and puts ``extra_loss()`` into the loss.
"""
from __future__ import annotations

from transformers import Trainer, TrainerCallback


class AdapterCallback(TrainerCallback):
    def __init__(self, adapter):
        self.adapter = adapter

    def on_train_begin(self, args, state, control, **kwargs):
        self.adapter.set_total_steps(state.max_steps)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.adapter.on_step(state.global_step + 1)  # global_step counts completed steps; this one is finishing


class AdapterTrainer(Trainer):
    def __init__(self, *args, adapter, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.add_callback(AdapterCallback(adapter))

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        extra = self.adapter.extra_loss()
        if extra is not None:
            loss = loss + extra
        return (loss, outputs) if return_outputs else loss
