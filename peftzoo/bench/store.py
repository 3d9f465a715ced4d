"""One JSON per run, written atomically: a sweep killed at any moment restarts and re-runs only unfinished runs.

A run's id is a readable prefix (method, hparams, seed) and a hash of its whole config (``run_id``), so a changed
config is a new run, never an old result answered again. Records are checked when read (``read_record``): an
invalid one is reported by path and treated as absent.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

from peftzoo import _atomic
from peftzoo._atomic import OutputError, _write_all, dumps, plain  # noqa: F401 (re-exported)

# RunSpec fields that do not change a run's result: left out of its id (the suite is the folder it lives in)
ID_EXCLUDE = frozenset({"suite", "cell"})  # cell: a table label; one run can serve two cells
STATUSES = ("ok", "failed", "skipped")
# RunSpec fields added after runs were recorded, with the value that reproduces those runs: at that value a field is
# left out of the id (older runs keep theirs) and filled into older records when they are read
ID_LEGACY = {"regression_targets": "raw"}


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def config_of(spec: dict) -> dict:
    """The part of a RunSpec's dict that defines its result, as plain JSON data."""
    return json.loads(dumps({k: v for k, v in spec.items()
                             if k not in ID_EXCLUDE and not (k in ID_LEGACY and v == ID_LEGACY[k])}))


def run_id(spec: dict) -> str:
    """``<method>--<hparams>--s<seed>--<hash of the whole config>``: readable, and new for any changed field."""
    hp = "-".join(f"{k}{_fmt(v)}" for k, v in sorted(spec.get("hparams", {}).items())) or "default"
    h = hashlib.sha256(json.dumps(config_of(spec), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{spec['method']}--{hp}--s{spec['seed']}") + f"--{h[:12]}"


def run_path(root: Path, suite: str, task: str, rid: str) -> Path:
    return Path(root) / suite / "runs" / task / f"{rid}.json"


def write_bytes(path: Path, data: bytes) -> None:
    """``peftzoo._atomic.write_bytes``, through this module's ``_write_all`` (which the fault tests replace)."""
    _atomic.write_bytes(path, data, _write_all)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    """Strict JSON (no NaN: non-finite numbers become null), written atomically."""
    write_bytes(path, _atomic.json_bytes(obj))


def write_figure(path: Path, fig, **kw) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kw)
    write_bytes(path, buf.getvalue())


def check_record(rec, path: Path | None = None) -> str | None:
    """None if ``rec`` is a well-formed run record (consistent with its file name), else what is wrong."""
    if not isinstance(rec, dict):
        return f"not a JSON object (a {type(rec).__name__})"
    if rec.get("status") not in STATUSES:
        return f"status {rec.get('status')!r} is not one of {', '.join(STATUSES)}"
    spec = rec.get("spec")
    if not isinstance(spec, dict) or not {"method", "seed", "task"} <= set(spec):
        return "no 'spec' object with method, task and seed"
    try:
        rid = run_id(spec)
    except (TypeError, ValueError, AttributeError) as e:
        return f"its spec cannot be hashed ({e})"
    if rec.get("run_id") != rid:
        return f"its run_id {rec.get('run_id')!r} does not match its spec (hash: {rid!r}); edited by hand?"
    if path is not None and Path(path).stem != rid:
        return f"file name does not match its run_id {rid!r}"
    for k in ("task", "method", "seed"):
        if rec.get(k) != spec[k]:
            return f"{k!r} {rec.get(k)!r} differs from its spec's {spec[k]!r}"
    if rec["status"] == "ok":
        need = {"metrics_best": dict, "metrics_final": dict, "params": dict, "history": list, "steps": int,
                "versions": dict, "device": str, "adapter_file_bytes": int}
        for k, t in need.items():
            if not isinstance(rec.get(k), t):
                return f"status ok but {k!r} is {type(rec.get(k)).__name__}, not {t.__name__}"
        for k in ("metrics_best", "metrics_final"):
            if not isinstance(rec[k].get("score"), (int, float)):
                return f"status ok but {k}.score is missing or not a number"
        if rec["steps"] < 1:
            return f"status ok but {rec['steps']} training steps"
        if not {"target", "trainable", "adapter"} <= set(rec["params"]):
            return "status ok but params lacks target/trainable/adapter"
        if not isinstance(rec.get("median_step_s"), (int, float)):
            return "status ok but median_step_s is not a number"
    return None


def read_record(path: Path) -> tuple[dict | None, str | None]:
    """(record, None) or (None, what is wrong with the file)."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable ({e})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e})"
    problem = check_record(rec, path)
    if problem:
        return None, problem
    for k, v in ID_LEGACY.items():  # a record made before the field existed: the value it was made with
        rec["spec"].setdefault(k, v)
    return rec, None


def read_runs(root: Path, suite: str, invalid: list | None = None) -> list[dict]:
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
    status = rec["status"]
    return status in ("ok", "skipped") or (status == "failed" and not retry_failed)
