"""A benchmark task as data: ``Task``, read from JSON (a task file, a preset's ``tasks`` entry, or the built-in
GLUE entries, package data ``peftzoo/tasks/glue.json``) and checked in full, every error naming where and the fix.

The keys (docs/own-task.md has the complete example)::

    name       how tables, folders and --tasks name it (letters, digits, "_", ".", "-")
    source     "csv", "tsv", "json", "jsonl", "parquet" (local files; default: the train file's extension), or
               {"format": ..., "header": true, "quoting": "csv" | "none"} for delimited files, or
               {"hub": "owner/dataset", "config": ..., "revision": ...} for a Hugging Face hub dataset
    splits     {"train": ..., "dev": ..., "test": ...}: file paths (relative to the task file's folder) or hub split
               names; "train" and a "dev" (or several "dev_*") are required, "test" / "test_*" optional
    text       the one or two text columns (a headerless file: 0-based column indices)
    label      the label column
    labels     the classes in index order (string labels); omitted: the train split's distinct labels, sorted
    regression true: labels are numbers, one output
    metric     accuracy, macro_f1, f1, mcc, f1_accuracy, pearson, spearman, pearson_spearman (bench.metrics)
    positive   the positive class of f1 / f1_accuracy (default: the second of two classes)

Built-in entries may also give ``source.data_dir`` (the files lie under --data-dir / $PEFTZOO_DATA_DIR, in the
first of these folders that holds the train file) and ``fallback`` (keys replaced when no data directory is given:
GLUE's hub copy, with its own columns and split names).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from peftzoo.bench.metrics import METRICS, NEEDS_POSITIVE, Metric, canonical, is_regression

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
KEYS = ("name", "source", "splits", "text", "label", "labels", "regression", "metric", "positive", "fallback")
SOURCE_KEYS = ("format", "header", "quoting", "data_dir", "hub", "config", "revision")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TaskError(ValueError):
    """A task definition that cannot be used: the message names its file, the task and the key."""


@dataclass(frozen=True)
class Source:
    format: str  # csv, tsv, json, jsonl, parquet (local files) or "hub"
    header: bool = True  # csv / tsv: the first line names the columns (else columns are 0-based indices)
    quoting: str = "csv"  # csv / tsv: "csv" (double quotes, RFC 4180) or "none" (quotes are text, as in GLUE's TSVs)
    data_dir: tuple[str, ...] = ()  # the files lie under the data directory, in the first of these folders
    hub: str | None = None  # a hub dataset id (format "hub")
    config: str | None = None  # its config name
    revision: str | None = None  # its revision (tag, branch or commit), part of the data's identity

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v != SOURCE_DEFAULTS.get(k) and not (k == "data_dir" and not v)}


SOURCE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Source)}


@dataclass(frozen=True)
class Task:
    name: str  # tables, folders and --tasks name it so
    splits: tuple[tuple[str, str], ...]  # (split, file path or hub split name): train, dev / dev_*, test / test_*
    text: tuple  # the one or two text columns (names; 0-based indices in a headerless file)
    label: str | int  # the label column
    labels: tuple[str, ...] | None  # classes in index order; None: regression, or not yet inferred
    metric: str  # bench.metrics name: what the task's ``score`` is
    source: Source  # where the splits are read from
    regression: bool = False  # real-valued labels, one output
    positive: str | None = None  # the positive class of f1 / f1_accuracy
    fallback: Task | None = None  # the task read instead when ``source`` needs a data directory and none is given

    @property
    def dev(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.splits if s.startswith("dev"))

    @property
    def test(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.splits if s.startswith("test"))

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.splits)

    @property
    def num_labels(self) -> int:
        if self.regression:
            return 1
        if self.labels is None:
            raise TaskError(f"task {self.name}: its labels are not known yet (they are inferred when its file is "
                            f"loaded: taskdata.with_labels)")
        return len(self.labels)

    @property
    def scorer(self) -> Metric:
        pos = self.labels.index(self.positive) if self.positive is not None else 1
        return Metric(self.metric, pos, self.num_labels)

    def to_dict(self) -> dict:
        """The task as JSON (what a run records in its spec, and ``from_dict`` reads back)."""
        d = {"name": self.name, "source": self.source.to_dict(), "splits": dict(self.splits),
             "text": list(self.text), "label": self.label, "labels": None if self.labels is None else list(self.labels),
             "regression": self.regression, "metric": self.metric}
        if self.positive is not None:
            d["positive"] = self.positive
        if self.fallback is not None:
            d["fallback"] = self.fallback.to_dict()
        return d


def identity(d: dict | None) -> dict | None:
    """A recorded task's part of a run's identity: all of it but where its files are (their contents are hashed
    into the run's ``data``), so the same files anywhere give the same runs."""
    if d is None:
        return None
    d = {**d, "source": dict(d.get("source", {}))}
    if d["source"].get("format") != "hub":
        d["splits"] = sorted(d.get("splits", {}))
        d["source"].pop("data_dir", None)
    if d.get("fallback"):
        d["fallback"] = identity(d["fallback"])
    return d


def from_dict(d, where: str = "task", base: Path | None = None, parent: dict | None = None,
              check_files: bool = True) -> Task:
    """The task ``d`` defines, checked; relative file paths resolve against ``base`` (the folder of the file that
    gives it; default: the current folder) and must exist (unless not ``check_files``: a recorded task, read on
    another machine). ``parent``: the task a ``fallback`` replaces keys of."""
    if not isinstance(d, dict):
        raise TaskError(f"{where}: a task is a JSON object, not {json.dumps(d)[:60]}")
    _check_keys(d, KEYS, where)
    d = {**(parent or {}), **d, "fallback": d.get("fallback")}
    name = d.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise TaskError(f"{where}: 'name' must be a name of letters, digits, '_', '.', '-' (it names the results "
                        f"folder), got {json.dumps(name)}")
    where = f"{where} ({name})" if name not in where else where
    splits = d.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(v, str) and v for v in splits.values()):
        raise TaskError(f"{where}: 'splits' must be an object of split name: file path (or hub split name), e.g. "
                        f'{{"train": "train.csv", "dev": "dev.csv"}}; got {json.dumps(splits)}')
    _check_split_names(list(splits), where)
    splits = dict(sorted(splits.items(), key=lambda kv: (_order(kv[0]), kv[0])))  # the same order, however written
    source = _source(d.get("source"), splits, where)
    headerless = source.format in ("csv", "tsv") and not source.header
    text, label = _columns(d, headerless, where)
    regression = d.get("regression", False)
    if not isinstance(regression, bool):
        raise TaskError(f"{where}: 'regression' must be true or false, got {json.dumps(regression)}")
    labels = _labels(d.get("labels"), regression, where)
    metric = _metric(d.get("metric"), regression, where)
    positive = _positive(d.get("positive"), metric, labels, where)
    if source.format != "hub" and not source.data_dir:
        splits = {s: str(_path(p, base, where, s, check_files)) for s, p in splits.items()}
    task = Task(name, tuple(splits.items()), text, label, labels, metric, source, regression, positive)
    if d["fallback"] is not None:
        own = {k: v for k, v in d.items() if k != "fallback"}
        fb = from_dict(d["fallback"], f"{where}: 'fallback'", base, own, check_files)
        task = dataclasses.replace(task, fallback=fb)
    return task


