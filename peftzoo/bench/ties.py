"""The leaderboard's tie-aware view, as data any renderer can draw (the markdown table here; an HTML page too).

Per column (a task, or ``"avg"``: the mean over the board's tasks) a ``Ties``: the rows compared, the best, the
group of rows not distinguishable from it, every row's 95% rank interval and the task's minimum detectable
difference, all from ``significance``'s two-level bootstrap (seeds within each row, dev examples shared by every
row). The average is resampled as the mean of its tasks' resamples (independent draws per task), so its group and
ranks carry every task's uncertainty. ``Board.ties`` holds them; ``TaskCell.best_group`` / ``rank`` and
``Row.avg_group`` / ``avg_rank`` repeat them on the cells.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peftzoo.bench import significance as sig


@dataclass
class Ties:
    """One column's rows ranked without implying an order the data do not show."""
    column: str  # the task, or "avg"
    rows: list  # [Row] compared: those with per-example predictions (on every task, for "avg"), in board order
    scores: list  # [float] their observed scores: the mean over seeds of the dev score recomputed from predictions
    ranking: sig.Ranking  # best, tests against it, group, rank intervals (indices into ``rows``)
    mdd: sig.Mdd | None  # the task's minimum detectable difference (None for "avg")
    n_boot: int
    draws: sig.Draws | None = None  # the task's resamples (None for "avg")

    @property
    def best(self):
        return self.rows[self.ranking.best]

    @property
    def group(self) -> list:
        """[Row] not distinguishable from the best (p >= 0.05), the best included, in board order."""
        return [self.rows[i] for i in self.ranking.group]

    def index(self, row) -> int | None:
        return next((i for i, r in enumerate(self.rows) if r is row), None)

    def of(self, row) -> tuple:
        """(in the best group, rank interval, Test best − row or None) of ``row``; all None if not compared."""
        i = self.index(row)
        if i is None:
            return None, None, None
        return i in self.ranking.group, self.ranking.rank_ci[i], self.ranking.tests[i]


def task_ties(task: str, metric: str, rows: list, preds: list, labels: dict, n_boot: int, seed: int = 0) -> Ties:
    """The ties of one task: ``rows`` [Row], ``preds`` per row a list of per-seed {dev split: predictions}."""
    d = sig.draws(metric, preds, labels, n_boot, sig.task_seed(task, seed))
    rk = sig.ranking(d.obs, d.T, [d.terms(i) for i in range(len(rows))])
    return Ties(task, rows, [float(x) for x in d.obs], rk, sig.mdd(d), n_boot, d)


def avg_ties(per_task: dict) -> Ties | None:
    """The ties of the mean over tasks, for the rows compared on every task (None with fewer than two such rows;
    one task: its own)."""
    cols = list(per_task.values())
    if len(cols) == 1:  # the average is the task
        c = cols[0]
        return Ties("avg", c.rows, c.scores, c.ranking, None, c.n_boot)
    if not cols:
        return None
    rows = [r for r in cols[0].rows if all(c.index(r) is not None for c in cols)]
    if len(rows) < 2:
        return None
    at = [[c.index(r) for c in cols] for r in rows]
    obs = np.array([np.mean([c.draws.obs[i] for c, i in zip(cols, ix)]) for ix in at])
    T = np.stack([np.mean([c.draws.T[i] for c, i in zip(cols, ix)], axis=0) for ix in at])
    k = len(cols)  # a mean over k tasks scales each task's seed part by 1/k²
    terms = [[(v / k ** 2, df) for c, i in zip(cols, ix) for v, df in c.draws.terms(i)] for ix in at]
    return Ties("avg", rows, [float(x) for x in obs], sig.ranking(obs, T, terms), None, cols[0].n_boot)


def rank_text(ci: tuple | None) -> str:
    """A rank interval as text: "3" or "1–4" ("" when not ranked)."""
    if ci is None:
        return ""
    return f"{ci[0]}" if ci[0] == ci[1] else f"{ci[0]}–{ci[1]}"


def row_name(row) -> str:
    return row.method if row.label == "—" else f"{row.method} {row.label}"


def mdd_sentence(b) -> str | None:
    """The header's minimum detectable differences, one per task, with the variance components they come from."""
    got = [(t, b.ties[t].mdd) for t in b.tasks if t in b.ties and b.ties[t].mdd is not None]
    if not got:
        return None
    parts = []
    for t, m in got:
        seed = (f"σ_seed {100 * m.seed_sd:.1f} beyond dev sampling, the median row" if m.seed_sd is not None else
                "σ_seed not measured: one seed, so a lower bound")
        parts.append(f"{t} **{100 * m.mdd:.1f}** points at {m.seeds} seed{'s' * (m.seeds > 1)} × {m.n:,} dev "
                     f"examples ({seed}; σ_dev {100 * m.dev_sd:.1f}, a paired difference's dev sampling, the median "
                     "pair)")
    return ("Minimum detectable difference (two-sided 5% test, 80% power; (t₀.₉₇₅ + t₀.₈₀) · √(2σ²_seed/S + σ²_dev)): "
            + "; ".join(parts) + ". A true gap below it is missed more often than not: read no order inside a "
            "column's bold group.")


def groups_sentence(b) -> str | None:
    """Below the table: per column, the best row and the rows not distinguishable from it, by name."""
    parts = []
    for col in [*b.tasks, "avg"] if len(b.tasks) > 1 else b.tasks:  # one task: "avg" is that task
        tt = b.ties.get(col)
        if tt is None:
            continue
        i = tt.ranking.best
        others = [row_name(r) for r in tt.group if r is not tt.best]
        parts.append(f"{col} (best {row_name(tt.best)}, {100 * tt.scores[i]:.1f}): "
                     + (", ".join(others) if others else "no other row") + f" — {len(tt.group)} of {len(tt.rows)} rows")
    if not parts:
        return None
    return ("Not distinguishable from the best (bold; two-sided p ≥ 0.05 against the best, each row tested alone): "
            + "; ".join(parts) + ".")
