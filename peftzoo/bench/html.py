"""`peftzoo table --html`: the board as one self-contained page, leaderboard.html (no network when viewed: the CSS and
the sorting script inline, the figures inline SVG).

The page holds the table (a click on a column header sorts by it; ``#sort=<column>`` or ``#sort=<column>:asc`` in the
address sorts on load), each task cell opening on its runs (seed, LR, epoch, scores, a relative link to the run's
JSON), the notes of the markdown table, and per task the Pareto plot (score vs trainable parameters, vs step time and
vs memory where recorded) and the LR curves, in the colours of ``peftzoo.palette``.

What the page emphasises beyond the numbers comes from one place, ``marks(board)``: the cells shown bold (e.g. the
group of methods not distinguishable from the best) and the lines added under the title.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Callable

import numpy as np

from peftzoo import palette
from peftzoo.bench import plots, reproduce, store, table
from peftzoo.bench.leaderboard import Board, Row


@dataclass
class Marks:
    """What the page emphasises: the one place a significance analysis is wired into it."""
    bold: Callable[[Row, str], bool] = lambda row, task: False  # a (row, task) cell shown bold
    header: list = field(default_factory=list)  # lines (markdown) added under the title
    legend: str = ""  # what bold means (said under the table when a cell is bold)


def marks(b: Board) -> Marks:
    """Bold: the cells in their task's group of rows not distinguishable from the best (``Board.ties``, the two-level
    bootstrap); the minimum detectable differences and the groups are in the header and notes the table shares."""
    if not b.ties:
        return Marks()
    return Marks(bold=lambda row, t: bool(getattr(row.tasks.get(t), "best_group", False)),
                 legend="Bold: not distinguishable from the column's best row (two-sided p ≥ 0.05 against it, "
                        "two-level bootstrap over seeds and dev examples); read no order inside a bold group.")


def write(suite: str, b: Board, use: str, out: Path) -> list[Path]:
    """leaderboard.html (leaderboard-optimistic.html for ``use="dev"``) under ``out``; ``table.write``'s ``also``."""
    path = Path(out) / ("leaderboard.html" if use == "val" else "leaderboard-optimistic.html")
    store.write_text(path, page(suite, b, use, Path(out)))
    return [path]


def page(suite: str, b: Board, use: str, out: Path) -> str:
    """The whole page; links to run JSONs are relative to ``out`` (the suite's folder, <root>/<suite>)."""
    out, mk = Path(out), marks(b)
    title, *head = [x for x in table.header(suite, b, use) if x]
    title = title.lstrip("# ")
    stem = "leaderboard" if use == "val" else "leaderboard-optimistic"
    made = " ".join(["peftzoo", *map(shlex.quote, reproduce.table_args(out.parent, suite, use == "dev")), "--html"])
    files = (f"<p>This page: <code>{escape(made)}</code>; the same table as <a href=\"{stem}.md\">{stem}.md</a> "
             f'and <a href="{stem}.csv">{stem}.csv</a>. Click a column header to sort by it.</p>')
    legend = [[mk.legend]] if mk.legend and any(mk.bold(r, t) for r in b.rows for t in r.tasks) else []
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title.replace('`', ''))}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>{inline(title)}</h1>", *[f"<p>{inline(x)}</p>" for x in mk.header + head], files,
        _table(b, out, mk, use), *[_block(p) for p in legend + table.notes(b)],
        *[_task(b, t, use) for t in b.tasks], f"<script>{JS}</script>", "</body></html>", ""])


def inline(md: str) -> str:
    """One line of the table's markdown as HTML: escaped, `code` spans as <code>."""
    parts = md.split("`")
    return "".join(f"<code>{escape(x)}</code>" if i % 2 else escape(x) for i, x in enumerate(parts))


def _block(lines: list[str]) -> str:
    if all(x.startswith("- ") for x in lines):
        return "<ul>" + "".join(f"<li>{inline(x[2:])}</li>" for x in lines) + "</ul>"
    return "".join(f"<p>{inline(x)}</p>" for x in lines)


# ---- the table ---------------------------------------------------------------------------------------------------
def _num(x, f="{:.2f}") -> tuple:
    """(sort value, text) of a number that may be missing."""
    return ("", "—") if x is None else (repr(float(x)), f.format(x))


