"""Reading a split's rows, each numbered by its line (or row) so every problem can name it: CSV / TSV read here,
JSON / JSONL / Parquet through ``datasets.load_dataset(<kind>, data_files=...)``, a hub dataset through
``datasets.load_dataset(id, config)``. ``taskdata`` validates the rows and makes them a ``Split``.

A reader returns (rows [(number, texts, raw label)], bad rows [(number, ", column ...: why" or ": why")], "line" or
"row"): the bad rows are those it cannot even split into columns (wrong column count, not UTF-8).
"""
from __future__ import annotations

import contextlib
import csv
import io
from functools import lru_cache
from pathlib import Path

from peftzoo.bench.taskdef import Task

ENV = "PEFTZOO_DATA_DIR"


class DataError(ValueError):
    """A data file that cannot be used as it is: the message names the file and the line."""


def read_rows(path: Path, task: Task, skip: bool = False):
    """(rows [(line or row number, texts, raw label)], bad rows [(number, why)], "line" or "row"); cached per file
    (its path, size and modification time) and task."""
    st = Path(path).stat()
    return _read_cached(str(path), st.st_size, st.st_mtime_ns, task.source, task.text, task.label, task.name, skip)


@lru_cache(maxsize=8)
def _read_cached(path: str, size: int, mtime_ns: int, source, text, label, name: str, skip: bool):
    path, fmt = Path(path), source.format
    if fmt in ("csv", "tsv"):
        return _delimited(path, source, text, label, name, skip)
    return _table(path, fmt, text, label, name)


def _decode(raw: bytes, path: Path, skip: bool, can_skip: bool):
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if skip and can_skip:
            return None
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line} (byte offset {e.start}) is not UTF-8 ({e.reason}); re-encode the "
                        f"file" + (", or pass --skip-bad-rows" if can_skip else "")) from None


def _delimited(path: Path, src, text_cols, label_col, name: str, skip: bool):
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    sep, bad = "\t" if src.format == "tsv" else ",", []
    text = _decode(raw, path, skip, src.quoting == "none")
    rows = _plain_rows(raw, text, sep, bad) if src.quoting == "none" else _quoted_rows(text, sep, path)
    if src.header:
        head = rows[0][1] or []
        rows = rows[1:]
        col = {c: i for i, c in enumerate(head)}
        missing = [c for c in (*text_cols, label_col) if c not in col]
        if missing:
            raise DataError(f"{path} lacks columns {missing} (has {head}): is it {name}'s labelled split?")
        ti, li, need = [col[c] for c in text_cols], col[label_col], len(head)
    else:
        ti, li = list(text_cols), label_col
        need = max(*ti, li) + 1
    out = []
    for i, r in rows:
        if r is None:
            continue
        if len(r) < need or (src.header and len(r) > need):
            bad.append((i, f": {len(r)} columns, {'the header has' if src.header else 'needs at least'} {need}"))
            continue
        out.append((i, tuple(r[j] for j in ti), r[li]))
    return out, bad, "line"


