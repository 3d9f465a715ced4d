"""The Ray executor (``--executor ray``): every run is a Ray task; the driver writes each result as it arrives.

A run needs only plain data (a ``RunSpec``, or a d90 point's settings) and the data folder's path, so any node of a
Ray cluster can run it; its record travels back to the driver, which writes it through the same atomic run store
and run claims as the in-process executor (no shared file system needed). Resuming is the store's: a killed
driver, started again, submits only the runs without a valid record. A worker that dies mid-run (killed, out of
memory, node lost) is retried by Ray up to ``max_retries`` times; after that the run is recorded as failed with
the reason. Paths (``--data-dir``, ``--model``) are sent as given: they must resolve on every node.

Ray is optional: ``pip install 'peftzoo[ray]'``.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

from peftzoo.bench import claim, store
from peftzoo.bench.tasks import ENV

EXTRA = "pip install 'peftzoo[ray]'"


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a new local Ray instance; "auto": the running cluster; "ray://h:10001": client
    cpus_per_run: float = 1.0  # CPUs Ray reserves per run (also its torch threads): runs in parallel = CPUs / this
    gpus_per_run: float = 0.0  # GPUs per run: 1 puts each run on its own GPU (fractions share one)
    max_retries: int = 2  # re-runs of a run whose worker died; after that it is recorded as failed


def add_arguments(p) -> None:
    """The executor flags shared by ``bench`` and ``d90``."""
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help=f"local: in this process, one run after the other; ray: each run a Ray task ({EXTRA})")
    p.add_argument("--address", default=None,
                   help="Ray cluster to use: auto (the one `ray start` began), ray://HOST:10001; default: a new "
                        "local instance")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs per run (Ray)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs per run (Ray), e.g. 1")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a run whose Ray worker died")


def options(args) -> RayOptions | None:
    """The RayOptions of parsed flags (Ray connected), None for the local executor; a bad value is an error now."""
    if args.executor != "ray":
        given = [f for f, v, d in (("--address", args.address, None), ("--cpus-per-run", args.cpus_per_run, 1.0),
                                   ("--gpus-per-run", args.gpus_per_run, 0.0), ("--max-retries", args.max_retries, 2))
                 if v != d]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --executor ray")
        return None
    if not args.cpus_per_run > 0:
        raise ValueError(f"--cpus-per-run must be > 0 (got {args.cpus_per_run})")
    if not args.gpus_per_run >= 0:
        raise ValueError(f"--gpus-per-run must be >= 0 (got {args.gpus_per_run})")
    if args.max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0 (got {args.max_retries})")
    opts = RayOptions(args.address, args.cpus_per_run, args.gpus_per_run, args.max_retries)
    if getattr(args, "dry_run", False):
        require_ray()
    else:
        connect(opts)  # now: a missing Ray or a wrong --address is an error before anything is planned or written
    return opts


def require_ray():
    try:
        import ray
    except ImportError as e:
        raise RuntimeError(f"--executor ray needs Ray, which is not installed: {EXTRA} (or pip install ray)") from e
    return ray


def connect(opts: RayOptions):
    """Ray, initialised: an instance already initialised in this process is used as it is."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=opts.address, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RuntimeError(f"cannot connect to Ray at {opts.address or 'a new local instance'}: {e}") from e
    return ray


def _call(fn: Callable, args: tuple, threads: int):
    """Runs on a worker: ``fn(*args)`` with the run's thread count; returns (result, where it ran)."""
    import ray
    import torch
    torch.set_num_threads(threads)
    where = {"node": ray.util.get_node_ip_address(), "pid": os.getpid(),
             "logs": "the node's Ray session logs: /tmp/ray/session_latest/logs/worker-*-%d.out" % os.getpid()}
    return fn(*args), where


