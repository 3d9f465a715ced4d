"""The in-domain pre-training corpus: every GLUE training text found (each sentence of a pair on its own), kept
disjoint from every text the downstream numbers are measured on, and a held-out slice for the MLM loss.

Removed, and counted in ``Corpus.report``:
- ``dev_test_exact``: texts equal (lower-cased, whitespace collapsed) to any dev or test text of any task found;
- ``dev_test_window``: texts of ``WINDOW`` words or more whose every ``WINDOW``-word window occurs in those dev/test
  texts (SST-2's training phrases are spans of longer sentences: a span of a dev sentence would be one);
- ``downstream``: the downstream task's training subset and validation rows (the exact rows every d90 run of that
  task uses, from ``split_indices``), and any text equal to one of them;
- ``duplicates``: repeats of a text already kept.
The disjointness is then checked again on the result (``verified_overlap``: 0, or ``build`` raises).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from peftzoo.bench.taskdata import located
from peftzoo.bench.tasks import get_task, load_task


def task_dir(task, data_dir) -> Path | None:
    """The folder of ``task``'s local files (None: the hub); FileNotFoundError when the data directory lacks them."""
    _, files = located(task, data_dir)
    return None if files is None else Path(files["train"]).parent

WINDOW = 6  # words: a corpus text this long or longer is removed when all its windows of this size are in dev/test
CORPUS_TASKS = ("CoLA", "SST-2", "MRPC", "RTE", "STS-B", "WNLI")  # the GLUE tasks with local data (shared/data)


@dataclass
class Corpus:
    train: list[str]  # pre-training texts
    held_out: list[str]  # texts the held-out MLM loss is measured on (disjoint from ``train``)
    report: dict = field(default_factory=dict)  # what was found, removed and kept (see the module docstring)


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def windows(words: list[str], n: int = WINDOW) -> set[tuple]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def unlabelled_texts(task, data_dir) -> list[str]:
    """The texts of a task's unlabelled local ``test.tsv`` (columns named as on the hub); [] when there is none."""
    root = task_dir(task, data_dir)
    path = None if root is None else Path(root) / "test.tsv"
    if path is None or not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    head = lines[0].rstrip("\r").split("\t")
    cols = [head.index(c) for c in (task.fallback or task).text if isinstance(c, str) and c in head]  # hub column names
    rows = [ln.rstrip("\r").split("\t") for ln in lines[1:] if ln.strip()]
    return [r[c] for r in rows for c in cols if c < len(r)]


def _spans(key: str, grams: set) -> bool:
    """Whether every ``WINDOW``-word window of a text of at least ``WINDOW`` words is among ``grams``."""
    words = key.split()
    return len(words) >= WINDOW and windows(words) <= grams


def downstream_rows(task: str, max_train: int | None, n_train: int) -> set[int]:
    """The training-split rows a d90 run of ``task`` trains and validates on: its ``RunSpec``'s split."""
    from peftzoo.bench.spec import RunSpec
    from peftzoo.bench.tasks import split_indices
    s = RunSpec(suite="d90", task=task, method="full", seed=0, max_train=max_train)
    idx, val = split_indices(n_train, s.max_train, s.val_fraction, s.val_cap, s.val_seed)
    return set(idx.tolist()) | set(val.tolist())


def available(tasks, data_dir=None) -> list[str]:
    """The ``tasks`` whose data is found: local folders under the data directory, or every one from the hub when
    no data directory is given."""
    out = []
    for t in tasks:
        try:
            task_dir(get_task(t), data_dir)
        except FileNotFoundError:
            continue
        out.append(get_task(t).name)
    return out


def build(downstream: str, max_train: int | None, data_dir=None, tasks=CORPUS_TASKS, held_out: int = 2000,
          seed: int = 0) -> Corpus:
    """The corpus for a downstream ``downstream`` task trained on ``max_train`` examples (see the module
    docstring), from those of ``tasks`` that are found; ``held_out`` texts (at most 5% of the kept ones) are set
    aside for the MLM loss."""
    down, tasks = get_task(downstream).name, available(tasks, data_dir)
    if down not in tasks:
        raise FileNotFoundError(f"the downstream task {down} has no data under the data directory "
                                f"({data_dir or 'PEFTZOO_DATA_DIR'}); its train.tsv and dev.tsv are needed")
    splits = {t: load_task(get_task(t), data_dir) for t in tasks}
    evaluated = {norm(x) for t in tasks for s, sp in splits[t].items() if s != "train" for row in sp.texts
                 for x in row} | {norm(x) for t in tasks for x in unlabelled_texts(get_task(t), data_dir)}
    used = downstream_rows(down, max_train, len(splits[down]["train"].labels))
    taken = {norm(x) for i in used for x in splits[down]["train"].texts[i]}
    kept, counts = _keep(splits, down, used, evaluated, taken)
    random.Random(seed).shuffle(kept)
    n_held = min(held_out, len(kept) // 20)
    out = Corpus(kept[n_held:], kept[:n_held])
    overlap = sum(norm(x) in evaluated or norm(x) in taken for x in kept)  # checked again on what is kept
    if overlap:
        raise RuntimeError(f"{overlap} corpus texts still equal a dev/test or downstream text: a bug in _keep")
    removed = {k: sum(c[k] for c in counts.values()) for k in counts[down]}
    found = {t: sum(len(r) for r in splits[t]["train"].texts) for t in tasks}
    out.report = {"tasks": tasks, "found": found, "removed": removed, "removed_by_task": counts, "kept": len(kept),
                  "train_texts": len(out.train), "held_out_texts": len(out.held_out),
                  "evaluated_texts": len(evaluated), "downstream": down, "downstream_rows": len(used),
                  "window_words": WINDOW, "verified_overlap": overlap}
    return out


def _keep(splits: dict, down: str, used: set, evaluated: set, taken: set) -> tuple[list[str], dict]:
    """(kept texts in order, {task: {reason: count}}) over every training text: see the module docstring."""
    grams = set().union(*(windows(x.split()) for x in evaluated))
    counts = {t: dict.fromkeys(("dev_test_exact", "dev_test_window", "downstream", "duplicates"), 0) for t in splits}
    kept, seen = [], set()
    for t, sp in splits.items():
        for i, row in enumerate(sp["train"].texts):
            for x in row:
                k = norm(x)
                why = ("downstream" if t == down and i in used else "dev_test_exact" if k in evaluated else
                       "downstream" if k in taken else "dev_test_window" if _spans(k, grams) else
                       "duplicates" if k in seen or not k else None)
                if why:
                    counts[t][why] += 1
                else:
                    seen.add(k)
                    kept.append(x)
    return kept, counts


def describe(r: dict) -> str:
    rm = r["removed"]
    return (f"corpus: {sum(r['found'].values()):,} training texts in {', '.join(r['tasks'])}; removed "
            f"{rm['dev_test_exact']:,} equal to one of the {r['evaluated_texts']:,} dev/test texts, "
            f"{rm['dev_test_window']:,} whose every {r['window_words']}-word window is in them, "
            f"{rm['downstream']:,} that are (or equal) one of {r['downstream']}'s {r['downstream_rows']:,} "
            f"downstream train/validation rows, {rm['duplicates']:,} duplicates; kept {r['train_texts']:,} for "
            f"pre-training and {r['held_out_texts']:,} held out; overlap left: {r['verified_overlap']}")
