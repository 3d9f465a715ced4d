"""``transformers.Trainer`` for a peftzoo adapter: its optimizer groups, its hooks, adapter-only checkpoints.

    ad = peftzoo.attach(model, "loraplus", r=8, train=["classifier"])
    trainer = peftzoo.hf.AdapterTrainer(adapter=ad, args=TrainingArguments(...), train_dataset=...)
    trainer.train()                                     # or trainer.train(resume_from_checkpoint=True)

What differs from a plain ``Trainer``:

* the optimizer Trainer creates is ``ad.make_optimizer(args.learning_rate, args.weight_decay, cls, **kwargs)``:
  ``ad.param_groups`` (LoRA+ puts B at lr x ratio, by role) with the class and settings ``args.optim`` names
  (AdamW's betas and eps); GaLore builds its projected Adam with those betas and eps. The optimizers in
  ``SUPPORTED_OPTIM`` take such groups, any other is refused when the trainer is made. Weight decay
  applies to every trainable tensor, as in peftzoo's own loop (Trainer's default exempts biases and norms by name);
* ``AdapterCallback`` sets the schedule length when training begins and calls ``on_step`` after each optimizer step
  (gradients still there); ``extra_loss()`` joins the training loss, once per optimizer step whatever the gradient
  accumulation;
* checkpoints and ``save_model`` hold the adapter in peftzoo's own format (``ad.save``: ``peftzoo.json`` +
  ``adapter.safetensors``, no base weights; ``peftzoo.load`` reads them), and ``train(resume_from_checkpoint=...)``
  and ``load_best_model_at_end`` load them back into the attached adapter. An adapter whose files do not hold every
  trainable tensor (full fine-tuning) is saved as Trainer saves a model.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME

from peftzoo import io
from peftzoo.adapters.base import Adapter

# Trainer's optim names whose optimizer is a plain class taking parameter groups (each group keeps its own lr).
SUPPORTED_OPTIM = ("adamw_torch", "adamw_torch_fused", "sgd", "adagrad", "rmsprop", "adafactor")
META = "peftzoo.json"  # the file that marks a peftzoo checkpoint (io.save writes it)


class AdapterCallback(TrainerCallback):
    def __init__(self, adapter):
        self.adapter = adapter

    def on_train_begin(self, args, state, control, **kwargs):
        self.adapter.set_total_steps(state.max_steps)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.adapter.on_step(state.global_step + 1)  # global_step counts completed steps; this one is finishing


class AdapterTrainer(Trainer):
    def __init__(self, *args, adapter: Adapter, **kwargs):
        if not args and "model" not in kwargs:
            kwargs["model"] = adapter.model
        super().__init__(*args, **kwargs)
        if self.model is not adapter.model:
            raise ValueError("AdapterTrainer trains the adapter's own module: pass model=ad.model (or leave model out), "
                             f"not a {type(self.model).__name__} that is not ad.model")
        self.adapter = adapter
        if self.optimizer is None and self.optimizer_cls_and_kwargs is None:
            check_optim(self.args.optim)
        self.add_callback(AdapterCallback(adapter))

    # ---- the optimizer: the adapter's groups -------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            cls, kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            self.optimizer = self.adapter.make_optimizer(self.args.learning_rate, self.args.weight_decay, cls,
                                                         **kwargs)
        return self.optimizer

    # ---- the loss: + extra_loss, once per optimizer step -------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        extra = self.adapter.extra_loss() if model.training else None
        if extra is not None:
            loss = loss + extra / self._undivided_accumulation(num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _undivided_accumulation(self, num_items_in_batch) -> int:
        """The accumulation steps ``training_step`` will *not* divide this micro-batch's loss by (its own rule): then
        the extra term is divided here, so that it counts once per optimizer step; else 1."""
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
                self.compute_loss_func is not None
        return getattr(self, "current_gradient_accumulation_steps", 1) if scaled else 1

    # ---- checkpoints: the adapter only ---------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not holds_all_trainable(self.adapter):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        self.adapter.save(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not (Path(resume_from_checkpoint) / META).exists():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_into(self.adapter, resume_from_checkpoint)
        if type(self.adapter).on_step is not Adapter.on_step:
            warnings.warn(f"{self.adapter.name}: on_step() keeps training state (e.g. AdaLoRA's importance averages) "
                          f"that the checkpoint {resume_from_checkpoint} does not hold; the resumed run starts it "
                          "afresh, so it can differ from an uninterrupted one", stacklevel=2)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None or not (Path(best) / META).exists():
            return super()._load_best_model()
        load_into(self.adapter, best)


def check_optim(optim) -> None:
    """Refuse, before training, an ``args.optim`` that does not take the adapter's parameter groups."""
    name = getattr(optim, "value", optim)
    if name not in SUPPORTED_OPTIM:
        raise ValueError(f"AdapterTrainer: optim={name!r} is not supported (it builds its own parameter groups or "
                         "state, so the adapter's per-role learning rates, LoRA+'s B ratio, would be lost). Use "
                         f"TrainingArguments(optim=...) with one of {', '.join(SUPPORTED_OPTIM)}, or pass your own "
                         "optimizer built from the adapter's groups: AdapterTrainer(..., "
                         "optimizers=(MyOptimizer(ad.param_groups(lr)), None))")


def holds_all_trainable(ad: Adapter) -> bool:
    """Whether ``ad.save`` holds every trainable tensor (false for full fine-tuning, whose body it does not save)."""
    saved = sum(t.numel() for t in ad.state().values())
    saved += sum(t.numel() for m in ad.train_modules.values() for t in m.state_dict().values())
    return saved >= ad.num_trainable()


def load_into(ad: Adapter, path) -> None:
    """Load a checkpoint ``ad.save`` wrote into the attached adapter ``ad`` (every tensor used, or an error)."""
    path = Path(path)
    meta = json.loads((path / META).read_text())
    if meta["method"] != ad.name:
        raise ValueError(f"{path} holds a {meta['method']!r} adapter, but this trainer trains {ad.name!r}")
    tensors = load_file(str(path / "adapter.safetensors"))
    own = {k: v for k, v in tensors.items() if not k.startswith(io.TRAIN)}
    ad.load_extra_state(meta.get("extra", {}))
    ad.load_state(own)
    io._check_all_used(tensors, set(own) | io._load_train(ad, tensors, io.TRAIN), path)
