"""Benchmark tasks: the built-in GLUE tasks (package data, ``peftzoo/tasks/glue.json``), user tasks (a task file
or a preset's ``tasks`` entry: ``define``), their metrics and the trivial score.

A task is data (``taskdef.Task``); its splits are read and validated by ``taskdata``; its metric is computed by
``metrics``. GLUE's local layout is the one the GLUE download script writes: ``<data_dir>/<Task>/{train,dev}.tsv``,
tab-separated, quoting off (quotes are literal characters in GLUE text), CoLA without a header, MRPC starting with
a UTF-8 BOM; without a data directory the hub copy (``nyu-mll/glue``) is read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from peftzoo.bench.taskdata import (ENV, DataError, Split, _digest, data_source, load_task,  # noqa: F401
                                    resolve_data_dir, with_labels)
from peftzoo.bench.taskdef import Task, TaskError, alias, builtin, from_dict  # noqa: F401

TASKS = builtin()
ALIASES = {alias(k): k for k in TASKS}


def get_task(name: str) -> Task:
    """A built-in task by name (SST-2, sst2 and sst_2 alike)."""
    key = alias(name)
    if key not in ALIASES:
        raise ValueError(f"unknown task {name!r}; GLUE tasks: {', '.join(TASKS)}")
    return TASKS[ALIASES[key]]


def define(entries, where: str, base: Path | None = None, taken=()) -> dict[str, Task]:
    """{name: Task} of task definitions (JSON objects), checked, labels inferred where not given; a name used
    twice, or by a built-in task, or in ``taken`` (already defined), is an error."""
    out = {}
    for i, e in enumerate(entries):
        here = f"{where} task {i + 1}" if len(entries) > 1 else where
        t = with_labels(from_dict(e, here, base))
        clash = ("a built-in GLUE task" if alias(t.name) in ALIASES else "defined twice" if t.name in out
                 else "already defined (another task file or the preset)" if t.name in taken else None)
        if clash:
            raise TaskError(f"{here}: duplicate task name {t.name!r} ({clash}): give the task another 'name'")
        out[t.name] = t
    return out


def load_task_file(path, taken=()) -> dict[str, Task]:
    """The tasks of a task file (one JSON object or a list of them); relative paths resolve against its folder."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"--task-file {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise TaskError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    entries = d if isinstance(d, list) else [d]
    if not entries:
        raise TaskError(f"{path}: an empty list: a task file holds one task (an object) or a list of them")
    return define(entries, str(path), path.resolve().parent, taken)


def compute_metrics(task: Task, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics and ``score``, its number (GLUE's: the formulas of the ``evaluate`` glue metric)."""
    return task.scorer.compute(preds, labels)


REGRESSION_TRIVIAL = ("a constant prediction has no correlation with the labels (Pearson and Spearman are undefined "
                      "for zero variance); 0 is used")


def trivial_score(task: Task, labels) -> dict:
    """The best ``score`` a constant prediction gets: what a model that learnt nothing scores. ``labels``: one
    evaluation split's labels, or {split: labels} (the same constant on every split, scores averaged as the bench
    averages them). Classification tries every class as the constant answer: the majority class for accuracy,
    0 for MCC, for F1+accuracy (MRPC, QQP) the better of the two answers. Regression: 0, see ``REGRESSION_TRIVIAL``.
    Returns {"score", "answer" (the constant, or None), "metrics" (its metrics on each split), "note"}."""
    import warnings
    splits = labels if isinstance(labels, dict) else {"eval": labels}
    if task.regression:
        return {"score": 0.0, "answer": None, "metrics": {}, "note": REGRESSION_TRIVIAL}
    best = None
    for c in range(task.num_labels):
        with warnings.catch_warnings():  # sklearn warns that F1 / MCC of a constant prediction are degenerate
            warnings.simplefilter("ignore")
            ms = {s: compute_metrics(task, np.full(len(y), c), np.asarray(y)) for s, y in splits.items()}
        score = float(np.mean([m["score"] for m in ms.values()]))
        if best is None or score > best["score"]:
            best = {"score": score, "answer": _answer(task, c), "metrics": ms}
    return {**best, "note": f"always answering {best['answer']!r}, the best constant for {task.metric}"}


def _answer(task: Task, c: int):
    """How the constant answer is named: GLUE's integer classes as integers (as always), others by their label."""
    return c if task.labels == tuple(map(str, range(len(task.labels)))) else task.labels[c]


def split_indices(n: int, max_train: int | None, fraction: float = 0.1, cap: int = 1000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training subset, validation) indices into a train split of ``n`` examples; disjoint, fixed by ``seed``."""
    n_val = min(cap, int(round(fraction * n)))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"a train split of {n} examples leaves no validation or no training data "
                         f"(fraction {fraction}, cap {cap})")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val:][:max_train], perm[:n_val]
