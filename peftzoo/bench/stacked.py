"""Stacked runs: several runs of one sweep trained together in one process over one frozen base model.

Runs that share everything but their method's options and their optimisation (LR, warm-up, weight decay), e.g.
the runs of an LR sweep, or LoRA at several ranks, see the same batches in the same order (same seed). Stacked,
they train as one model (the *host*): the frozen base computes on the concatenated batch ``[k·B, T, H]`` (one GEMM
per frozen weight instead of k), each run's adapter adds its update (``AdapterLayer.update``) on its own rows, each
run's head (``train_modules``) runs on its rows; one backward over the sum of the k losses (their parameters are
disjoint, so each run gets its own gradients); each run keeps its own optimizer, LR schedule, clipping and hooks.

Same records: every run is prepared exactly as ``runner.prepare`` prepares it alone (seeds, init, head), draws its
dropout masks from its own RNG stream in the order it would alone (``Streams``), and is evaluated on the same rows
(the host's forward over each batch of rows repeated k times, ``SharedPredictions``): its scores equal the sequential
run's up to float summation order (the shared GEMM over k·B rows, and LoRA's fused path ``x (W + s·BA)ᵀ`` alone
against ``W x + s·B A x`` here), which could flip a prediction only at a near-tie.

It applies when every adapted layer is additive (``AdapterLayer.additive``: LoRA, rsLoRA, LoRA+) and nothing but
those layers and the head trains; other runs (full fine-tuning, DoRA, VeRA, AdaLoRA, the baselines) run one by
one, and the sweep says so (``why_not``).
"""
from __future__ import annotations

import copy
import json
import time
import traceback

import numpy as np
import torch
from torch import nn

from peftzoo.adapters.layer import AdapterLayer
from peftzoo.bench import batches
from peftzoo.bench.evaluation import EVAL_BATCH, Evaluation
from peftzoo.bench.record import EpochResult
from peftzoo.bench.train import NonFiniteLoss, autocast, linear_schedule

# fields a run may change inside a stack: its method's options and its own optimisation; all else is shared
OWN = ("method", "hparams", "lr", "warmup", "weight_decay", "budget", "achieved")
ATTENTION = "peftzoo_stacked"  # the transformers attention function a host runs (``_attention``)


def why_not(spec) -> str | None:
    """Why ``spec`` cannot join a stack (None: it can): its method has no additive layer type."""
    from peftzoo import registry
    cls = registry.get(spec.method)
    if spec.last_layer != "full":
        return (f"{spec.method}: runs one by one (last_layer={spec.last_layer!r}: a stack's host runs every layer in "
                f"full)")
    if spec.skip_reason or not any(getattr(c, "additive", False) for c in getattr(cls, "layer_classes", {}).values()):
        return (f"{spec.method}: runs one by one (a stack shares one frozen base model and adds each run's update "
                f"beside its layers' outputs; {spec.method} trains no such additive update)")
    return None


def share_key(spec) -> str:
    """What every run of one stack has in common (task, seed, model, data, batches, epochs, ...)."""
    return json.dumps({k: v for k, v in spec.identity().items() if k not in OWN}, sort_keys=True, default=str)


def groups(specs, k: int) -> list[list]:
    """``specs`` in stacks of at most ``k`` runs sharing ``share_key``; a run that cannot stack is a stack of 1."""
    out, open_ = [], {}
    for s in specs:
        if k < 2 or why_not(s):
            out.append([s])
            continue
        g = open_.setdefault(share_key(s), [])
        if not g:
            out.append(g)
        g.append(s)
        if len(g) == k:
            del open_[share_key(s)]
    return out


class Streams:
    """One RNG stream per stacked run: ``each(fn, x)`` applies ``fn`` to each run's rows of ``x`` with that run's
    RNG state current, so its random draws (dropout) are the ones it makes alone."""

    def __init__(self, states: list, cuda: bool):
        self.states, self.cuda = list(states), cuda

    def each(self, fn, x, *rest):
        outs = []
        for i, (xi, *ri) in enumerate(zip(*(t.chunk(len(self.states)) for t in (x, *rest)))):
            self._set(self.states[i])
            outs.append(fn(xi, *ri))
            self.states[i] = self._get()
        return outs

    def _get(self):
        return (torch.get_rng_state(), torch.cuda.get_rng_state() if self.cuda else None)

    def _set(self, state):
        torch.set_rng_state(state[0])
        if self.cuda:
            torch.cuda.set_rng_state(state[1])


