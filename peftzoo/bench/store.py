"""One JSON per run, written atomically: a sweep killed at any moment restarts and re-runs only unfinished runs."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path


def run_id(method: str, hparams: dict, seed: int) -> str:
    hp = "-".join(f"{k}{_fmt(v)}" for k, v in sorted(hparams.items())) or "default"
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{method}--{hp}--s{seed}")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def run_path(root: Path, suite: str, task: str, rid: str) -> Path:
    return Path(root) / suite / "runs" / task / f"{rid}.json"


def write_json(path: Path, obj: dict) -> None:
    """Write-then-rename: readers see the old file or the whole new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    os.chmod(tmp, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_runs(root: Path, suite: str) -> list[dict]:
    out = []
    for p in sorted((Path(root) / suite / "runs").glob("*/*.json")):
        if p.name.startswith("."):  # a temporary file of an interrupted write
            continue
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue  # cannot happen with write_json; tolerate foreign files
    return out


def is_finished(path: Path, retry_failed: bool = False) -> bool:
    if not path.exists():
        return False
    try:
        status = json.loads(path.read_text()).get("status")
    except json.JSONDecodeError:
        return False
    return status in ("ok", "skipped") or (status == "failed" and not retry_failed)
