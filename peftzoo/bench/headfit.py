"""``head_fit="cached"``: the head baseline fitted to convergence on frozen features computed once per process.

The head baseline trains only its head (``HeadOnly.head()``: BERT's ``classifier``, which sits after the pooler), so
the head's input is a fixed function of the example. One eval-mode encoder pass (the run's precision) over the
training subset, the validation split and each dev split records that input (a forward pre-hook on the head: for
BERT the pooled output); the head is then fitted on those features alone:

* the objective is the model's own loss on the head's output (cross-entropy; mean squared error for regression, on
  the standardised targets when the run standardises them) plus ``λ/2·‖W‖²`` over the head's weight matrices
  (biases unpenalised, as scikit-learn's intercept). For BERT's linear head that is multinomial logistic
  regression, or ridge regression: convex, and full-batch L-BFGS (strong-Wolfe line search, in float64) reaches its
  optimum;
* λ is chosen on the validation split (never dev) along ``L2_PATH``, strong to weak, each fit warm-started from the
  previous one, among the fits that converged (stopped before ``MAX_ITER``); ties keep the stronger penalty.

Why L-BFGS rather than many Adam epochs with early stopping: the problem is small (examples × hidden) and convex,
so the optimum is reached rather than approached, independent of an LR and of the seed; the regularisation early
stopping would give implicitly is an explicit λ chosen on validation instead. The run's ``lr`` is L-BFGS's step
length (1 is its natural value); ``epochs``, ``batch_size``, ``warmup`` and ``weight_decay`` are not used. The
history holds one entry, the selected fit, scored on validation and dev as every run is; the record's
``cached_fit`` says where the cache stood, the whole λ path (validation score, iterations, final gradient) and
whether each fit stopped before ``MAX_ITER``.

The cache is keyed by the model, its precision and device, the head's name and the encoded rows, so every head run
of a sweep (each seed) on a task pays one encoder pass. It serves only runs that train nothing before the cached
point, which is the head baseline: a method adapting layers after that point would need the model's forward to
restart in the middle (architecture-specific), so no other run uses it.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict

import torch
from torch.nn import functional as F

from peftzoo.bench import batches
from peftzoo.bench.evaluation import EVAL_BATCH
from peftzoo.bench.train import NonFiniteLoss, TrainResult, autocast

# λ of the L2 penalty, strong to weak: mean loss + λ/2·‖W‖² is scikit-learn's C = 1/(λ·n) (n: training examples;
# its default C=1 at n=1,500 is λ ≈ 7e-4, inside the path). Never 0: unpenalised, the optimum can lie at infinity
# (separable classes) or not be unique (measured: SST-2 at λ=0 ran into MAX_ITER); an unconverged fit would be
# early stopping by accident
L2_PATH = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
MAX_ITER = 1000  # L-BFGS iterations per λ at most; a converged fit stops before (recorded per λ)
TOL_GRAD, TOL_CHANGE = 1e-6, 1e-10  # L-BFGS stops at this max |gradient|, or this change of the objective
CACHE_SIZE = 16  # feature sets kept per process (SST-2's 1,500 × 384 floats: 2.3 MB)
_CACHE: OrderedDict = OrderedDict()


class HeadFitError(ValueError):
    """A model whose head cannot be fitted on cached features; the message says why and what to do instead."""


def head_inputs(model, name: str, head, enc, device, precision: str = "auto") -> torch.Tensor:
    """One eval-mode pass of ``model`` over ``enc``: the input of ``head`` for every row (in row order, float32, on
    the CPU), checked to be one fixed-size tensor per row that the head alone turns into the model's logits."""
    order = batches.eval_order(enc.lengths)
    seen, outs, got = [], [], []
    hooks = [head.register_forward_pre_hook(lambda m, a, kw: seen.append((a, kw)), with_kwargs=True),
             head.register_forward_hook(lambda m, a, o: outs.append(o))]
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, precision):
            for i in range(0, len(order), EVAL_BATCH):
                rows = order[i:i + EVAL_BATCH]
                seen.clear()
                outs.clear()
                logits = model(**{k: v.to(device) for k, v in enc.batch(rows).items()}).logits
                got.append(_checked(name, head, seen, outs, logits, len(rows), got[0] if got else None))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return batches.restore(torch.cat(got), order)