def columns(tasks: list[str]) -> list[tuple]:
    """(key, header, type, cell(row) -> (sort value, HTML)) per column, in the markdown table's order."""
    def hp(r):
        return ", ".join(f"{k}={x}" for k, x in r.hparams.items()) or "—"

    def params(r):
        return repr(r.achieved), f"{r.achieved:,}" + (f" / {r.budget:,}" if r.budget else "")

    def method(r):
        return r.method, f'<span class="sw" style="background:{palette.color(r.method)}"></span>{escape(r.method)}'

    cols = [("method", "method", "text", method),
            ("budget", "budget", "num", lambda r: ("" if r.budget is None else repr(r.budget), escape(r.label))),
            ("hparams", "hparams", "text", lambda r: (hp(r), escape(hp(r))))]
    cols += [(t, t, "num", None) for t in tasks]  # task cells: ``_task_cell``
    return cols + [
        ("avg", "avg", "num", lambda r: _num(r.avg and 100 * r.avg, "{:.1f}")),
        ("lr", "LR / epoch", "text", lambda r: (table.lr_cell(r, tasks), escape(table.lr_cell(r, tasks)))),
        ("params", "params", "num", params),
        ("trainable", "trainable", "num", lambda r: (repr(r.trainable), f"{r.trainable:,}")),
        ("step_vs_head", "step / head", "num", lambda r: _num(r.step_vs_head)),
        ("step_vs_full", "step / full", "num", lambda r: _num(r.step_vs_full)),
        ("peak_mb", "process peak MB", "num", lambda r: _num(r.peak_mem_mb, "{:.0f}")),
        ("step_mb", "step MB", "num", lambda r: _num(r.step_mb, "{:.0f}")),
        ("file_kb", "file KB", "num", lambda r: _num(r.file_kb, "{:.0f}")),
        ("seeds", "seeds", "num", lambda r: (repr(r.seeds), str(r.seeds)))]


WRAP = ("hparams", "lr")  # the columns whose text may wrap (the others stay on one line)


def _table(b: Board, out: Path, mk: Marks, use: str) -> str:
    cols = columns(b.tasks)
    th = "".join(f'<th data-key="{escape(k)}" data-type="{ty}" title="sort by {escape(h)}">{escape(h)}</th>'
                 for k, h, ty, _ in cols)
    rows = []
    for i, r in enumerate(b.rows):
        tds = [_task_cell(r, k, out, mk.bold(r, k), use) if f is None else '<td data-v="{}"{}>{}</td>'.format(
            escape(f(r)[0]), ' class="wrap"' if k in WRAP else "", f(r)[1]) for k, _, _, f in cols]
        rows.append(f'<tr data-i="{i}" data-method="{escape(r.method)}">' + "".join(tds) + "</tr>")
    return (f'<table id="board"><thead><tr>{th}</tr></thead><tbody>\n' + "\n".join(rows) + "\n</tbody></table>")


def _task_cell(r: Row, t: str, out: Path, bold: bool, use: str) -> str:
    """The cell's text, opening on the runs at the selected LR and the LR sweep's selection scores."""
    c = r.tasks.get(t)
    if c is None:
        return '<td data-v="">—</td>'
    ep = c.sel.epoch
    runs = "".join(
        f'<tr><td>s{x.seed}</td><td>{_pct((x.history[ep - 1].val or {}).get("score"))}</td>'
        f'<td>{_pct(x.history[ep - 1].score)}</td><td><a href="{escape(run_link(out, x))}">{escape(x.run_id)}</a>'
        "</td></tr>" for x in c.sel.runs)
    sweep = (f"LR sweep ({'validation' if use == 'val' else 'dev, optimistic'}): " + ", ".join(
        f"{lr:g}{'★' if lr == c.sel.lr else ''} {_pct(v)}" for lr, v in sorted(c.sel.per_lr.items()))
        if len(c.sel.per_lr) > 1 else "one LR (no sweep in this row)")
    cls = ' class="best"' if bold else ""
    return (f'<td data-v="{c.mean!r}"{cls}><details><summary>{escape(table.cell_text(c, bold=False))}</summary>'
            f'<div class="runs">LR {c.sel.lr:g}, epoch {ep}<table><tr><th>seed</th><th>val</th><th>dev</th>'
            f"<th>run JSON</th></tr>{runs}</table>{sweep}</div></details></td>")


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def run_link(out: Path, rec) -> str:
    """The run's JSON relative to the page's folder (``out`` = <root>/<suite>), with forward slashes."""
    p = store.run_path(Path(out).parent, Path(out).name, rec.task, rec.run_id)
    return Path(os.path.relpath(p, out)).as_posix()


