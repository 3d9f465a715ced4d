"""A task's splits read (``taskread``) and validated (``load_task``), the identity of its data (``data_source``) and
labels inferred from its train split (``with_labels``).

Every row of every split is checked (its label in the task's label set, its text columns present and not null);
bad rows are one error naming file, line and column, or, with ``skip_bad_rows``, left out and counted. Where the
files are: a task file's paths, or (GLUE) a folder under the data directory, or the hub (``located``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from peftzoo.bench.taskdef import Task, TaskError, complete
from peftzoo.bench.taskread import ENV, DataError, hub_rows, read_rows  # noqa: F401 (ENV, DataError: re-exported)


@dataclass
class Split:
    texts: list  # list of tuples of strings
    labels: np.ndarray
    skipped: int = 0  # bad rows skipped (only with skip_bad_rows)
    overlap: int = 0  # (dev and test splits) examples whose text is also a training example's


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    d = data_dir or os.environ.get(ENV)
    return Path(d).expanduser() if d else None


def located(task: Task, data_dir=None) -> tuple[Task, dict | None]:
    """(the task as read, {split: file}); files None: a hub dataset. A task whose files lie under the data
    directory is read there, or as its ``fallback`` (GLUE: the hub) when no data directory is given."""
    src = task.source
    if src.format == "hub":
        return task, None
    if not src.data_dir:
        return task, {s: Path(p) for s, p in task.splits}
    d = resolve_data_dir(data_dir)
    if d is None:
        if task.fallback is not None:
            return located(task.fallback)
        raise FileNotFoundError(f"{task.name}: its files lie under the data directory: pass --data-dir DIR or set "
                                f"{ENV}=DIR")
    if not d.is_dir():
        raise FileNotFoundError(f"data directory {d} does not exist (--data-dir or ${ENV})")
    train = dict(task.splits)["train"]
    for sub in src.data_dir:
        if (d / sub / train).exists():
            return task, {s: d / sub / p for s, p in task.splits}
    first = src.data_dir[0]
    raise FileNotFoundError(f"{task.name}: no {d}/{first}/{train} (the data directory must use the glue_data "
                            f"layout: <dir>/{first}/{', '.join(p for _, p in task.splits)})")


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_source(task: Task, data_dir=None) -> str:
    """What a run's data is, for its identity: ``local:<hash>`` (files under the data directory), ``files:<hash>``
    (a task file's files) of the split files' contents, or ``hub:<id>/<config>[@revision]``. A content hash, so the
    same files anywhere give the same runs and an edited file gives new ones."""
    t, files = located(task, data_dir)
    if files is None:
        s = t.source
        return f"hub:{s.hub}" + (f"/{s.config}" if s.config else "") + (f"@{s.revision}" if s.revision else "")
    h = hashlib.sha256()
    for s, p in files.items():
        if not p.is_file():
            raise FileNotFoundError(f"{t.name}: no {p} (the task's splits are {', '.join(map(str, files.values()))})")
        st = p.stat()
        h.update(f"{s}:{_digest(str(p), st.st_size, st.st_mtime_ns)};".encode())
    return f"{'local' if t.source.data_dir else 'files'}:{h.hexdigest()[:16]}"


def load_task(task: Task, data_dir=None, skip_bad_rows: bool = False) -> dict[str, Split]:
    """{"train": Split, "<dev split>": Split, ..., "<test split>": Split}, every row validated; dev and test
    splits count the examples they share with train (``Split.overlap``)."""
    t, files = located(task, data_dir)
    if files is None:
        out = {s: _split(rows, t, where, skip_bad_rows) for s, (rows, where) in hub_rows(t, t is not task).items()}
    else:
        out = {s: _split(read_rows(p, t, skip_bad_rows), t, str(p), skip_bad_rows) for s, p in files.items()}
    seen = set(out["train"].texts)
    for s, sp in out.items():
        if s != "train":
            sp.overlap = sum(x in seen for x in sp.texts)
    return out


def with_labels(task: Task) -> Task:
    """``task`` with its classes known: as given, else the train split's distinct labels, sorted (as numbers when
    they all are integers)."""
    if task.regression or task.labels is not None:
        return task
    t, files = located(task)
    if files is None or t.source.data_dir:
        raise TaskError(f"task {task.name}: give 'labels', the classes in order (they are inferred only from "
                        f"local files named in 'splits')")
    rows = read_rows(files["train"], t, True)[0]
    seen = sorted({label_text(y) for _, _, y in rows if y is not None and label_text(y) != ""},
                  key=lambda x: (0, int(x), "") if _is_int(x) else (1, 0, x))
    if len(seen) < 2:
        raise TaskError(f"task {task.name}: its train split ({files['train']}) has {len(seen)} distinct label "
                        f"value{'s' * (len(seen) != 1)} {seen}: a classifier needs two or more")
    return complete(task, tuple(seen))


def _is_int(x: str) -> bool:
    return x.lstrip("-").isdigit()


def label_text(x) -> str:
    """A raw label as the text its class is named by (1, 1.0 and "1" alike)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return x.strip() if isinstance(x, str) else str(x)


def _label(x, task: Task, index: dict):
    """The label value (class index, or a float for regression), or None when ``x`` is not in the label set."""
    if task.regression:
        if isinstance(x, bool) or x is None:
            return None
        try:
            v = float(x)
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) else None
    return index.get(label_text(x)) if x is not None else None


def label_set(task: Task) -> str:
    return "a number" if task.regression else ", ".join(task.labels)


def _col(task: Task, c) -> str:
    return f"column {c!r}" if isinstance(c, str) else f"column index {c}"


def _split(read, task: Task, where: str, skip: bool) -> Split:
    """The validated Split of ``read`` = (rows [(n, texts, raw label)], bad rows [(n, ", column ...: why" or
    ": why")], "line" or "row")."""
    rows, bad, unit = read
    bad, index = list(bad), {c: i for i, c in enumerate(task.labels or ())}
    texts, labels = [], []
    for n, tx, raw in rows:
        empty = [c for c, x in zip(task.text, tx) if x is None]
        if empty:
            bad.append((n, f", {_col(task, empty[0])}: no text (null)"))
            continue
        y = _label(raw, task, index)
        if y is None:
            bad.append((n, f", {_col(task, task.label)}: label {raw!r} is not in the label set ({label_set(task)})"))
            continue
        texts.append(tuple(x if isinstance(x, str) else str(x) for x in tx))
        labels.append(y)
    if bad and not skip:
        shown = "; ".join(f"{unit} {i}{w}" for i, w in sorted(bad)[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(f"{where}: {len(bad)} bad row{'s' * (len(bad) > 1)}: {shown}{more}. Fix the file, or "
                        f"pass --skip-bad-rows to leave them out (the count is recorded in every run)")
    if not labels:
        raise DataError(f"{where}: no usable data rows" + (f" ({len(bad)} bad rows skipped)" if bad else ""))
    return Split(texts, np.array(labels, dtype=np.float32 if task.regression else np.int64), skipped=len(bad))
