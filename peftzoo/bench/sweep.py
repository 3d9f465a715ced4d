"""The sweep executes the unfinished RunSpecs of a plan (``protocol.make_plan``), one JSON each."""
from __future__ import annotations

from pathlib import Path

from peftzoo.bench import store
from peftzoo.bench.runner import RunSpec, execute


def plan(preset: dict, tasks=None, methods=None, seeds=None) -> list[RunSpec]:
    """The preset's stage-1 runs (the LR sweep; see ``protocol``): the runs that need no selection first."""
    from peftzoo.bench.protocol import make_plan
    return make_plan(preset, tasks, methods, seeds).stage1()


def sweep(specs: list[RunSpec], root="results", data_dir=None, device=None, quiet=False, retry_failed=False,
          executor=execute) -> list[Path]:
    """Run every unfinished spec, writing one JSON each as it finishes. Returns the paths written."""
    from tqdm.auto import tqdm
    todo = [s for s in specs if not store.is_finished(store.run_path(root, s.suite, s.task, s.run_id), retry_failed)]
    written = []
    bar = tqdm(todo, desc=f"sweep ({len(specs) - len(todo)} of {len(specs)} done before)", disable=quiet)
    for spec in bar:
        bar.set_postfix_str(f"{spec.task} {spec.method} s{spec.seed}")
        rec = executor(spec, data_dir=data_dir, device=device, progress=not quiet)
        path = store.run_path(root, spec.suite, spec.task, spec.run_id)
        store.write_json(path, rec)
        written.append(path)
        if not quiet and rec["status"] != "ok":
            tqdm.write(f"{spec.task} {spec.method}: {rec['status']}: {rec.get('reason') or rec.get('error')}")
    return written
