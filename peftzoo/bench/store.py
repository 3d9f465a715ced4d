"""One JSON per run, written atomically: a sweep killed at any moment restarts and re-runs only unfinished runs.

A run's file is named by its id (``RunSpec.run_id``: a readable prefix and the hash of its identity), so a changed
config is a new run, never an old result answered again. Records are checked when read (``read_record``, through
``RunRecord.from_json``): an invalid one is reported by path and treated as absent. With ``bench --save-adapters``
the trained adapter is kept beside its JSON (``adapter_dir``), written before the JSON that names it, and the sweep
watches the folder's size budget (``AdapterBudget``).
"""
from __future__ import annotations

import json
from pathlib import Path

from peftzoo import _atomic
from peftzoo._atomic import OutputError, _write_all  # noqa: F401 (OutputError: what a failed write raises)
from peftzoo.bench.record import RecordError, RunRecord


ADAPTER_SUFFIX = ".adapter"  # a run's saved adapter folder: <run id>.adapter/ beside <run id>.json
# the committed results/ in total, MB: what a clone of the repository carries (it held 15 MB before saved adapters;
# the cpu suite's 160 adapter runs would add 85 MB, their records' adapter_file_bytes). A sweep saving adapters
# warns when it would take its results folder past it (AdapterBudget).
RESULTS_BUDGET_MB = 200


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


def adapter_dir(run_json: Path) -> Path:
    """Where ``bench --save-adapters`` keeps a run's trained adapter: ``<run id>.adapter/`` beside its JSON, a folder
    in peftzoo's own format (``peftzoo.io``: adapter.safetensors + peftzoo.json) that ``peftzoo.load`` and
    ``peftzoo analyze --adapter`` read."""
    run_json = Path(run_json)
    return run_json.with_name(run_json.stem + ADAPTER_SUFFIX)


def write_record(path: Path, rec: RunRecord, budget: AdapterBudget | None = None) -> None:
    """The run JSON, after the adapter files it names (so a JSON never names files that are not there)."""
    if rec.adapter_files:
        folder = adapter_dir(path)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in rec.adapter_files.items():
            write_bytes(folder / name, data)
    write_json(path, rec.to_json())
    if budget is not None:
        budget.written(rec)


def folder_mb(root: Path) -> float:
    """MB (10^6 bytes) of every file under ``root`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) / 1e6


class AdapterBudget:
    """Watches the adapters a sweep saves (``--save-adapters``) against the results folder's size budget, and says
    once when the folder would outgrow it: projected from the mean size of the adapters saved so far times the runs
    left (``expect``), on top of what the folder held when the sweep began."""

    def __init__(self, root: Path, say, budget_mb: float | None = None):
        self.root, self.say = Path(root), say
        self.budget_mb = RESULTS_BUDGET_MB if budget_mb is None else budget_mb
        self.start_mb, self.saved, self.bytes, self.left, self.warned = folder_mb(root), 0, 0, 0, False
        if self.start_mb > self.budget_mb:
            self._warn(f"holds {self.start_mb:.1f} MB already")

    def expect(self, runs: int) -> None:
        """``runs`` more runs will be written (a stage's unfinished runs, and an upper bound for the next stage's)."""
        self.left = runs

    def written(self, rec: RunRecord) -> None:
        self.left = max(0, self.left - 1)
        if rec.adapter_files:
            self.saved += 1
            self.bytes += sum(map(len, rec.adapter_files.values()))
        mb = self.start_mb + (self.bytes + self.bytes / max(1, self.saved) * self.left) / 1e6
        if mb > self.budget_mb:
            self._warn(f"would reach about {mb:.1f} MB: {self.bytes / 1e6:.1f} MB saved by {self.saved} adapters "
                       f"(mean {self.bytes / max(1, self.saved) / 1e3:.0f} KB) and up to {self.left} runs left")

    def _warn(self, what: str) -> None:
        if not self.warned:
            self.warned = True
            self.say(f"warning: results folder {self.root} {what}, over its size budget of {self.budget_mb:g} MB "
                     f"(store.RESULTS_BUDGET_MB; README, Benchmark runs: size budget). Save fewer adapters (narrow "
                     f"--methods/--seeds, or leave out --save-adapters) or write them to another --results folder "
                     f"that is not committed")


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
