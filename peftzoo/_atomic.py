"""Atomic file writes, the one implementation every output of peftzoo goes through (adapter files, run records,
leaderboards, d90 curves): a temporary file in the same folder, written, fsynced and renamed over the target, so a
reader sees the old file or the whole new one. Depends on nothing in peftzoo.
"""
from __future__ import annotations

import errno
import io
import json
import math
import os
import tempfile
from pathlib import Path


class OutputError(RuntimeError):
    """An output file could not be written; the previous version of that file (if any) is untouched."""


def plain(obj, where: str = ""):
    """JSON-ready copy: NaN/inf -> None (strict JSON has no NaN), numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v, where) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)  # Paths and the like


def dumps(obj) -> str:
    return json.dumps(plain(obj), indent=2, sort_keys=True, allow_nan=False)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes(path: Path, data: bytes, write_all=_write_all) -> None:
    """Temp file in the same folder, written, fsynced, renamed over ``path``: readers see the old file or the whole
    new one. On any error the temp file is removed and ``OutputError`` says the previous file is intact.
    ``write_all(fd, data)`` puts the bytes into the open file (a test passes one that fails as a full disk does)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}; nothing was changed") from e
    try:
        try:
            os.fchmod(fd, 0o644)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        full = " (disk full)" if e.errno == errno.ENOSPC else ""
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise OutputError(f"could not write {path}: {e.strerror or e}{full}; the temporary file was removed, "
                          f"{kept} and earlier results are untouched") from e


def json_bytes(obj) -> bytes:
    """Strict JSON (no NaN: non-finite numbers become null), sorted keys, indented, with a final newline."""
    return (dumps(obj) + "\n").encode()


def write_json(path: Path, obj, write_all=_write_all) -> None:
    write_bytes(path, json_bytes(obj), write_all)


def write_text(path: Path, text: str, write_all=_write_all) -> None:
    write_bytes(path, text.encode(), write_all)


def write_figure(path: Path, fig, write_all=_write_all, **savefig) -> None:
    """A matplotlib figure, in the format its suffix names (png by default); ``savefig``: its keyword arguments."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    write_bytes(path, buf.getvalue(), write_all)
