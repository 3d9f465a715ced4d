"""The one training loop every method trains with.

The adapter's hooks are called explicitly, in this order, every step:
    loss = task loss (+ ad.extra_loss() if any);  backward;  clip;  optimizer.step();  ad.on_step(step);
    scheduler.step();  zero_grad.
The adapter's optimizer (``ad.make_optimizer``: AdamW for most methods) with linear warm-up then linear decay;
bf16 autocast on CUDA, and on CPU when ``precision="bf16"``. Every epoch ends with ``evaluate()`` (an
``EpochResult``, or a plain dict of dev metrics) and the callbacks' ``on_epoch_end``.
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field

import torch

from peftzoo.bench.frozen import frozen_casts
from peftzoo.bench.machine import warn_bf16_cpu
from peftzoo.bench.record import EpochResult


class NonFiniteLoss(FloatingPointError):
    pass


PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(dev: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 on CUDA unless ``precision="fp32"``, on CPU only with ``precision="bf16"``; None: no autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    on = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    return torch.bfloat16 if on and dev.type in ("cuda", "cpu") else None


def autocast(dev: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA unless ``precision="fp32"``; on CPU only with ``precision="bf16"``."""
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_dtype(dev, precision) is not None)


def train_step(ad, opt, batch: dict, step: int, scheduler=None, clip: float = 1.0, precision: str = "auto") -> float:
    model = ad.model
    dev = next(model.parameters()).device
    with autocast(dev, precision):
        if isinstance(batch, dict):  # transformers: the model computes its loss
            loss = model(**batch).loss
        else:  # (x, y) for plain torch classifiers
            loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        extra = ad.extra_loss()
        total = loss + extra if extra is not None else loss
    if not torch.isfinite(total):
        raise NonFiniteLoss(f"loss is {total.item()} at step {step}")
    total.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(ad.trainable_parameters(), clip)
    opt.step()
    ad.on_step(step)
    if scheduler is not None:
        scheduler.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def linear_schedule(opt, total_steps: int, warmup: float):
    warm = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0

    def f(step):
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


class Callback:
    """What ``fit`` calls besides the adapter's hooks (e.g. ``peftzoo.analysis.GradientRank``, a probe of step
    times); every hook is optional: override the ones you need."""

    def on_train_begin(self, ad, total_steps: int) -> None:
        """Before the first step (the optimizer exists)."""

    def on_step_end(self, step: int, loss: float) -> None:
        """After a step and its timing: a callback's cost is not the method's."""

    def on_epoch_end(self, result: EpochResult) -> None:
        """After an epoch's evaluation."""


def casting_frozen_once(fit_fn):
    """``fit_fn`` run inside ``frozen.FrozenCasts`` when its ``precision`` means autocast on the model's device:
    the frozen layers' weights are cast to bf16 once for the whole run, not at every step (bit-identical)."""
    sig = inspect.signature(fit_fn)

    @functools.wraps(fit_fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        model = bound.arguments["ad"].model
        dev = next(model.parameters()).device
        with frozen_casts(model, autocast_dtype(dev, bound.arguments["precision"]), dev.type):
            return fit_fn(*args, **kwargs)
    return wrapper


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # [EpochResult]: per epoch, its evaluation and mean loss
    step_times: list = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    examples_per_step: int | None = None  # None: the run's batch size (a full-batch fit: every training example)
    extra: dict = field(default_factory=dict)  # the fit's own fields for the run's record (headfit: its L2 path)


@casting_frozen_once
def fit(ad, batches_per_epoch, epochs: int, lr: float, evaluate=None, warmup: float = 0.06,
        weight_decay: float = 0.0, clip: float = 1.0, progress=None, max_steps: int | None = None,
        precision: str = "auto", callbacks=()) -> TrainResult:
    """Train ``ad`` for ``epochs``; ``batches_per_epoch(epoch)`` yields batches; ``evaluate()`` -> an
    ``EpochResult`` or a dict of dev metrics; ``callbacks``: ``Callback`` objects."""
    n_batches = len(batches_per_epoch(0))
    total = epochs * n_batches if max_steps is None else min(max_steps, epochs * n_batches)
    ad.set_total_steps(total)
    for cb in callbacks:
        cb.on_train_begin(ad, total)
    opt = ad.make_optimizer(lr, weight_decay)  # AdamW over ad.param_groups (GaLore: its projected Adam)
    sched = linear_schedule(opt, total, warmup)
    res, step, t0 = TrainResult(), 0, time.perf_counter()
    dev = next(ad.model.parameters()).device
    warn_bf16_cpu(dev, precision)  # emulated bf16 on such a CPU is far slower than fp32
    for epoch in range(epochs):
        ad.model.train()
        losses = []
        for batch in batches_per_epoch(epoch):
            if step >= total:
                break
            ts = time.perf_counter()
            step += 1
            losses.append(train_step(ad, opt, batch, step, sched, clip, precision))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            res.step_times.append(time.perf_counter() - ts)
            for cb in callbacks:  # after the timing: a probe's cost is not the method's
                cb.on_step_end(step, losses[-1])
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        ad.model.eval()
        got = evaluate() if evaluate is not None else {}
        result = got if isinstance(got, EpochResult) else EpochResult(dict(got))
        result.epoch, result.loss = epoch + 1, sum(losses) / max(1, len(losses))
        res.history.append(result)
        for cb in callbacks:
            cb.on_epoch_end(result)
    res.steps, res.wall_s = step, time.perf_counter() - t0
    return res