def complete(task: Task, labels: tuple) -> Task:
    """``task`` with the classes ``labels`` (inferred from its data), its positive class checked against them."""
    where = f"task {task.name} (labels inferred from its train split: {', '.join(labels)})"
    return dataclasses.replace(task, labels=labels, positive=_positive(task.positive, task.metric, labels, where))


def _check_keys(d: dict, known, where: str) -> None:
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"
            raise TaskError(f"{where}: unknown key {k!r}{hint}")


def _order(split: str) -> int:
    return 0 if split == "train" else 1 if split.startswith("dev") else 2


def _check_split_names(names: list, where: str) -> None:
    bad = [s for s in names if s != "train" and not re.match(r"^(dev|test)(_[A-Za-z0-9]+)?$", s)]
    if bad or "train" not in names or not any(s.startswith("dev") for s in names):
        raise TaskError(f"{where}: 'splits' needs \"train\" and \"dev\" (several dev splits: \"dev_<x>\"), and may "
                        f"give \"test\" (or \"test_<x>\"); got {', '.join(map(repr, names))}")


def _source(s, splits: dict, where: str) -> Source:
    if s is None:  # the train file's extension
        ext = Path(splits["train"]).suffix.lstrip(".").lower()
        if ext not in FORMATS:
            raise TaskError(f"{where}: no 'source', and the train file's extension {ext!r} is not one of "
                            f"{', '.join(FORMATS)}: give \"source\": \"csv\" (or tsv, json, jsonl, parquet)")
        s = ext
    if isinstance(s, str):
        s = {"format": s}
    if not isinstance(s, dict):
        raise TaskError(f"{where}: 'source' must be a format name or an object, got {json.dumps(s)}")
    _check_keys(s, SOURCE_KEYS, f"{where}: 'source'")
    s = {"format": "hub", **s} if "hub" in s else s
    fmt = s.get("format")
    if fmt not in (*FORMATS, "hub"):
        raise TaskError(f"{where}: 'source.format' is {json.dumps(fmt)}; one of {', '.join(FORMATS)} (local files), "
                        f"or give \"hub\": \"owner/dataset\"")
    if fmt == "hub" and not (isinstance(s.get("hub"), str) and s["hub"]):
        raise TaskError(f"{where}: 'source.hub' must be a dataset id such as \"owner/dataset\"")
    if s.get("quoting", "csv") not in ("csv", "none"):
        raise TaskError(f"{where}: 'source.quoting' is {json.dumps(s['quoting'])}; \"csv\" (double quotes) or "
                        f"\"none\" (quotes are part of the text)")
    if not isinstance(s.get("header", True), bool):
        raise TaskError(f"{where}: 'source.header' must be true or false")
    dd = s.get("data_dir", [])
    if not isinstance(dd, list) or not all(isinstance(x, str) for x in dd):
        raise TaskError(f"{where}: 'source.data_dir' must be a list of folders under the data directory")
    return Source(**{**s, "data_dir": tuple(dd)})