class StackedLayer(nn.Module):
    """One frozen layer for k runs: ``base(x)`` once over every row, plus run i's ``update`` on its rows."""

    def __init__(self, base: nn.Module, members: list, streams: Streams):
        super().__init__()
        self.base, self.members, self.streams = base, tuple(members), streams  # members: not submodules

    def forward(self, x):
        if all(m.dropout is None for m in self.members):  # no random draw: no stream to switch to
            ups = [m.update(xi) for m, xi in zip(self.members, x.chunk(len(self.members)))]
        else:
            ups = self.streams.each(lambda xi, i=iter(self.members): next(i).update(xi), x)
        return self.base(x) + torch.cat(ups)


class Sliced(nn.Module):
    """A module every run trains in full (its head): run i's own module on run i's rows."""

    def __init__(self, members: list, streams: Streams):
        super().__init__()
        self.members, self.streams = tuple(members), streams

    def forward(self, x):
        return torch.cat(self.streams.each(lambda xi, i=iter(self.members): next(i)(xi), x))


class SlicedDropout(nn.Dropout):
    """Dropout that draws each run's mask from that run's stream."""

    def __init__(self, p: float, streams: Streams):
        super().__init__(p)
        self.streams = streams

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return torch.cat(self.streams.each(lambda xi: nn.functional.dropout(xi, self.p, True), x))


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, **kw):
    """The host's attention: the model's own function; with dropout, once per run on its rows (its stream)."""
    host = module._peftzoo_stack
    fn = host.attention_fn
    if not dropout:
        return fn(module, query, key, value, attention_mask, dropout=dropout, **kw)
    if attention_mask is not None and attention_mask.shape[0] == query.shape[0]:
        outs = host.streams.each(lambda q, k_, v, m: fn(module, q, k_, v, m, dropout=dropout, **kw),
                                 query, key, value, attention_mask)
    else:
        outs = host.streams.each(lambda q, k_, v: fn(module, q, k_, v, attention_mask, dropout=dropout, **kw),
                                 query, key, value)
    w = [o[1] for o in outs]
    return torch.cat([o[0] for o in outs]), (torch.cat(w) if w[0] is not None else None)


def attention_function(model: nn.Module):
    """The attention function ``model`` runs (``config._attn_implementation``, or its module's eager one)."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    name = model.config._attn_implementation
    fn = ALL_ATTENTION_FUNCTIONS.get(name) or getattr(sys.modules[type(model).__module__], "eager_attention_forward",
                                                      None)
    if fn is None:
        raise ValueError(f"attention {name!r} of {type(model).__name__}: no function to run it per run")
    return fn


class Host:
    """The stacked model of ``runs`` (``runner.Prepared``): a copy of run 0's model whose adapted layers, head
    and dropouts are replaced (``StackedLayer``, ``Sliced``, ``SlicedDropout``); each run's own model is untouched
    and shares its adapter and head modules with the host."""

    def __init__(self, runs: list, train_modules, rng_states: list):
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        from peftzoo.inject import find_modules
        self.streams = Streams(rng_states, runs[0].device.type == "cuda")
        models = [r.adapter.model for r in runs]
        self.model = model = copy.deepcopy(models[0])
        trees = [dict(m.named_modules()) for m in models]
        heads = set(find_modules(models[0], list(train_modules), "train_modules")) if train_modules else set()
        check_shared(models, heads)
        for name, mod in list(model.named_modules()):
            if isinstance(mod, AdapterLayer):
                _replace(model, name, StackedLayer(mod.base, [t[name] for t in trees], self.streams))
            elif name in heads:
                _replace(model, name, Sliced([t[name] for t in trees], self.streams))
        for name, mod in list(model.named_modules()):
            if type(mod) is nn.Dropout:
                _replace(model, name, SlicedDropout(mod.p, self.streams))
        self.attention_fn = attention_function(model)
        name = f"{ATTENTION}_{model.config._attn_implementation}"
        AttentionInterface.register(name, _attention)
        # the model's own mask format (transformers builds no mask at all for an attention it does not know)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[model.config._attn_implementation])
        model.config._attn_implementation = name
        for mod in model.modules():
            mod.__dict__["_peftzoo_stack"] = self


def check_shared(models: list, heads: set) -> None:
    """Raise ValueError unless the runs' models differ only in their additive adapter layers and ``heads``."""
    ref = dict(models[0].named_parameters())
    for m in models:
        for name, mod in m.named_modules():
            if isinstance(mod, AdapterLayer) and not type(mod).additive:
                raise ValueError(f"layer {name} ({type(mod).__name__}) is not additive")
        own = {n for n, mod in m.named_modules() if isinstance(mod, AdapterLayer) or n in heads}
        for pname, p in m.named_parameters():
            mine = any(pname.startswith(o + ".") for o in own)
            if p.requires_grad and not mine:
                raise ValueError(f"{pname} trains but is neither an adapter's nor the head's")
            if not mine and not torch.equal(p, ref[pname]):
                raise ValueError(f"frozen weight {pname} differs between the runs (an init that rewrites W?)")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def task_loss(config, logits, labels):
    """The loss a transformers sequence classifier computes from ``labels`` (its problem_type rule)."""
    f = nn.functional
    if config.num_labels == 1:
        return f.mse_loss(logits.squeeze(), labels.squeeze())
    if labels.dtype in (torch.long, torch.int):
        return f.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return f.binary_cross_entropy_with_logits(logits, labels)


