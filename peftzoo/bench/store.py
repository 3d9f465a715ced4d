"""One JSON per run, written atomically: a sweep killed at any moment restarts and re-runs only unfinished runs.

A run's file is named by its id (``RunSpec.run_id``: a readable prefix and the hash of its identity), so a changed
config is a new run, never an old result answered again. Records are checked when read (``read_record``, through
``RunRecord.from_json``): an invalid one is reported by path and treated as absent.
"""
from __future__ import annotations

import json
from pathlib import Path

from peftzoo import _atomic
from peftzoo._atomic import OutputError, _write_all  # noqa: F401 (OutputError: what a failed write raises)
from peftzoo.bench.record import RecordError, RunRecord


def run_path(root: Path, suite: str, task: str, rid: str) -> Path:
    return Path(root) / suite / "runs" / task / f"{rid}.json"


def write_bytes(path: Path, data: bytes) -> None:
    """``peftzoo._atomic.write_bytes``, through this module's ``_write_all`` (which the fault tests replace)."""
    _atomic.write_bytes(path, data, _write_all)


def write_text(path: Path, text: str) -> None:
    _atomic.write_text(path, text, _write_all)


def write_json(path: Path, obj) -> None:
    """Strict JSON (no NaN: non-finite numbers become null), written atomically."""
    _atomic.write_json(path, obj, _write_all)


def write_figure(path: Path, fig, **savefig) -> None:
    _atomic.write_figure(path, fig, _write_all, **savefig)


def write_record(path: Path, rec: RunRecord) -> None:
    write_json(path, rec.to_json())


def read_record(path: Path) -> tuple[RunRecord | None, str | None]:
    """(record, None) or (None, what is wrong with the file)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable ({e})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e})"
    try:
        return RunRecord.from_json(d, path), None
    except RecordError as e:
        return None, str(e)


def read_runs(root: Path, suite: str, invalid: list | None = None) -> list[RunRecord]:
    """Every valid run record of a suite; invalid ones are appended to ``invalid`` as (path, problem)."""
    out = []
    for p in sorted((Path(root) / suite / "runs").glob("*/*.json")):
        if p.name.startswith("."):  # a temporary file of an interrupted write
            continue
        rec, problem = read_record(p)
        if rec is not None:
            out.append(rec)
        elif invalid is not None:
            invalid.append((p, problem))
    return out


def is_finished(path: Path, retry_failed: bool = False) -> bool:
    """A valid record that need not run again (an invalid one is re-run and overwritten)."""
    if not Path(path).exists():
        return False
    rec, _ = read_record(path)
    if rec is None:
        return False
    return rec.status in ("ok", "skipped") or (rec.status == "failed" and not retry_failed)
