"""Atomic file output: a reader (or a crash, or a full disk) sees the old file or the whole new one, never a torn one.

The bytes go to a temporary file in the destination's folder (so the rename never crosses file systems), are
flushed and fsynced, then renamed over the destination. On any error the temporary file is removed and a
``WriteError`` says what failed and that the earlier file is intact.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


class WriteError(RuntimeError):
    """Writing an output failed; the previous version of the file (if any) is untouched."""


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.stem}-", suffix=path.suffix)
    except OSError as e:
        raise WriteError(f"could not write {path}: {e}; earlier results are intact") from e
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise WriteError(f"could not write {path}: {e}; the temporary file was removed and earlier results "
                             f"are intact") from e
        raise
    return path


def strict(obj):
    """``obj`` with every non-finite float replaced by None, so the JSON is standard (no NaN/Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> Path:
    """Strict JSON (NaN → null; only plain data: anything else is an error, not its repr), written atomically."""
    text = json.dumps(strict(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text + "\n"))
