"""`peftzoo d90`: train the full baseline (or take a given score), sweep d on a log grid, bisect, plot.

Every (d, seed) point is an independent run: ``evaluate_point(config, d, seed)`` needs only plain data, so an
executor (in-process, or Ray) can run it anywhere. ``config`` is also the identity of a cached score.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from peftzoo.bench.tasks import ENV, TASKS, data_source, get_task
from peftzoo.intrinsic.d90 import DEFINITIONS, Definition

IMAGE_TASKS = ("digits", "mnist", "fashion-mnist")
# defaults of the learning rates, per kind of task: (subspace lr, full fine-tuning lr)
DEFAULT_LR = {"image": (1e-2, 1e-3), "glue": (1e-2, 5e-5)}


def add_arguments(p):
    p.add_argument("--task", default="digits", help="digits (embedded), mnist, fashion-mnist, or a GLUE task")
    p.add_argument("--net", default="fc", choices=["fc", "lenet"], help="network for image tasks")
    p.add_argument("--model", default=None, help="transformers model for GLUE tasks (default: embedded MiniLM)")
    p.add_argument("--random-init", action="store_true", help="same architecture, random weights (GLUE tasks)")
    p.add_argument("--init-from", default=None, metavar="PATH",
                   help="image tasks: θ0 (and the full fine-tuning baseline's start) from this state_dict .pt file "
                        "of the same net, instead of the seed's random init; its content hash joins the identity")
    p.add_argument("--method", default="said", choices=["said", "did"])
    p.add_argument("--grid", type=int, nargs="+", help="coarse grid of d (default: log grid --dmin..--dmax)")
    p.add_argument("--dmin", type=int, default=10)
    p.add_argument("--dmax", type=int, default=10000)
    p.add_argument("--per-decade", type=int, default=2, help="points per decade of the coarse grid")
    p.add_argument("--fine-per-decade", type=int, default=4,
                   help="points per decade inside the coarse interval that holds a seed's crossing")
    p.add_argument("--max-ratio", type=float, default=1.3,
                   help="bisect each seed's bracket until hi/lo is at most this")
    p.add_argument("--bisect", type=int, default=8, help="at most this many bisection steps per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--baseline", type=float, nargs="+", default=None, metavar="SCORE",
                   help="full fine-tuning score(s), one per baseline seed (skips training it); several give the "
                        "informative check its CI")
    p.add_argument("--definition", nargs="+", choices=DEFINITIONS, default=["relative"],
                   help="the target: relative (threshold x full FT), gap (trivial + threshold x (full FT - "
                        "trivial)), absolute (--absolute-target); several are searched on the same points, the "
                        "first is the headline")
    p.add_argument("--threshold", type=float, default=0.9, help="the share of relative and gap (the 90 of d_90)")
    p.add_argument("--absolute-target", type=float, default=None, metavar="SCORE",
                   help="the fixed target score of --definition absolute (e.g. 0.9 accuracy, as Li et al.)")
    p.add_argument("--allow-uninformative", action="store_true",
                   help="search even when full FT does not clearly beat the trivial score; the result is then "
                        "marked not informative")
    p.add_argument("--baseline-only", action="store_true",
                   help="score full FT and the trivial score, report whether a search would be informative, stop")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="subspace learning rate")
    p.add_argument("--full-lr", type=float, default=None, help="full fine-tuning learning rate")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-eval", type=int, default=None)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/intrinsic")
    p.add_argument("--overwrite", action="store_true",
                   help="discard cached scores in --out that were computed with other settings")
    p.add_argument("--quiet", "-q", action="store_true")
    from peftzoo.bench.ray_executor import add_arguments as executor_arguments
    executor_arguments(p)  # with Ray: grid points x seeds run in parallel, each bisection step's seeds too


def known_tasks() -> str:
    return f"{', '.join(IMAGE_TASKS)} (images), {', '.join(TASKS)} (GLUE)"


def task_name(task: str) -> str:
    if task in IMAGE_TASKS:
        return task
    try:
        return get_task(task).name
    except ValueError:
        raise ValueError(f"unknown task {task!r}; known tasks: {known_tasks()}") from None


def validate(args) -> None:
    """Every argument checked before anything trains; a bad one is a ValueError naming its flag."""
    if task_name(args.task) not in IMAGE_TASKS and args.init_from is not None:
        raise ValueError(f"--init-from applies to image tasks ({', '.join(IMAGE_TASKS)}); for GLUE pick --model")
    positive = {"--dmin": args.dmin, "--dmax": args.dmax, "--per-decade": args.per_decade, "--epochs": args.epochs,
                "--fine-per-decade": args.fine_per_decade, "--batch-size": args.batch_size,
                "--max-train": args.max_train, "--max-eval": args.max_eval, "--max-len": args.max_len, "--lr": args.lr,
                "--full-lr": args.full_lr, **{"--baseline": b for b in args.baseline or []}}
    for flag, v in positive.items():
        if v is not None and not v > 0:  # `not >` also catches NaN
            raise ValueError(f"{flag} must be > 0 (got {v})")
    if not args.max_ratio > 1:
        raise ValueError(f"--max-ratio must be > 1 (got {args.max_ratio}): bisection stops at hi/lo <= it")
    definitions(args)  # a bad --definition / --threshold / --absolute-target combination is an error here
    if args.dmin > args.dmax:
        raise ValueError(f"--dmin {args.dmin} is larger than --dmax {args.dmax}")
    if args.grid is not None and min(args.grid) < 1:
        raise ValueError(f"--grid values must be >= 1 (got {min(args.grid)})")
    if args.bisect < 0:
        raise ValueError(f"--bisect must be >= 0 (got {args.bisect})")
    if not args.seeds:
        raise ValueError("--seeds needs at least one seed")


def definitions(args) -> list[Definition]:
    """The targets of the search, in the order given (``--definition``)."""
    if args.absolute_target is not None and "absolute" not in args.definition:
        raise ValueError("--absolute-target applies to --definition absolute only (add it: --definition absolute)")
    return [Definition(n, args.threshold, args.absolute_target if n == "absolute" else None)
            for n in dict.fromkeys(args.definition)]


def config(args) -> dict:
    """The plain-data identity of a score: every setting that changes one, defaults resolved."""
    task = task_name(args.task)
    kind = "image" if task in IMAGE_TASKS else "glue"
    lr, full_lr = DEFAULT_LR[kind]
    from peftzoo import BEHAVIOUR_VERSION
    cfg = {"task": task, "method": args.method, "epochs": args.epochs, "batch_size": args.batch_size,
           "lr": args.lr or lr, "full_lr": args.full_lr or full_lr, "max_train": args.max_train,
           "behaviour": BEHAVIOUR_VERSION}
    if kind == "image":
        from peftzoo.intrinsic.images import image_source
        cfg = {**cfg, "net": args.net, "data": image_source(task, args.data_dir)}
        if args.init_from is not None:  # only then: the identity of scores from random inits is unchanged
            cfg["init_from"] = _init_sha(task, args.net, args.init_from)
        return cfg
    return {**cfg, "model": args.model, "random_init": args.random_init, "max_eval": args.max_eval,
            "max_len": args.max_len, "data": data_source(get_task(task), args.data_dir)}


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
    """(method, hparams, lr) of a d90 point: the baseline (d = ``FULL``, full fine-tuning) or the subspace method
    at d."""
    from peftzoo.intrinsic.d90 import FULL
    return (FULL, {}, cfg["full_lr"]) if d == FULL else (cfg["method"], {"d": d}, cfg["lr"])


def point_spec(cfg: dict, d, seed: int):
    """The bench ``RunSpec`` of a GLUE d90 point: full fine-tuning when ``d`` is ``FULL``, else the method at d."""
    from peftzoo.bench.runner import RunSpec
    method, hp, lr = _point(cfg, d)
    return RunSpec(suite="d90", task=cfg["task"], method=method, seed=seed, hparams=hp, model=cfg["model"], lr=lr,
                   epochs=cfg["epochs"], batch_size=cfg["batch_size"], max_len=cfg["max_len"],
                   max_train=cfg["max_train"], max_eval=cfg["max_eval"], random_init=cfg["random_init"])


def evaluate_point(cfg: dict, d, seed: int, data_dir=None, progress: bool = False, init_from=None) -> float:
    """The best dev score of one run: full fine-tuning when ``d`` is ``FULL``, else the subspace method at d.
    ``data_dir`` (default: $PEFTZOO_DATA_DIR) must hold the same data as ``cfg["data"]`` says; ``init_from``: the
    θ0 file whose hash ``cfg["init_from"]`` is (image tasks)."""
    if cfg["task"] in IMAGE_TASKS:
        return _image_score(cfg, _point(cfg, d)[0], d, seed, data_dir, init_from=init_from)
    from peftzoo.bench.runner import execute
    rec = execute(point_spec(cfg, d, seed), data_dir=data_dir, progress=progress)
    if rec["status"] != "ok":
        raise RuntimeError(f"{rec['method']} d={d} seed={seed} failed: {rec.get('error')}")
    return rec["metrics_best"]["score"]


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


def _image_score(cfg: dict, method: str, d, seed: int, data_dir=None, init_from=None) -> float:
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
    _, hp, lr = _point(cfg, d)
    ad = peftzoo.attach(net, method, seed=seed, train=[], **hp)
    g = torch.Generator().manual_seed(seed)
    bs = cfg["batch_size"]

    def batches(epoch):
        perm = torch.randperm(len(y), generator=g)
        return [(x[perm[i:i + bs]], y[perm[i:i + bs]]) for i in range(0, len(y), bs)]
    res = fit(ad, batches, cfg["epochs"], lr, lambda: {"score": accuracy(ad.model, xt, yt)}, warmup=0.0)
    return max(h["metrics"]["score"] for h in res.history)


def run_d90(args):
    from tqdm.auto import tqdm

    from peftzoo.bench import ray_executor
    from peftzoo.intrinsic.d90 import Search, log_grid
    from peftzoo.intrinsic.report import plot, summary
    validate(args)
    ray = ray_executor.options(args)
    cfg = config(args)
    is_image = cfg["task"] in IMAGE_TASKS
    what = args.net if is_image else ("random-" if args.random_init else "") + Path(args.model or "minilm").name
    name = f"{args.task}-{what}-{args.method}".lower()
    out = Path(args.out)
    t0 = time.perf_counter()
    grid = args.grid or log_grid(args.dmin, args.dmax, args.per_decade)
    trivial = trivial_for(cfg, args.data_dir)
    meta = {"task": args.task, "net_or_model": what, "method": args.method, "grid": grid,
            "trivial_answer": trivial["answer"], "trivial_note": trivial["note"], "eval_rows": trivial["rows"],
            "args": {k: v for k, v in vars(args).items() if k not in ("fn", "cmd")},
            "command": "peftzoo d90 " + " ".join(_argv(args))}
    bar = tqdm(desc=f"d90 {name}", disable=args.quiet)
    search = Search(lambda d, s: evaluate_point(cfg, d, s, args.data_dir, progress=not args.quiet,
                                                init_from=args.init_from), args.baseline,
                    args.seeds, trivial=trivial["score"], definitions=definitions(args), path=out / f"{name}.json",
                    meta=meta, progress=bar, config=cfg, overwrite=args.overwrite,
                    allow_uninformative=args.allow_uninformative,
                    evaluate_many=ray and d90_points(cfg, args.data_dir, ray, bar, args.init_from))
    try:
        result = search.run(grid, args.bisect, whole_grid=ray is not None, fine_per_decade=args.fine_per_decade,
                            max_ratio=args.max_ratio, baseline_only=args.baseline_only)
    finally:
        bar.close()
    result = {**meta, **result, "wall_s": time.perf_counter() - t0}
    search.save(result)
    if not args.baseline_only:
        plot({name: result}, out / f"{name}.png", title=name)
    print(summary(name, result) + f"\nwall {result['wall_s']:.0f} s; wrote {out / (name + '.json')}"
          + ("" if args.baseline_only else " and .png"))
    return result


def d90_points(cfg: dict, data_dir, opts, bar=None, init_from=None):
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


def _argv(args) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k in ("fn", "cmd") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)]
    return out