def _plain_rows(raw: bytes, text: str | None, sep: str, bad: list) -> list:
    """One row per line, split on ``sep``, quotes as text (GLUE); undecodable lines (text None) are bad rows."""
    if text is not None:
        lines = text.split("\n")
    else:
        lines = []
        for i, b in enumerate(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
            try:
                lines.append(b.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.append((i, f": not UTF-8 ({e.reason})"))
                lines.append(None)
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    return [(i, None if ln is None else ln.removesuffix("\r").split(sep)) for i, ln in enumerate(lines, 1)]


def _quoted_rows(text: str, sep: str, path: Path) -> list:
    """Standard CSV quoting (a quoted field may span lines): each row numbered by the line it starts on; blank
    lines are not rows."""
    reader, out, start = csv.reader(io.StringIO(text, newline=""), delimiter=sep), [], 1
    try:
        for fields in reader:
            if fields:
                out.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}") from None
    return out


def _table(path: Path, fmt: str, text_cols, label_col, name: str):
    """JSON / JSONL / Parquet rows through ``datasets``; JSONL rows are numbered by their line."""
    lines = None
    if fmt in ("json", "jsonl"):
        raw = path.read_bytes()
        if not raw.strip():
            raise DataError(f"{path}: empty file")
        _decode(raw, path, False, False)
        if fmt == "jsonl":
            lines = [i for i, b in enumerate(raw.split(b"\n"), 1) if b.strip()]
    cols = _load_dataset("json" if fmt in ("json", "jsonl") else "parquet", path, fmt)
    missing = [c for c in (*text_cols, label_col) if c not in cols]
    if missing:
        raise DataError(f"{path} lacks columns {missing} (has {list(cols)}): is it {name}'s labelled split?")
    return _rows(cols, text_cols, label_col, lambda i: lines[i] if lines and i < len(lines) else i + 1), [], \
        "line" if lines else "row"


def _rows(cols: dict, text_cols, label_col, number) -> list:
    out = []
    for i, (*tx, y) in enumerate(zip(*[cols[c] for c in (*text_cols, label_col)])):
        out.append((number(i), tuple(tx), y))
    return out


def _load_dataset(kind: str, path: Path, fmt: str) -> dict:
    from datasets import load_dataset
    try:
        with _quiet_datasets():
            ds = load_dataset(kind, data_files={"data": str(path)}, split="data")
    except Exception as e:  # pyarrow / datasets parse errors
        raise DataError(f"{path}: cannot be read as {fmt} ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return ds.to_dict()


def hub_rows(t: Task, fallback: bool) -> dict:
    """{split: (rows, where)} of a hub dataset; ClassLabel ints are named by their class names when those are the
    task's labels (GLUE's MNLI), else read as the integers they are."""
    src = t.source
    try:
        from datasets import load_dataset
        with _quiet_datasets():
            ds = load_dataset(src.hub, src.config, revision=src.revision)
    except Exception as e:  # no network, no cache
        if fallback:
            raise RuntimeError(
                f"cannot load GLUE {t.name}: no local data directory was given and the Hugging Face hub is not "
                f"reachable ({type(e).__name__}). Pass --data-dir DIR or set {ENV}=DIR, DIR holding the glue_data "
                f"layout (DIR/{t.name}/train.tsv, dev.tsv).") from e
        raise RuntimeError(f"cannot load hub dataset {src.hub} ({src.config}) for task {t.name}: "
                           f"{type(e).__name__}: {str(e)[:200]}. Check 'source.hub' / 'source.config', the network, "
                           f"or the Hugging Face cache") from e
    out = {}
    for s, hub_split in t.splits:
        if hub_split not in ds:
            raise DataError(f"task {t.name}: hub dataset {src.hub} has no split {hub_split!r} (it has "
                            f"{', '.join(ds)}): fix 'splits.{s}'")
        part = ds[hub_split]
        missing = [c for c in (*t.text, t.label) if c not in part.column_names]
        if missing:
            raise DataError(f"hub {src.hub} {hub_split} lacks columns {missing} (has {part.column_names})")
        cols = {c: part[c] for c in (*t.text, t.label)}
        names = getattr(part.features[t.label], "names", None)
        if names and t.labels and set(names) <= set(t.labels):
            cols[t.label] = [names[y] if isinstance(y, int) and 0 <= y < len(names) else y for y in cols[t.label]]
        out[s] = ((_rows(cols, t.text, t.label, lambda i: i + 1), [], "row"), f"hub {src.hub} {src.config} {hub_split}")
    return out


@contextlib.contextmanager
def _quiet_datasets():
    """datasets' progress bars and info logging off inside the block; as they were after it."""
    from datasets.utils import logging as ds_logging
    level, bars = ds_logging.get_verbosity(), ds_logging.is_progress_bar_enabled()
    ds_logging.set_verbosity_error()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if bars:
            ds_logging.enable_progress_bar()