class SharedPredictions:
    """Every stacked run's outputs on an evaluation split, from one host forward per batch of rows (each run's
    rows of it); computed once per epoch and split."""

    def __init__(self, host: Host, k: int):
        self.host, self.k, self.cache = host, k, {}

    def outputs(self, ev, split, rows) -> list:
        key = (id(split), np.asarray(rows).tobytes())
        if key not in self.cache:
            enc = batches.encode_split(ev.tok, split, rows, ev.spec.max_len, ev.task.name)  # cached per process
            self.cache[key] = predict_stacked(self.host.model, enc, self.k, ev.dev, ev.task.regression,
                                              autocast(ev.dev, ev.spec.precision), ev.spec.eval_batch)
        return self.cache[key]


def predict_stacked(model, enc, k: int, device, regression: bool, ctx, rows_per_run: int = EVAL_BATCH) -> list:
    """``batches.predict`` for k stacked runs: each batch of rows repeated k times, one output array per run."""
    order = batches.eval_order(enc.lengths)
    outs = [[] for _ in range(k)]
    with torch.no_grad(), ctx:
        for i in range(0, len(order), rows_per_run):
            b = {n: v.to(device) for n, v in enc.batch(order[i:i + rows_per_run]).items()}
            logits = model(**{n: v.repeat(k, *([1] * (v.dim() - 1))) for n, v in b.items()}).logits.float()
            for o, lg in zip(outs, logits.chunk(k)):
                o.append(lg.squeeze(-1) if regression else lg.argmax(-1))
    return [batches.restore(torch.cat(o).cpu(), order).numpy() for o in outs]


class StackedEvaluation(Evaluation):
    """Run i's ``Evaluation``, its outputs taken from the stack's shared forward (``SharedPredictions``)."""

    def __init__(self, ev: Evaluation, shared: SharedPredictions, i: int):
        self.__dict__.update(ev.__dict__)
        self.shared, self.i = shared, i

    def predict(self, split, rows):
        p = self.shared.outputs(self, split, rows)[self.i]
        return p if self.scale is None else (p * self.scale[1] + self.scale[0]).astype(np.float32)


