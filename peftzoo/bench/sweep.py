"""A preset becomes a list of RunSpecs (budgets solved once); the sweep executes the unfinished ones."""
from __future__ import annotations

from pathlib import Path

from peftzoo import adapters
from peftzoo.bench import store
from peftzoo.bench.baselines import BASELINES
from peftzoo.bench.budget import solve
from peftzoo.bench.runner import RunSpec, execute, get_task, load_model

SPEC_KEYS = ("epochs", "batch_size", "max_len", "max_train", "max_eval", "warmup", "weight_decay")


def plan(preset: dict, tasks=None, methods=None, seeds=None) -> list[RunSpec]:
    tasks = tasks or preset["tasks"]
    methods = methods or preset["methods"]
    seeds = seeds if seeds is not None else preset.get("seeds", [0])
    for m in methods:
        if m not in BASELINES:
            adapters.get(m)  # unknown method: clear error before any work
    for t in tasks:
        get_task(t)
    targets = preset.get("targets", ["query", "value"])
    budget = preset.get("budget")
    solved = {}
    if budget:
        model, _ = load_model(preset.get("model"), get_task(tasks[0]))
        for m in methods:
            if m in BASELINES:
                continue
            fixed = preset.get("hparams", {}).get(m, {})
            s = solve(model, m, int(budget), targets=targets, **fixed)
            skip = None if s.ok else (f"budget {budget} unreachable: nearest {s.kwargs} gives {s.achieved} "
                                      f"({s.rel_error:+.1%})")
            solved[m] = ({**fixed, **s.kwargs}, s.achieved, skip)
    specs = []
    for t in tasks:
        over = preset.get("task_overrides", {}).get(get_task(t).name, {})
        for m in methods:
            hp, achieved, skip = solved.get(m, (preset.get("hparams", {}).get(m, {}), None, None))
            cls = BASELINES.get(m) or adapters.get(m)
            lr = {**preset.get("lr", {}), **over.get("lr", {})}.get(m, cls.default_lr)
            common = {k: over.get(k, preset[k]) for k in SPEC_KEYS if k in preset or k in over}
            for seed in seeds:
                specs.append(RunSpec(suite=preset["suite"], task=get_task(t).name, method=m, seed=seed, hparams=hp,
                                     model=preset.get("model"), targets=targets if isinstance(targets, str)
                                     else tuple(targets), train=tuple(preset.get("train", ["classifier"])), lr=lr,
                                     budget=budget if m not in BASELINES else None, achieved=achieved,
                                     skip_reason=skip, **common))
    return specs


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
