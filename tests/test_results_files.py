"""Every file committed under results/ still reads with this version of peftzoo: run records load as records and
keep their run id (their file name), d90 searches load as a resumable search under their recorded settings, every
other JSON is strict JSON, the text files are UTF-8, the figures are PNGs and a page's links reach committed files."""
import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from peftzoo.bench import store
from peftzoo.bench.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def committed() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    files = [ROOT / f for f in out.stdout.split()] if out.returncode == 0 else []
    return files or sorted(p for p in (ROOT / "results").rglob("*") if p.is_file())  # not a git checkout


FILES = committed()
RESOLVED = {p.resolve() for p in FILES}
LEGACY = {f.metadata.get("key", f.name): f.metadata["legacy"] for f in dataclasses.fields(RunSpec)
          if "legacy" in f.metadata}  # the RunSpec fields added after runs were recorded, and the value they had


def strict_json(path: Path):
    def no_constant(c):
        raise ValueError(f"{path}: {c} is not strict JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)


def is_run(path: Path) -> bool:
    return path.parent.parent.name == "runs" and path.suffix == ".json"


def test_results_hold_run_records_of_every_committed_suite():
    runs = [p for p in FILES if is_run(p)]
    assert len(runs) >= 250 and {p.parents[2].name for p in runs} >= {"cpu", "cpu-stsb-raw", "cpu-sizing"}


@pytest.mark.parametrize("path", [p for p in FILES if is_run(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_a_committed_run_record_loads_and_keeps_its_run_id(path):
    raw = strict_json(path)
    rec, problem = store.read_record(path)
    assert problem is None, problem
    assert rec.run_id == raw["run_id"] == path.stem
    assert rec.task == path.parent.name  # (its spec's suite need not be the folder's: runs were moved)
    # written again it is the same JSON, but for spec fields added since (spec.added), filled in at their old value
    again = rec.to_json()
    backfilled = {k: v for k, v in again["spec"].items() if k not in raw["spec"]}
    assert backfilled.items() <= LEGACY.items(), f"filled in at other than their legacy values: {backfilled}"
    assert {**again, "spec": raw["spec"]} == raw


@pytest.mark.parametrize("path", [p for p in FILES if not is_run(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_other_committed_file_reads(path):
    if path.suffix == ".json":
        d = strict_json(path)
        if isinstance(d, dict) and "scores" in d and "config" in d:  # a d90 search: it resumes under its settings
            from peftzoo.intrinsic.d90 import Search
            seeds = d["seeds"] if "seeds" in d else d["args"]["seeds"]  # a search still under way: only its args
            s = Search(None, None, seeds, trivial=d.get("trivial", 0.0), path=path, config=d["config"])
            assert s.scores == {k: float(v) for k, v in d["scores"].items()}
    elif path.suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif path.suffix == ".html":  # a leaderboard page: whole, and each of its links reaches a committed file
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
        links = re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
        assert links and all((path.parent / x).resolve() in RESOLVED for x in links), "regenerate it: see its header"
    elif path.suffix == ".safetensors":  # a run's saved adapter (bench --save-adapters): <run id>.adapter/
        from safetensors.torch import load_file
        assert path.parent.name.endswith(store.ADAPTER_SUFFIX) and load_file(str(path))
    else:
        assert path.suffix in (".md", ".csv", ".txt"), f"{path}: a file of a kind this test does not know"
        assert path.read_text(encoding="utf-8")