def fit_stack(specs: list, runs: list, host: Host, progress=None) -> list:
    """Train the stacked runs together; returns one ``train.TrainResult`` per run (the shared step times)."""
    from peftzoo.bench.train import TrainResult
    s0, k, dev = specs[0], len(runs), runs[0].device
    total = s0.epochs * runs[0].n_batches
    opts, scheds = [], []
    for s, r in zip(specs, runs):
        r.adapter.set_total_steps(total)
        opts.append(r.adapter.make_optimizer(s.lr, s.weight_decay))
        scheds.append(linear_schedule(opts[-1], total, s.warmup))
    res = [TrainResult() for _ in runs]
    shared = SharedPredictions(host, k)
    evals = [StackedEvaluation(r.evaluation, shared, i) for i, r in enumerate(runs)]
    step, t0 = 0, time.perf_counter()
    for epoch in range(s0.epochs):
        for m in [host.model] + [r.adapter.model for r in runs]:
            m.train()
        losses = [[] for _ in runs]
        for batch in runs[0].epoch_batches(epoch):
            if step >= total:
                break
            ts = time.perf_counter()
            step += 1
            for i, v in enumerate(_step(specs, runs, host, opts, scheds, batch, step)):
                losses[i].append(v)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            for r in res:
                r.step_times.append(time.perf_counter() - ts)
            if progress is not None:
                progress.update(1)
        for m in [host.model] + [r.adapter.model for r in runs]:
            m.eval()
        shared.cache.clear()
        for ev, rr, ls in zip(evals, res, losses):
            got = ev()
            got.epoch, got.loss = epoch + 1, sum(ls) / max(1, len(ls))
            rr.history.append(got if isinstance(got, EpochResult) else EpochResult(dict(got)))
    for r in res:
        r.steps, r.wall_s = step, time.perf_counter() - t0
    return res


def _step(specs, runs, host, opts, scheds, batch, step, clip: float = 1.0) -> list[float]:
    k = len(runs)
    inputs = {n: v.repeat(k, *([1] * (v.dim() - 1))) for n, v in batch.items() if n != "labels"}
    with autocast(runs[0].device, specs[0].precision):
        logits = host.model(**inputs).logits.chunk(k)
        losses = [task_loss(r.adapter.model.config, lg, batch["labels"]) for r, lg in zip(runs, logits)]
        totals = []
        for r, loss in zip(runs, losses):
            extra = r.adapter.extra_loss()
            totals.append(loss + extra if extra is not None else loss)
    for s, t in zip(specs, totals):
        if not torch.isfinite(t):
            raise NonFiniteLoss(f"{s.label}: loss is {t.item()} at step {step}")
    sum(totals).backward()
    for r, opt, sched in zip(runs, opts, scheds):
        if clip:
            torch.nn.utils.clip_grad_norm_(r.adapter.trainable_parameters(), clip)
        opt.step()
        r.adapter.on_step(step)
        sched.step()
        opt.zero_grad(set_to_none=True)
    return [float(v.detach()) for v in losses]


def execute_stack(specs: list, data_dir=None, device: str | None = None, progress: bool = True, say=print) -> list:
    """The records of ``specs`` (one stack: ``groups``), trained together; if the stack cannot be built or fails,
    each run is executed alone (``runner.execute``: its record is then exactly the sequential one), said."""
    from tqdm.auto import tqdm

    from peftzoo.bench import runner
    from peftzoo.bench.machine import peak_memory
    specs = [s.bind_data(data_dir) for s in specs]
    if len(specs) > 1:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        t0 = time.perf_counter()
        try:
            task, data = runner.load_data(specs[0], data_dir)
            skipped = {s: data[s].skipped for s in ("train", *task.dev)}
            runs, states = [], []
            for s in specs:
                runs.append(runner.prepare(s, task, data, dev))
                states.append(Streams([], dev.type == "cuda")._get())
            host = Host(runs, specs[0].train_modules, states)
            with peak_memory(dev) as peak, tqdm(total=specs[0].epochs * runs[0].n_batches, leave=False,
                                               desc=f"stack of {len(specs)}", disable=not progress) as bar:
                res = fit_stack(specs, runs, host, bar)
            recs = [runner.finished(s, r, x, peak, t0, skipped) for s, r, x in zip(specs, runs, res)]
            for rec in recs:
                rec.extra["stacked_runs"] = len(specs)  # trained in a stack of this many (step times are shared)
            return recs
        except Exception as e:  # noqa: BLE001 - each run then runs alone and records its own outcome
            say(f"stack of {len(specs)} ({', '.join(s.label for s in specs)}) could not train together "
                f"({type(e).__name__}: {e}; {traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()}): "
                "running them one by one")
    return [runner.execute(s, data_dir=data_dir, device=device, progress=progress) for s in specs]
