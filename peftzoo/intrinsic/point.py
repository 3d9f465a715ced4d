"""Scoring one d_90 point: full fine-tuning (d = ``FULL``) or a random-subspace method (DID, SAID) at dimension d,
on images (a small net, trained here with ``train.fit``) or on a GLUE task (a bench run: ``point_spec`` through
``runner.execute``).

A point needs only plain data: ``settings(...)`` is the identity of its score (every setting that changes one,
defaults resolved), so any process, or a Ray worker (``ray_points``), can score it.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from peftzoo.bench.tasks import ENV, TASKS, data_source, get_task
from peftzoo.intrinsic.d90 import FULL

IMAGE_TASKS = ("digits", "mnist", "fashion-mnist")
# defaults of the learning rates, per kind of task: (subspace lr, full fine-tuning lr)
DEFAULT_LR = {"image": (1e-2, 1e-3), "glue": (1e-2, 5e-5)}


def known_tasks() -> str:
    return f"{', '.join(IMAGE_TASKS)} (images), {', '.join(TASKS)} (GLUE)"


def task_name(task: str) -> str:
    if task in IMAGE_TASKS:
        return task
    try:
        return get_task(task).name
    except ValueError:
        raise ValueError(f"unknown task {task!r}; known tasks: {known_tasks()}") from None


def settings(task: str, method: str, epochs: int, batch_size: int, lr=None, full_lr=None, max_train=None,
             data_dir=None, net: str = "fc", init_from=None, model=None, random_init: bool = False, max_eval=None,
             max_len: int = 64) -> dict:
    """The plain-data identity of a point's score: every setting that changes one, defaults resolved (image tasks
    use ``net`` and ``init_from``; GLUE tasks ``model``, ``random_init``, ``max_eval`` and ``max_len``)."""
    from peftzoo import BEHAVIOUR_VERSION
    task = task_name(task)
    kind = "image" if task in IMAGE_TASKS else "glue"
    lr0, full0 = DEFAULT_LR[kind]
    cfg = {"task": task, "method": method, "epochs": epochs, "batch_size": batch_size, "lr": lr or lr0,
           "full_lr": full_lr or full0, "max_train": max_train, "behaviour": BEHAVIOUR_VERSION}
    if kind == "image":
        from peftzoo.intrinsic.images import image_source
        cfg = {**cfg, "net": net, "data": image_source(task, data_dir)}
        if init_from is not None:  # only then: the identity of scores from random inits is unchanged
            cfg["init_from"] = _init_sha(task, net, init_from)
        return cfg
    return {**cfg, "model": model, "random_init": random_init, "max_eval": max_eval, "max_len": max_len,
            "data": data_source(get_task(task), data_dir)}


def _init_sha(task: str, net: str, path) -> str:
    """The content hash of an ``--init-from`` file, after checking that it loads into ``net`` for ``task``."""
    from peftzoo.intrinsic.images import SIDE, build_net, load_init
    side = SIDE[task]
    return load_init(build_net(net, side, 0), path, what=f"the {net} net for {side}×{side} images")


@lru_cache(maxsize=2)
def _images(task: str, data, max_train):
    from peftzoo.intrinsic.images import load_images
    return load_images(task, data, max_train)


def _point(cfg: dict, d) -> tuple[str, dict, float]:
    """(method, hparams, lr) of a point: the baseline (d = ``FULL``, full fine-tuning) or the subspace method at d."""
    return (FULL, {}, cfg["full_lr"]) if d == FULL else (cfg["method"], {"d": d}, cfg["lr"])


def point_spec(cfg: dict, d, seed: int):
    """The bench ``RunSpec`` of a GLUE point: full fine-tuning when ``d`` is ``FULL``, else the method at d."""
    from peftzoo.bench.spec import RunSpec
    method, hp, lr = _point(cfg, d)
    return RunSpec(suite="d90", task=cfg["task"], method=method, seed=seed, hparams=hp, model=cfg["model"], lr=lr,
                   epochs=cfg["epochs"], batch_size=cfg["batch_size"], max_len=cfg["max_len"],
                   max_train=cfg["max_train"], max_eval=cfg["max_eval"], random_init=cfg["random_init"])


def evaluate_point(cfg: dict, d, seed: int, data_dir=None, progress: bool = False, init_from=None) -> float:
    """The best dev score of one run: full fine-tuning when ``d`` is ``FULL``, else the subspace method at d.
    ``data_dir`` (default: $PEFTZOO_DATA_DIR) must hold the same data as ``cfg["data"]`` says; ``init_from``: the
    θ0 file whose hash ``cfg["init_from"]`` is (image tasks)."""
    if cfg["task"] in IMAGE_TASKS:
        return image_score(cfg, d, seed, data_dir, init_from=init_from)
    from peftzoo.bench.runner import execute
    rec = execute(point_spec(cfg, d, seed), data_dir=data_dir, progress=progress)
    if not rec.ok:
        raise RuntimeError(f"{rec.method} d={d} seed={seed} failed: {rec.error}")
    return rec.history[rec.best_epoch - 1].score


def trivial_for(cfg: dict, data_dir=None) -> dict:
    """The trivial score (best constant prediction) of the split every point is scored on: the test images, or
    the first ``max_eval`` rows of each GLUE dev split. {"score", "answer", "note", "rows", ...}."""
    if cfg["task"] in IMAGE_TASKS:
        yt = _images(cfg["task"], data_dir, cfg["max_train"])[3].numpy()
        c = int(np.bincount(yt).argmax())
        return {"score": float(np.mean(yt == c)), "answer": c, "rows": len(yt),
                "note": f"always answering class {c}, the majority class of the {len(yt)} test images"}
    from peftzoo.bench.tasks import load_task, trivial_score
    task = get_task(cfg["task"])
    data = load_task(task, data_dir)
    labels = {s: data[s].labels[:cfg["max_eval"]] for s in task.dev}
    return {**trivial_score(task, labels), "rows": {s: len(v) for s, v in labels.items()}}


def image_score(cfg: dict, d, seed: int, data_dir=None, init_from=None) -> float:
    """The best test accuracy of one image point over its epochs (the net, its θ0 and the batch order from
    ``seed``), trained by the bench's loop."""
    import torch

    import peftzoo
    from peftzoo.bench.train import fit
    from peftzoo.intrinsic.images import accuracy, build_net, load_init
    x, y, xt, yt = _images(cfg["task"], data_dir, cfg["max_train"])
    torch.manual_seed(seed)
    net = build_net(cfg["net"], x.shape[-1], seed)
    if (init_from is None) != (cfg.get("init_from") is None):
        raise ValueError("an --init-from file and its hash in the settings go together (one is missing)")
    if init_from is not None:
        load_init(net, init_from, what=f"the {cfg['net']} net", sha=cfg["init_from"])
    method, hp, lr = _point(cfg, d)
    ad = peftzoo.attach(net, method, seed=seed, train=[], **hp)
    g = torch.Generator().manual_seed(seed)
    bs = cfg["batch_size"]

    def batches(epoch):
        perm = torch.randperm(len(y), generator=g)
        return [(x[perm[i:i + bs]], y[perm[i:i + bs]]) for i in range(0, len(y), bs)]
    res = fit(ad, batches, cfg["epochs"], lr, lambda: {"score": accuracy(ad.model, xt, yt)}, warmup=0.0)
    return max(h.score for h in res.history)


def ray_points(cfg: dict, data_dir, opts, bar=None, init_from=None):
    """A d90 ``evaluate_many`` that scores (d, seed) points as Ray tasks, yielding each as it finishes; ``opts``: a
    ``ray_executor.RayOptions``; ``bar`` (a tqdm bar, counting finished points) shows how many are in flight;
    ``init_from``: the θ0 file (a path every worker can read)."""
    from peftzoo.bench.ray_executor import imap, reason
    data_dir = str(data_dir or os.environ.get(ENV) or "") or None
    init_from = None if init_from is None else str(Path(init_from).resolve())  # workers may run elsewhere
    show = None if bar is None else lambda n: bar.set_postfix_str(f"running or queued {n}", refresh=True)  # noqa: E731

    def many(points):
        points = list(points)
        jobs = [(cfg, d, s, data_dir, False, init_from) for d, s in points]
        for i, got, err in imap(evaluate_point, jobs, opts, on_wait=show):
            d, s = points[i]
            if err is not None:
                raise RuntimeError(f"d90 point d={d} seed={s} failed on Ray: {reason(err, opts)}; the scores "
                                   "finished so far are saved, a rerun resumes from them")
            yield points[i], got[0]
    return many