# ---- the figures, per task ---------------------------------------------------------------------------------------
def points(b: Board, t: str) -> tuple[list[dict], list[tuple]]:
    """The task's Pareto points (x: trainable; step_s: median training step; mem: memory) and the panels that have
    data: (task, title, (key, x label, log x))."""
    per_step = all(r.step_mb is not None for r in b.rows)  # benchmarks/step_memory.py's measurement for every row
    kind = b.rows[0].peak_mem_kind if b.rows else None
    pts = []
    for r in b.rows:
        c = r.tasks.get(t)
        runs = [x for x in r.runs if x.task == t]
        if c is None or not runs:
            continue
        steps = [x.median_step_s for x in runs if x.median_step_s is not None]
        mems = [x.peak_mem_mb for x in runs if x.peak_mem_mb is not None]
        pts.append({"task": t, "method": r.method, "x": r.trainable, "mean": c.mean, "std": c.std,
                    "step_s": float(np.median(steps)) if steps else None,
                    "mem": r.step_mb if per_step else (max(mems) if mems else None)})
    mem = "training step's peak MB (benchmarks/step_memory.py)" if per_step else f"peak MB while training ({kind})"
    panels = [(t, f"{t}: vs trainable parameters", plots.X_TRAINABLE),
              (t, f"{t}: vs step time", ("step_s", "median training step (s)", False)),
              (t, f"{t}: vs memory", ("mem", mem, False))]
    return pts, [p for p in panels if any(x.get(p[2][0]) is not None for x in pts)]


def _task(b: Board, t: str, use: str) -> str:
    pts, panels = points(b, t)
    fig = plots.pareto_figure(panels, pts, "optimistic (selected on dev)" if use == "dev" else "")
    parts = [f'<section class="task" id="task-{escape(t)}"><h2>{escape(t)}</h2>',
             f'<figure class="pareto">{plots.svg(fig, f"pareto-{t}")}<figcaption>{escape(t)}: dev score (mean ± std '
             "over seeds) vs trainable parameters, median training step and memory; one line per method through its "
             "budgets.</figcaption></figure>"]
    curves = table.lr_curves(b, t)
    if curves:
        fig = plots.lr_curves_figure([t], curves, table.LR_YLABEL[use])
        parts.append(f'<figure class="lr">{plots.svg(fig, f"lr-{t}")}'
                     f"<figcaption>{escape(t)}: the LR sweep's score per LR (★ selected).</figcaption></figure>")
    return "\n".join(parts + ["</section>"])


CSS = re.sub(r"\s+", " ", """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 110em }
code { font-size: 90%; background: #f3f3f3; padding: 0 .2em }
table#board { border-collapse: collapse; margin: 1em 0 }
#board th, #board td { border-bottom: 1px solid #ddd; padding: .25em .5em; text-align: right; vertical-align: top }
#board th { cursor: pointer; background: #f6f6f6; position: sticky; top: 0; user-select: none }
#board th[aria-sort=descending]::after { content: " ▼" } #board th[aria-sort=ascending]::after { content: " ▲" }
#board td { white-space: nowrap } #board td.wrap { white-space: normal; min-width: 8em }
#board td:nth-child(-n+3) { text-align: left }
#board td.best summary { font-weight: bold }
summary { cursor: pointer; white-space: nowrap } .runs { text-align: left; font-size: 85% }
.runs table td, .runs table th { border: 0; padding: 0 .4em }
.sw { display: inline-block; width: .8em; height: .8em; margin-right: .35em; border-radius: 2px }
figure { margin: 1em 0 } svg { max-width: 100%; height: auto }
""").strip()

JS = re.sub(r"\n\s*", "\n", """
(function () {
  const table = document.getElementById("board"), body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
  function sortBy(i, desc) {
    const num = heads[i].dataset.type === "num";
    const rows = [...body.rows];
    rows.sort((a, b) => {
      const x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      if (!x || !y) return (!x) - (!y) || a.dataset.i - b.dataset.i;
      const c = num ? Number(x) - Number(y) : x.localeCompare(y);
      return (desc ? -c : c) || a.dataset.i - b.dataset.i;
    });
    rows.forEach(r => body.appendChild(r));
    heads.forEach(h => h.removeAttribute("aria-sort"));
    heads[i].setAttribute("aria-sort", desc ? "descending" : "ascending");
  }
  heads.forEach((h, i) => h.addEventListener("click", () => {
    const now = h.getAttribute("aria-sort");
    sortBy(i, now ? now === "ascending" : h.dataset.type === "num");
  }));
  function fromHash() {
    const m = /^#sort=([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(location.hash));
    const i = m ? heads.findIndex(h => h.dataset.key === m[1]) : -1;
    if (i >= 0) sortBy(i, m[2] ? m[2] === "desc" : heads[i].dataset.type === "num");
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
""").strip()