def _columns(d: dict, headerless: bool, where: str):
    kind = int if headerless else str
    what = "0-based column indices (the file has no header)" if headerless else "column names"
    text = d.get("text")
    text = [text] if isinstance(text, (str, int)) and not isinstance(text, bool) else text
    if not isinstance(text, list) or not 1 <= len(text) <= 2 or not all(type(c) is kind for c in text):
        raise TaskError(f"{where}: 'text' must be one or two {what}, got {json.dumps(d.get('text'))}")
    label = d.get("label")
    if type(label) is not kind:
        raise TaskError(f"{where}: 'label' must be one of the {what}, got {json.dumps(label)}")
    if headerless and min(*text, label) < 0:
        raise TaskError(f"{where}: column indices are >= 0")
    return tuple(text), label


def _labels(labels, regression: bool, where: str):
    if labels is None:
        return None
    if regression:
        raise TaskError(f"{where}: a regression task has no 'labels' (its labels are numbers): drop one of them")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, (str, int)) for x in labels):
        raise TaskError(f"{where}: 'labels' must list at least two classes (strings), got {json.dumps(labels)}")
    labels = tuple(str(x) for x in labels)
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise TaskError(f"{where}: 'labels' lists {', '.join(map(repr, dup))} more than once")
    return labels


def _metric(m, regression: bool, where: str) -> str:
    m = m if m is not None else ("pearson_spearman" if regression else "accuracy")
    try:
        m = canonical(m)
    except (ValueError, TypeError):
        raise TaskError(f"{where}: 'metric' is {json.dumps(m)}; one of {', '.join(METRICS)}") from None
    if is_regression(m) != regression:
        fit = [k for k in METRICS if is_regression(k) == regression]
        raise TaskError(f"{where}: metric {m!r} is for {'regression' if is_regression(m) else 'classification'}, "
                        f"this task is {'regression' if regression else 'classification'}: use one of {', '.join(fit)}")
    return m


def _positive(pos, metric: str, labels, where: str):
    if pos is None:
        if metric in NEEDS_POSITIVE and labels is not None:
            if len(labels) != 2:
                raise TaskError(f"{where}: metric {metric!r} needs 'positive', the class its F1 is of (one of "
                                f"{', '.join(labels)})")
            return labels[1]
        return None
    if metric not in NEEDS_POSITIVE:
        raise TaskError(f"{where}: 'positive' applies to the metrics {', '.join(NEEDS_POSITIVE)}, not {metric!r}")
    pos = str(pos)
    if labels is not None and pos not in labels:
        raise TaskError(f"{where}: 'positive' {pos!r} is not one of the labels ({', '.join(labels)})")
    return pos


def _path(p: str, base: Path | None, where: str, split: str, check: bool) -> Path:
    path = Path(p).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    if not check:
        return path
    if not path.is_file():
        rel = f" (relative paths are read from {base}, the folder of the file that defines the task)" if base else ""
        raise TaskError(f"{where}: split {split!r}: no file {path}{rel}")
    return path.resolve()


@lru_cache(maxsize=1)
def builtin() -> dict[str, Task]:
    """The built-in tasks (GLUE), by name: package data ``peftzoo/tasks/glue.json``."""
    res = resources.files("peftzoo") / "tasks" / "glue.json"
    entries = json.loads(res.read_text(encoding="utf-8"))
    return {t.name: t for t in (from_dict(e, f"peftzoo/tasks/glue.json task {i + 1}") for i, e in enumerate(entries))}


def alias(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


@lru_cache(maxsize=256)
def from_json(text: str) -> Task:
    """A recorded task (``Task.to_dict`` as canonical JSON), read back; cached."""
    return from_dict(json.loads(text), "a run's recorded task", check_files=False)