def _checked(name, head, seen, outs, logits, n: int, first) -> torch.Tensor:
    what = f"head {name!r} ({type(head).__name__})"
    if len(seen) != 1:
        raise HeadFitError(f"{what} ran {len(seen)} times in one forward pass: its input is no single cache point; "
                           "use head_fit='steps'")
    (args, kwargs), out = seen[0], outs[0]
    if len(args) != 1 or kwargs or not torch.is_tensor(args[0]):
        raise HeadFitError(f"{what} takes {len(args)} positional and {len(kwargs)} keyword inputs: a feature cache "
                           "holds one tensor per example; use head_fit='steps'")
    x = args[0]
    if x.shape[0] != n or (first is not None and x.shape[1:] != first.shape[1:]):
        raise HeadFitError(f"the input of {what} has shape {tuple(x.shape)} for {n} rows"
                           + (f" and {tuple(first.shape)} for others" if first is not None else "")
                           + ": not one fixed-size tensor per example (RoBERTa's head takes the token sequence, "
                           "whose length varies per batch), so it cannot be cached; use head_fit='steps'")
    if not (out is logits or (torch.is_tensor(out) and out.shape == logits.shape and torch.equal(out, logits))):
        raise HeadFitError(f"the model's logits are not the output of {what}: something after the head changes them, "
                           "so a head fitted on its inputs would not be the model's; use head_fit='steps'")
    return x.detach().float().cpu()


def features(spec, model, name: str, head, enc, device) -> tuple[torch.Tensor, float | None]:
    """(the head's inputs for ``enc``'s rows, the encoder pass's seconds or None when the cache answered)."""
    h = hashlib.sha1()
    for k in sorted(enc.tensors):
        h.update(k.encode())
        h.update(enc.tensors[k].numpy().tobytes())
    key = (spec.model or "", spec.random_init, spec.precision, str(device), name, h.hexdigest())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key], None
    t0 = time.perf_counter()
    x = head_inputs(model, name, head, enc, device, spec.precision)
    _CACHE[key] = x
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return x, time.perf_counter() - t0


def clear_cache() -> None:
    _CACHE.clear()


