"""`peftzoo d90`: its arguments, parsed and checked, and the search they ask for (train the full baseline or take
a given score, sweep d on a log grid, bisect, plot). Scoring one point is ``intrinsic.point``; the search,
``intrinsic.d90``; ``register(subparsers)`` adds the subcommand to peftzoo's CLI, as ``analysis.cli`` does.
"""
from __future__ import annotations

import time
from pathlib import Path

from peftzoo.intrinsic.d90 import DEFINITIONS, Definition
from peftzoo.intrinsic.point import IMAGE_TASKS, evaluate_point, ray_points, settings, task_name, trivial_for


def register(sub) -> None:
    p = sub.add_parser("d90", help="measure the intrinsic dimension d_90 of a task")
    add_arguments(p)
    p.set_defaults(fn=main)


def main(args) -> int:
    run_d90(args)
    return 0


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
    """The plain-data identity of a score (``point.settings``) from the parsed arguments."""
    return settings(args.task, args.method, args.epochs, args.batch_size, args.lr, args.full_lr, args.max_train,
                    args.data_dir, args.net, args.init_from, args.model, args.random_init, args.max_eval, args.max_len)


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
                    evaluate_many=ray and ray_points(cfg, args.data_dir, ray, bar, args.init_from))
    try:
        result = search.run(grid, args.bisect, whole_grid=ray is not None, fine_per_decade=args.fine_per_decade,
                            max_ratio=args.max_ratio, baseline_only=args.baseline_only)
    finally:
        bar.close()
    result = {**meta, **result, "wall_s": time.perf_counter() - t0}
    search.save(result)
    if not args.baseline_only:
        plot({name: result}, out / f"{name}.png", title=name)
    timed = search.point_wall
    print(summary(name, result) + f"\nwall {result['wall_s']:.0f} s this invocation, {sum(timed.values()):.0f} s "
          f"scoring {len(timed)} of its {len(search.scores)} points over all invocations (points cached before "
          f"timing was recorded are not counted); wrote {out / (name + '.json')}"
          + ("" if args.baseline_only else " and .png"))
    return result


def _argv(args) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k in ("fn", "cmd") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)]
    return out
