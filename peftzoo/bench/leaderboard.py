"""The protocol's leaderboard as data: rows (method, budget), cells mean ± std over seeds at the LR and epoch
selected on validation, a t-interval, and the tie-aware view of ``bench.ties`` (per task the rows not
distinguishable from the best, rank intervals, the minimum detectable difference; each row against LoRA), all from
the two-level bootstrap of ``bench.significance`` (seeds and dev examples). ``build(records)`` returns a ``Board``;
``bench.table`` writes it as markdown, CSV and figures.

``use="dev"`` builds the *optimistic* view instead (LR and epoch picked on the dev set it reports); its files are
named apart and say so in their title.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from peftzoo import adapters
from peftzoo.bench import significance, stats, ties
from peftzoo.bench.protocol import Selected, selection

BASELINES = ("full", "head")


@dataclass
class TaskCell:
    """A row's result on one task."""
    sel: Selected  # the LR and epoch selected, and the runs there
    mean: float  # dev score, mean over seeds
    std: float  # ... and its standard deviation (0 for one seed)
    ci: tuple  # 95% t-interval over seeds ((None, None) for one seed)
    n: int  # seeds
    diff: float | None = None  # minus LoRA's (``ref``), two-level bootstrap over seeds and dev examples
    p: float | None = None  # ... its two-sided p-value
    ref: str | None = None  # the LoRA row compared with (its budget label)
    best_group: bool | None = None  # not distinguishable from the task's best (None: not compared, no predictions)
    rank: tuple | None = None  # 95% interval of its rank on the task (1 = best), e.g. (1, 4)
    test: float | None = None  # the test split's score at the same LR and epoch, mean over seeds (tasks with one)
    test_std: float | None = None  # ... and its standard deviation


@dataclass
class Row:
    """One (method, hparams) row."""
    method: str
    hparams: dict
    budget: int | None  # the matched budget (None: a baseline, a paper setting or fixed hparams)
    label: str  # the budget cell's label: "73,728", "paper", "—"
    achieved: int  # adapter elements (the solver's count where it matched a budget)
    trainable: int  # every trained element, the head included
    tasks: dict = field(default_factory=dict)  # {task: TaskCell}
    runs: list = field(default_factory=list)  # [RunRecord] at the selected LRs
    avg: float | None = None  # mean over the board's tasks (None if a task is missing)
    avg_group: bool | None = None  # ... not distinguishable from the best average (Board.ties["avg"])
    avg_rank: tuple | None = None  # ... and the 95% interval of its rank on it
    seeds: int = 0  # the fewest seeds of any task
    step_vs_head: float | None = None  # median training step relative to head-only's, same task
    step_vs_full: float | None = None  # ... and to full fine-tuning's
    peak_mem_mb: float = 0.0
    peak_mem_kind: str | None = None
    file_kb: float = 0.0
    step_mb: float | None = None  # benchmarks/step_memory.py's measurement, when the suite has one


@dataclass
class Board:
    tasks: list  # the tasks, sorted
    rows: list  # [Row] in the registry's order, a method's paper setting after its budgets
    selection: dict  # protocol.selection of the runs
    ok: list  # [RunRecord] that trained
    bad: list  # [RunRecord] failed or skipped (listed under the table)
    invalid: list = field(default_factory=list)  # [(path, problem)]: records that did not read
    reproduce: str | None = None  # the table's Reproduce line
    description: str | None = None  # the description of the preset the runs were made with, where known
    step_memory: dict | None = None  # benchmarks/step_memory.py's file, when the suite has one
    ties: dict = field(default_factory=dict)  # {task or "avg": ties.Ties}: best groups, rank intervals, MDD
    task_of: dict = field(default_factory=dict)  # {task: taskdef.Task} as its runs record it (metric, classes)

    @property
    def test_tasks(self) -> list:
        """The tasks whose rows have test scores (a test split), in board order."""
        return [t for t in self.tasks if any(r.tasks.get(t) and r.tasks[t].test is not None for r in self.rows)]


def _order(row: Row):
    """Rows in the registry's order (baselines first), a method's paper setting after its budgets."""
    order = list(adapters.REGISTRY)
    m = row.method
    return (order.index(m) if m in order else len(order), m, row.label == "paper", row.budget or 0)


def build(runs: list, use: str = "val", n_boot: int = 2000) -> Board:
    """The board of ``runs`` (RunRecords): selection on validation (``use="dev"``: the optimistic view)."""
    ok = [r for r in runs if r.ok]
    for r in ok:
        if r.history[0].val is None:
            raise ValueError(f"run {r.task}/{r.run_id} has no validation scores: it predates the selection "
                             f"protocol (rerun it with `peftzoo bench`)")
    sel = selection(ok, use)
    tasks = sorted({t for t, _, _ in sel})
    rows: dict = {}
    for (t, m, k), s in sel.items():
        r0 = s.runs[0]
        row = rows.setdefault((m, k), Row(m, r0.spec.hparams, r0.spec.budget, r0.spec.cell or "—",
                                          _achieved(r0.params), r0.params["trainable"]))
        scores = s.scores()
        mean, sd = stats.mean_std(scores)
        cell = row.tasks[t] = TaskCell(s, mean, sd, stats.t_interval(scores), len(scores))
        if s.test_scores():
            cell.test, cell.test_std = stats.mean_std(s.test_scores())
        row.runs.extend(s.runs)
    for row in rows.values():
        ms = [row.tasks[t].mean if t in row.tasks else None for t in tasks]
        row.avg = float(np.mean(ms)) if all(x is not None for x in ms) else None
        row.seeds = min(c.n for c in row.tasks.values())
    _timing(rows, tasks)
    task_of = {t: next(r.spec.task_spec() for r in ok if r.task == t) for t in tasks}
    b = Board(tasks, sorted(rows.values(), key=_order), sel, ok, [r for r in runs if not r.ok], task_of=task_of)
    _significance(b, n_boot)
    return b


