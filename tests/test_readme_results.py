"""README.md's Results section shows the committed leaderboard, copied by benchmarks/readme_results.py."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
rr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rr)


def test_readme_shows_the_committed_leaderboard():
    readme = (ROOT / "README.md").read_text()
    assert rr.render(readme) == readme, "run python benchmarks/readme_results.py"


def test_render_replaces_the_block_and_refuses_a_readme_without_it(tmp_path):
    (tmp_path / "results" / "cpu").mkdir(parents=True)
    (tmp_path / "results" / "cpu" / "leaderboard.md").write_text("# Leaderboard: `cpu`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (tmp_path / "results" / "cpu" / "leaderboard.png").write_bytes(b"png")
    out = rr.render("intro\n<!-- results:cpu:start -->\nstale table\n<!-- results:cpu:end -->\nafter\n", tmp_path)
    assert "stale" not in out and "| 1 | 2 |" in out and "# Leaderboard" not in out
    assert out.startswith("intro\n") and out.endswith("\nafter\n") and "results/cpu/leaderboard.png" in out
    with pytest.raises(ValueError, match="no <!-- results:cpu:start -->"):
        rr.render("no block here", tmp_path)
