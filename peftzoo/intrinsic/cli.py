"""`peftzoo d90`: train the full baseline (or take a given score), sweep d on a log grid, bisect, plot."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from peftzoo.bench.tasks import TASKS, get_task

IMAGE_TASKS = ("digits", "mnist", "fashion-mnist")


def add_arguments(p):
    p.add_argument("--task", default="digits", help="digits (embedded), mnist, fashion-mnist, or a GLUE task")
    p.add_argument("--net", default="fc", choices=["fc", "lenet"], help="network for image tasks")
    p.add_argument("--model", default=None, help="transformers model for GLUE tasks (default: embedded MiniLM)")
    p.add_argument("--random-init", action="store_true", help="same architecture, random weights (GLUE tasks)")
    p.add_argument("--method", default="said", choices=["said", "did"])
    p.add_argument("--grid", type=int, nargs="*", help="coarse grid of d (default: log grid --dmin..--dmax)")
    p.add_argument("--dmin", type=int, default=10)
    p.add_argument("--dmax", type=int, default=10000)
    p.add_argument("--per-decade", type=int, default=2)
    p.add_argument("--bisect", type=int, default=3, help="bisection steps between the bracketing d's")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--baseline", type=float, default=None, help="full fine-tuning score (skips training it)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="subspace learning rate")
    p.add_argument("--full-lr", type=float, default=None, help="full fine-tuning learning rate")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-eval", type=int, default=None)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/intrinsic")
    p.add_argument("--quiet", "-q", action="store_true")


def image_evaluator(args):
    import torch

    import peftzoo
    from peftzoo.adapters.base import AdapterConfig
    from peftzoo.bench.baselines import FullFinetune
    from peftzoo.bench.train import fit
    from peftzoo.intrinsic.images import accuracy, build_net, load_images
    x, y, xt, yt = load_images(args.task, args.data_dir, args.max_train)
    side = x.shape[-1]

    def run(method: str, d: int, seed: int) -> float:
        torch.manual_seed(seed)
        net = build_net(args.net, side, seed)
        if method == "full":
            ad, lr = FullFinetune(net, AdapterConfig(train=[])), args.full_lr or 1e-3
        else:
            ad, lr = peftzoo.attach(net, method, d=d, seed=seed, train=[]), args.lr or 1e-2
        g = torch.Generator().manual_seed(seed)

        def batches(epoch):
            perm = torch.randperm(len(y), generator=g)
            return [(x[perm[i:i + args.batch_size]], y[perm[i:i + args.batch_size]])
                    for i in range(0, len(y), args.batch_size)]
        res = fit(ad, batches, args.epochs, lr, lambda: {"score": accuracy(ad.model, xt, yt)}, warmup=0.0)
        return max(h["metrics"]["score"] for h in res.history)
    return run


def glue_evaluator(args):
    from peftzoo.bench.runner import RunSpec, execute

    def run(method: str, d: int, seed: int) -> float:
        spec = RunSpec(suite="d90", task=get_task(args.task).name, method=method, seed=seed,
                       hparams={} if method == "full" else {"d": d}, model=args.model,
                       lr=(args.full_lr or 5e-5) if method == "full" else (args.lr or 1e-2),
                       epochs=args.epochs, batch_size=args.batch_size, max_len=args.max_len, max_train=args.max_train,
                       max_eval=args.max_eval, random_init=args.random_init)
        rec = execute(spec, data_dir=args.data_dir, progress=not args.quiet)
        if rec["status"] != "ok":
            raise RuntimeError(f"{method} d={d} seed={seed} failed: {rec.get('error')}")
        return rec["metrics_best"]["score"]
    return run


def run_d90(args):
    from tqdm.auto import tqdm

    from peftzoo.intrinsic.d90 import Search, log_grid, plot
    is_image = args.task in IMAGE_TASKS
    if not is_image and get_task(args.task).name not in TASKS:
        raise ValueError(f"unknown task {args.task!r}")
    run = image_evaluator(args) if is_image else glue_evaluator(args)
    what = args.net if is_image else ("random-" if args.random_init else "") + Path(args.model or "minilm").name
    name = f"{args.task}-{what}-{args.method}".lower()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base_scores = None
    baseline = args.baseline
    if baseline is None:
        base_scores = [run("full", 0, s) for s in args.seeds]
        baseline = float(np.mean(base_scores))
    t_base = time.perf_counter() - t0
    grid = args.grid or log_grid(args.dmin, args.dmax, args.per_decade)
    meta = {"task": args.task, "net_or_model": what, "method": args.method, "grid": grid,
            "baseline_scores": base_scores, "baseline_wall_s": t_base, "args": vars(args),
            "command": "peftzoo d90 " + " ".join(_argv(args))}
    bar = tqdm(desc=f"d90 {name}", disable=args.quiet)
    search = Search(lambda d, s: run(args.method, d, s), baseline, args.seeds, path=out / f"{name}.json",
                    meta=meta, progress=bar)
    result = search.run(grid, args.bisect)
    bar.close()
    result = {**meta, **result, "wall_s": time.perf_counter() - t0}
    search.save(result)
    plot({name: result}, out / f"{name}.png", title=name)
    lo, hi = result["bracket"]
    print(f"{name}: full FT {baseline:.4f}; d90 = {result['d90']} (bracket {lo}..{hi}); "
          f"wall {result['wall_s']:.0f} s; wrote {out / (name + '.json')} and .png")
    return result


def _argv(args) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k in ("fn", "cmd") or v in (None, False):
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)]
    return out
