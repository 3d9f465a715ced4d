"""`peftzoo table --html`: one self-contained page holding the board (every row, each cell linked to its runs'
JSON), per task the Pareto plot and the LR curves as inline SVG, sorting in a real browser (headless Chromium,
skipped where there is none), and ``html.marks`` as the one place bold cells and header lines come from."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from peftzoo import cli, palette
from peftzoo.bench import html, store, table
from peftzoo.bench.leaderboard import build
from peftzoo.bench.protocol import Protocol
from peftzoo.bench.record import EpochResult, RunRecord
from peftzoo.bench.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("page_check", ROOT / "benchmarks" / "page_check.py")
page_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(page_check)

# (method, budget, hparams, trainable): {task: dev score of seeds 0 and 1 at the selected LR}
ROWS = {("full", None, (), 50000): {"SST-2": (0.90, 0.92), "RTE": (0.70, 0.72)},
        ("head", None, (), 100): {"SST-2": (0.60, 0.62), "RTE": (0.52, 0.54)},
        ("lora", 1000, (("r", 1),), 1100): {"SST-2": (0.85, 0.87), "RTE": (0.66, 0.64)},
        ("lora", 8000, (("r", 8),), 8100): {"SST-2": (0.88, 0.86), "RTE": (0.60, 0.62)},
        ("vera", 1000, (("r", 64),), 1100): {"SST-2": (0.80, 0.84), "RTE": (0.68, 0.70)}}
GOOD, BAD = 1e-3, 1e-2  # seed 0 sweeps both; validation prefers GOOD, so seed 1 runs GOOD only


def _rec(method, budget, hp, trainable, task, seed, lr, dev, mem=True):
    spec = RunSpec(suite="t", task=task, method=method, seed=seed, lr=lr, hparams=dict(hp), budget=budget,
                   cell=f"{budget:,}" if budget else "—", protocol=Protocol(), stage=1 if seed == 0 else 2)
    val = 0.8 if lr == GOOD else 0.7
    return RunRecord(spec, "ok", {"peftzoo": "test"}, [EpochResult({"score": dev}, {"score": val}, epoch=1)],
                     params={"target": budget, "trainable": trainable, "adapter": trainable - 100}, steps=10,
                     median_step_s=0.01 * (1 + trainable / 10000), peak_mem_mb=1000.0 + trainable / 100 if mem else None,
                     peak_mem_kind="process RSS", device="cpu", adapter_file_bytes=4 * trainable,
                     split_sizes={"train": 100, "val": 20, "dev": 50})


def records(mem=True) -> list:
    out = []
    for (m, b, hp, n), tasks in ROWS.items():
        for t, (s0, s1) in tasks.items():
            out += [_rec(m, b, hp, n, t, 0, GOOD, s0, mem), _rec(m, b, hp, n, t, 1, GOOD, s1, mem),
                    _rec(m, b, hp, n, t, 0, BAD, s0 - 0.2, mem)]
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The suite's runs written as a results folder, then `peftzoo table --html` on it."""
    root = tmp_path_factory.mktemp("res")
    for r in records():
        store.write_record(store.run_path(root, "t", r.task, r.run_id), r)
    assert cli.main(["table", "--suite", "t", "--results", str(root), "--html"]) == 0
    return root / "t" / "leaderboard.html"


def test_the_page_holds_every_row_and_links_each_cell_to_its_runs(written):
    text = written.read_text(encoding="utf-8")
    dom = page_check.Dom(text)
    assert [r["method"] for r in dom.rows] == ["full", "head", "lora", "lora", "vera"]  # the markdown's order
    keys = [h["data-key"] for h in dom.heads]
    assert keys[:5] == ["method", "budget", "hparams", "RTE", "SST-2"] and len(keys) == 15
    sst2 = {r["i"]: float(r["v"][keys.index("SST-2")]) for r in dom.rows}
    assert sst2 == pytest.approx({"0": 0.91, "1": 0.61, "2": 0.86, "3": 0.87, "4": 0.82})  # the mean of the 2 seeds
    assert "91.0 ± 1.4" in text  # the cell's text, as in leaderboard.md (std of 0.90, 0.92 ×100)
    # 5 rows x 2 tasks x 2 seeds at the selected LR; each link resolves to the run's own JSON
    assert len(dom.links) == 20 and len(set(dom.links)) == 20
    for href in dom.links:
        rec = json.loads((written.parent / href).read_text())
        assert rec["run_id"] == Path(href).stem and rec["spec"]["lr"] == GOOD
    assert (written.parent / "leaderboard.md").is_file() and 'href="leaderboard.md"' in text