def _achieved(params: dict) -> int:
    return params["solver"] if params.get("solver") is not None else params["adapter"]


def _significance(b: Board, n_boot: int) -> None:
    """Each task's ties (rows whose runs all have per-example predictions), the average's, and every row's
    difference from LoRA at the same budget, all from the task's one set of two-level resamples."""
    for t in b.tasks:
        rows = [r for r in b.rows if t in r.tasks and all(x.history[0].preds is not None for x in r.tasks[t].sel.runs)]
        if len(rows) < 2:
            continue
        labels = {sp: stats.decode_preds(x) for sp, x in rows[0].tasks[t].sel.runs[0].dev_labels.items()}
        tt = b.ties[t] = ties.task_ties(t, b.task_of[t].scorer, rows, [dev_preds(r.tasks[t].sel) for r in rows],
                                        labels, n_boot)
        for i, row in enumerate(rows):
            cell = row.tasks[t]
            cell.best_group, cell.rank, _ = tt.of(row)
            ref = _lora_ref({id(r): r for r in rows}, t, row.budget)
            if ref is not None and ref is not row:
                test = significance.pair(tt.draws, i, tt.index(ref))
                cell.diff, cell.p, cell.ref = test.diff, test.p, ref.label
    avg = ties.avg_ties({t: b.ties[t] for t in b.tasks if t in b.ties}) if len(b.ties) == len(b.tasks) else None
    if avg is not None:
        b.ties["avg"] = avg
        for row in avg.rows:
            row.avg_group, row.avg_rank, _ = avg.of(row)


def separation(b: Board, factor: float = 3.0) -> dict:
    """Per task with both baselines: does full FT beat head-only by more than ``factor`` × the larger 95% t-interval
    half-width of the two? (How a preset's tasks are chosen: a task where they do not differ cannot rank methods.)"""
    base = {r.method: r for r in b.rows if r.method in BASELINES}
    out = {}
    for t in b.tasks:
        cells = [base[m].tasks.get(t) for m in BASELINES if m in base]
        if len(cells) < 2 or None in cells or any(c.ci[0] is None for c in cells):
            continue
        half = max((c.ci[1] - c.ci[0]) / 2 for c in cells)
        gap = cells[0].mean - cells[1].mean
        out[t] = {"gap": gap, "half_width": half, "separates": gap > factor * half}
    return out


def dev_preds(sel: Selected) -> list[dict]:
    """Per run at the selected LR: its dev predictions at the selected epoch, decoded, by dev split."""
    return [{sp: stats.decode_preds(x) for sp, x in r.history[sel.epoch - 1].preds.items()} for r in sel.runs]


def _lora_ref(rows: dict, task: str, budget):
    loras = [r for r in rows.values() if r.method == "lora" and task in r.tasks]
    same = [r for r in loras if budget is not None and r.budget == budget]
    if same:
        return same[0]
    # the middle budget ran the sweep (stage 1; with LRs per budget every budget swept, so the stage says which)
    swept = ([r for r in loras if any(x.spec.stage == 1 for x in r.tasks[task].sel.runs)]
             or [r for r in loras if len(r.tasks[task].sel.per_lr) > 1])
    return (swept or loras or [None])[0]


def _stepped(r) -> bool:
    """A run whose median step is a training step (a cached head fit's is one L-BFGS iteration over every row)."""
    return r.spec.head_fit != "cached"


def _timing(rows: dict, tasks) -> None:
    def med(m):
        return {t: np.median([r.median_step_s for row in rows.values() if row.method == m
                              for r in row.runs if r.task == t and _stepped(r)] or [np.nan]) for t in tasks}
    head, full = med("head"), med("full")
    for row in rows.values():
        rs = [r for r in row.runs if _stepped(r)]  # no step ratio for a cached head fit: "—", not a fake number
        for name, ref in (("step_vs_head", head), ("step_vs_full", full)):
            xs = [r.median_step_s / ref[r.task] for r in rs if np.isfinite(ref[r.task])]
            setattr(row, name, float(np.median(xs)) if xs else None)
        row.peak_mem_mb = max(r.peak_mem_mb or 0 for r in row.runs)
        row.peak_mem_kind = row.runs[0].peak_mem_kind
        row.file_kb = row.runs[0].adapter_file_bytes / 1024


def at_edge(sel: Selected) -> bool:
    """The selected LR is the largest or smallest of a swept grid (>= 3 points): the optimum may lie outside it."""
    lrs = sorted(lr for lr, v in sel.per_lr.items() if v is not None)
    return len(lrs) >= 3 and sel.lr in (lrs[0], lrs[-1])
