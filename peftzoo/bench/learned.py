"""Two sentences a first reader of a table needs: whether its LRs were swept or fixed by the preset, and which rows
did not learn beyond the head (head-only is the floor every adapter must clear to have learned anything)."""
from __future__ import annotations

MARGIN = 0.02  # a row "learned" on a task if it beats head-only by more than this (2 points of the metric ×100)


def swept(b: dict) -> bool:
    """False when no (task, method, budget) group of the table ran more than one LR (the preset fixed them)."""
    groups = b.selection.values()
    return not groups or any(len(s.per_lr) > 1 for s in groups)


def preset_sentence(b: dict) -> str | None:
    """The preset's own description where the LRs were fixed by it (it says where they come from)."""
    if swept(b) or not b.description:
        return None
    return f"The preset says: {b.description}"


def not_learning(b: dict, margin: float = MARGIN) -> str | None:
    """Rows within ``margin`` of head-only (or below it) on some task, named with their score and LR; None without
    a head-only row. Every row above it is said in words too, so a reader never has to compare numbers to know."""
    head = next((r for r in b.rows if r.method == "head"), None)
    if head is None:
        return None
    low = []
    for r in b.rows:
        if r is head:
            continue
        for t, c in r.tasks.items():
            h = head.tasks.get(t)
            if h is not None and c.mean <= h.mean + margin:
                low.append(f"{r.method} {r.label} on {t}: {100 * c.mean:.1f} vs head-only {100 * h.mean:.1f} "
                           f"(LR {c.sel.lr:g})")
    if not low:
        return (f"Every row beats head-only by more than {100 * margin:.0f} points on every task: every method "
                "learned beyond the classification head.")
    return (f"DID NOT LEARN beyond the head (at most {100 * margin:.0f} points above head-only): " + "; ".join(low)
            + ". At its LR and number of steps such a row learned nothing the head alone does not: try its LR grid "
              "(a preset's `lr_grid`) or more steps before reading it as the method's score.")


def one_seed(b) -> str | None:
    """Where some row has a single seed: say that the table ranks nothing among rows the bootstrap does not separate,
    with the smallest dev split's sampling error of one accuracy-like score (95%, at p = 0.5: 1.96·√(0.25/n))."""
    if not any(c.n == 1 for r in b.rows for c in r.tasks.values()):
        return None
    ns = [sum(v for k, v in r.split_sizes.items() if k not in ("train", "val") and not k.startswith("test"))
          for r in b.ok if r.split_sizes]
    err = f" (one run's accuracy on {min(ns):,} dev rows: ±{196 * (0.25 / min(ns)) ** 0.5:.1f} points, 95%)" if ns else ""
    return ("ONE SEED in some rows: their seed-to-seed spread is not in the table (nor in its tests), and the gaps "
            f"inside a column's bold group are within the dev set's sampling error{err}: read no order among such "
            "rows; the `cpu` preset (3 seeds) is the measurement.")