def test_the_page_needs_no_network(written):
    text = written.read_text(encoding="utf-8")
    assert not re.search(r"<link|<script[^>]+src|@import|url\(\s*['\"]?(https?:)?//", text)
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(not re.match(r"(https?:)?//", x) for x in refs), [x for x in refs if "//" in x]
    assert all(x.startswith("#") or (written.parent / x).is_file() for x in refs)


def test_each_task_has_its_pareto_and_lr_figures_in_the_palette_colours(written):
    text = written.read_text(encoding="utf-8")
    for t in ("RTE", "SST-2"):
        sec = text[text.index(f'<section class="task" id="task-{t}">'):]
        sec = sec[:sec.index("</section>")]
        assert sec.count("<svg") == 2  # the Pareto plot and the LR curves
        for title in ("vs trainable parameters", "vs step time", "vs memory", "(★ selected)"):
            assert f"{t}: {title}" in sec or f"{t} {title}" in sec, title
        for m in ("full", "head", "lora", "vera"):
            assert palette.color(m) in sec.lower(), m  # each method's line in its colour
    for m in ("full", "head", "lora", "vera"):  # the table's swatches too
        assert f'<span class="sw" style="background:{palette.color(m)}"></span>{m}' in text


def test_memory_panel_only_where_memory_was_recorded():
    pts, panels = html.points(build(records(mem=False)), "SST-2")
    assert [p[1] for p in panels] == ["SST-2: vs trainable parameters", "SST-2: vs step time"]
    assert len(pts) == 5 and all(p["mem"] is None and p["step_s"] > 0 for p in pts)


def test_marks_is_the_one_place_bold_cells_and_header_lines_come_from(tmp_path, monkeypatch):
    monkeypatch.setattr(html, "_task", lambda b, t, use: "")  # the figures (tested above) are not what is marked
    b = build(records())
    plain = html.page("t", b, "val", tmp_path / "t")
    assert 'class="best"' not in plain
    monkeypatch.setattr(html, "marks", lambda b: html.Marks(
        bold=lambda row, t: row.method == "lora" and row.budget == 8000 and t == "SST-2",
        header=["Minimum detectable difference: SST-2 `3.0`."], legend="bold: the best group"))
    text = html.page("t", b, "val", tmp_path / "t")
    assert [float(v) for v in re.findall(r'<td data-v="([^"]*)" class="best">', text)] == [pytest.approx(0.87)]
    assert "<h1>" in text and text.index("Minimum detectable difference: SST-2 <code>3.0</code>.") < text.index("<table")
    assert "<p>bold: the best group</p>" in text


def test_the_optimistic_page_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(html, "_task", lambda b, t, use: "")  # (its figures: as the plain page's)
    text = html.page("t", build(records(), "dev"), "dev", tmp_path / "t")
    assert "<h1>OPTIMISTIC leaderboard: <code>t</code>" in text and "LR sweep (dev, optimistic): " in text
    assert "--optimistic --html" in text and 'href="leaderboard-optimistic.md"' in text


@pytest.mark.skipif(page_check.browser() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_sorts_and_draws_in_chromium(written):
    dom = page_check.check(written, sort="SST-2", click="method")  # raises naming what is wrong
    assert dom.body["after-hash"] == "0 3 2 4 1"  # SST-2 descending: full 91, lora r=8 87, lora r=1 86, vera 82, head 61
    assert dom.body["click1"] == "0 1 2 3 4" and dom.body["click2"] == "4 2 3 1 0"  # method a→z, then z→a
    assert [x["id"] for x in dom.sections] == ["task-RTE", "task-SST-2"] and all(x["svg"] == 2 for x in dom.sections)


def test_without_html_the_table_writes_no_page(tmp_path, monkeypatch):
    """Without --html the table writes its four files and no page (the flag adds it)."""
    from peftzoo.bench import plots
    for f in ("pareto", "lr_curves"):  # the PNGs (drawn in the fixture's run) only as names here
        monkeypatch.setattr(plots, f, lambda path, *a: Path(path).write_bytes(b"png"))
    root = tmp_path / "res"
    for r in records():
        store.write_record(store.run_path(root, "t", r.task, r.run_id), r)
    done = []
    table.write(root, "t", written=done)
    assert [p.name for p in done] == ["leaderboard.md", "leaderboard.csv", "leaderboard.png", "leaderboard-lr.png"]
    assert not (root / "t" / "leaderboard.html").exists()