def objective(head, x, y, regression: bool, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model's loss on the head's outputs, that loss + λ/2·‖W‖² over the head's weight matrices)."""
    out = head(x)
    loss = F.mse_loss(out.squeeze(-1), y.to(out.dtype)) if regression else F.cross_entropy(out, y.long())
    pen = sum((p ** 2).sum() for p in head.parameters() if p.requires_grad and p.ndim >= 2)
    return loss, loss + 0.5 * l2 * pen


def lbfgs(head, x, y, regression: bool, l2: float, lr: float = 1.0) -> dict:
    """Minimise ``objective`` over the head's trainable tensors by full-batch L-BFGS, from where they are."""
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=lr, max_iter=MAX_ITER, tolerance_grad=TOL_GRAD, tolerance_change=TOL_CHANGE,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        total = objective(head, x, y, regression, l2)[1]
        total.backward()
        return total
    t0 = time.perf_counter()
    opt.step(closure)
    seconds = time.perf_counter() - t0
    total = closure()
    if not torch.isfinite(total):
        raise NonFiniteLoss(f"the head's objective is {total.item()} after L-BFGS at λ={l2:g}")
    n = int(opt.state[params[0]].get("n_iter", 0))
    grad = max(float(p.grad.abs().max()) for p in params)
    opt.zero_grad(set_to_none=True)
    return {"l2": l2, "iterations": n, "converged": n < MAX_ITER, "grad_max": grad, "objective": float(total.detach()),
            "seconds": seconds}


def outputs(head, x, regression: bool):
    """The head's predictions (argmax, or the value for regression) as numpy."""
    with torch.no_grad():
        out = head(x)
    return (out.squeeze(-1).float() if regression else out.argmax(-1)).cpu().numpy()


def fit_path(head, x, y, regression: bool, val_score, lr: float = 1.0, path=L2_PATH) -> tuple[float, list[dict]]:
    """Fit the head at every λ of ``path`` (warm-started), keep the converged fit whose ``val_score()`` is best
    (ties: the stronger penalty); returns (that λ, every λ's fit with its ``val``)."""
    points, best = [], None
    for l2 in path:
        pt = lbfgs(head, x, y, regression, l2, lr)
        s = val_score()
        pt["val"] = s if s is not None and math.isfinite(s) else None
        points.append(pt)
        if pt["converged"] and pt["val"] is not None and (best is None or pt["val"] > best[0]):
            best = (pt["val"], l2, {k: v.detach().clone() for k, v in head.state_dict().items()})
    if best is None:
        raise HeadFitError(f"no λ of {list(path)} gave a converged fit (within {MAX_ITER} L-BFGS iterations) with "
                           f"a finite validation score: {points}")
    head.load_state_dict(best[2])
    return best[1], points


def fit_cached(spec, run, callbacks=()) -> TrainResult:
    """The head baseline's run under ``head_fit="cached"`` (``run``: a ``runner.Prepared``): features of the training
    subset, the validation split and the dev split(s), then the λ path by L-BFGS, the best on validation kept."""
    if callbacks:
        raise ValueError("head_fit='cached' runs no training loop, so it takes no training-loop callbacks (step "
                         "probes); probe the head's steps with head_fit='steps'")
    t0, ev, regression = time.perf_counter(), run.evaluation, run.evaluation.task.regression
    name, head = run.adapter.head()
    x, seconds = cached_splits(spec, run, name, head)
    y = torch.as_tensor(run.labels).to(x["train"].device)
    l2, path = fit_float64(head, x, y, regression, lambda p: ev.val_metrics(ev.unscale(p))["score"], spec.lr)
    result = ev.result({s: ev.unscale(outputs(head, x[s], regression)) for s in ev.task.dev},
                       ev.unscale(outputs(head, x["validation"], regression)))
    with torch.no_grad():
        result.epoch, result.loss = 1, float(objective(head, x["train"], y, regression, l2)[0])
    per_iter = [p["seconds"] / p["iterations"] for p in path for _ in range(p["iterations"])]
    return TrainResult([result], per_iter, sum(p["iterations"] for p in path), time.perf_counter() - t0,
                       examples_per_step=len(y), extra={"cached_fit": {
                           "solver": "L-BFGS (strong Wolfe), full batch, float64, on cached features "
                                     "(peftzoo/bench/headfit.py)",
                           "cache_point": f"the input of {name} ({type(head).__name__})",
                           "feature_shape": list(x["train"].shape[1:]),
                           "encoder_pass_s": seconds,  # per split; null: the cache answered
                           "l2": l2, "path": path}})


def cached_splits(spec, run, name: str, head) -> tuple[dict, dict]:
    """({split: the head's inputs, on the head's device}, {split: encoder-pass seconds, None when cached}) for
    "train" (the training subset), "validation" and each dev split."""
    ev = run.evaluation

    def feats(split, rows):
        enc = batches.encode_split(ev.tok, split, rows, spec.max_len, ev.task.name)  # cached per process
        return features(spec, run.adapter.model, name, head, enc, run.device)
    parts = {"train": features(spec, run.adapter.model, name, head, run.enc, run.device),
             "validation": feats(ev.data["train"], run.val_idx),
             **{s: feats(ev.data[s], ev.dev_rows[s]) for s in ev.task.dev}}
    dev = next(head.parameters()).device
    return {k: v.to(dev) for k, (v, _) in parts.items()}, {k: t for k, (_, t) in parts.items()}


def fit_float64(head, x: dict, y, regression: bool, val_score, lr: float) -> tuple[float, list[dict]]:
    """``fit_path`` in float64 (in float32 the objective's last changes drown in rounding and L-BFGS stops early),
    the head in eval mode (L-BFGS needs the same objective at every evaluation: a head's own dropout is off); the
    head is back in its own dtype after, as the model runs it. ``val_score(predictions)`` scores the validation's."""
    head.eval()
    dtype = next(head.parameters()).dtype
    head.double()
    try:
        xv = x["validation"].double()
        return fit_path(head, x["train"].double(), y.double() if regression else y, regression,
                        lambda: val_score(outputs(head, xv, regression)), lr)
    finally:
        head.to(dtype)