def imap(fn: Callable, jobs: list[tuple], opts: RayOptions, on_wait: Callable | None = None) -> Iterator:
    """``fn(*job)`` for every job as a Ray task; yields ``(index, (result, where) or None, error or None)`` in the
    order the tasks finish. ``error`` is a Ray error (a worker that died more than ``max_retries`` times, or an
    exception ``fn`` raised). Tasks not yet finished when the caller stops are cancelled."""
    ray = connect(opts)
    task = ray.remote(_call).options(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run,
                                     max_retries=opts.max_retries, retry_exceptions=False)
    threads = max(1, int(opts.cpus_per_run))
    fn_ref = ray.put(fn)
    index = {task.remote(fn_ref, tuple(job), threads): i for i, job in enumerate(jobs)}
    pending = list(index)
    try:
        while pending:
            if on_wait is not None:
                on_wait(len(pending))
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                try:
                    yield index[ref], ray.get(ref), None
                except ray.exceptions.RayError as e:
                    yield index[ref], None, e
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def reason(e: BaseException, opts: RayOptions) -> str:
    """One line for a run that Ray gave up on."""
    import ray
    if isinstance(e, ray.exceptions.RayTaskError):  # the run itself raised
        return f"{type(e.cause).__name__}: {e.cause}" if getattr(e, "cause", None) else str(e).splitlines()[-1]
    first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
    return (f"{type(e).__name__}: its Ray worker died and the {opts.max_retries} retries (--max-retries) died too; "
            f"last: {first[:300]}")


def _failed(spec, error: str):
    from peftzoo.bench.machine import versions
    from peftzoo.bench.record import RunRecord
    return RunRecord(spec, "failed", versions(), error=error)


def run_on_ray(todo: list, root, out, data_dir=None, device=None, quiet=False, retry_failed=False,
               opts: RayOptions = RayOptions(), executor: Callable | None = None) -> None:
    """The sweep's runs ``todo`` (RunSpecs bound to their data) as Ray tasks; records written here as they come,
    each run claimed by this driver first (``claim``) like the in-process sweep. Fills ``out`` (a sweep Outcome)."""
    from tqdm.auto import tqdm

    from peftzoo.bench.runner import execute
    _say = functools.partial(tqdm.write, file=sys.stderr)  # above the bar, as the in-process sweep prints
    data_dir = str(data_dir or os.environ.get(ENV) or "") or None  # the workers get the driver's data folder
    mine = []
    for spec in todo:
        path = store.run_path(root, spec.suite, spec.task, spec.run_id)
        if claim.for_run(spec, path, out.busy, retry_failed, None if quiet else _say):
            mine.append((spec, path))
    bar = tqdm(total=len(mine), desc=f"ray sweep ({out.done_before} of {out.total} done before)", disable=quiet)
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    show = lambda n: bar.set_postfix_str(  # noqa: E731
        f"ok {counts['ok']}, failed {counts['failed']}, running or queued {n}", refresh=True)
    jobs = [(spec, data_dir, device, False) for spec, _ in mine]
    released = set()
    try:
        for i, got, err in imap(executor or execute, jobs, opts, on_wait=show):
            spec, path = mine[i]
            if err is not None:
                rec = _failed(spec, reason(err, opts))
            else:
                rec, where = got
                if rec.run_id != spec.run_id:  # the worker saw other data (or none) under the same path
                    rec = _failed(spec, f"the worker's data differs from the driver's ({rec.spec.data} on "
                                        f"{where['node']}, {spec.data} here): every node needs the same data "
                                        f"folder; the worker said: {rec.error or 'ok'}")
                else:
                    rec = dataclasses.replace(rec, ray=where)
            store.write_record(path, rec, out.budget)
            claim.release(path)
            released.add(i)
            out.written.append(path)
            counts[rec.status] = counts.get(rec.status, 0) + 1
            bar.update(1)
            if not rec.ok:  # failed or skipped: said with -q too
                _say(f"{spec.label}: {rec.status}: {rec.why}")
        show(0)
    finally:
        bar.close()
        for i, (_, path) in enumerate(mine):
            if i not in released:
                claim.release(path)

