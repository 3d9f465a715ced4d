"""The runs of one table share one config: ``check_configs`` names the keys that differ; ``config_line`` states it."""
from __future__ import annotations

import json
from collections import defaultdict

from peftzoo.bench.identity import canonical

# spec keys that legitimately differ between the rows of one table; every other key is the table's config
# (head_fit: how the head baseline trains its head; every other method has it normalised to "steps")
PER_ROW = frozenset({"method", "seed", "hparams", "lr", "budget", "achieved", "skip_reason", "suite", "cell",
                     "head_fit"})


def _differing(runs: list, keys, label: str) -> list[str]:
    out = []
    for k in sorted(keys):
        vals = defaultdict(list)
        for r in runs:
            vals[json.dumps(r.spec.to_dict().get(k), sort_keys=True)].append(r)
        if len(vals) > 1:
            out.append(f"{label}: {k} " + " vs ".join(f"{v} ({len(rs)} run{'s' * (len(rs) > 1)}, e.g. "
                                                       f"{rs[0].run_id})" for v, rs in sorted(vals.items())))
    return out


def _hp(r) -> str:
    return json.dumps(r.spec.hparams, sort_keys=True)


def check_configs(runs: list) -> None:
    """One table, one config: within a task every run shares all spec keys but PER_ROW, and within a row
    (task, method, hparams) every run shares all of them but the LR and the seed. Otherwise a ValueError names
    the keys that differ."""
    problems = []
    for t in sorted({r.task for r in runs}):
        rs = [r for r in runs if r.task == t]
        problems += _differing(rs, {k for r in rs for k in r.spec.to_dict()} - PER_ROW, t)
        for m in sorted({r.method for r in rs}):  # one row: a method at one hparams point (LRs are swept)
            for hp in sorted({_hp(r) for r in rs if r.method == m}):
                row = [r for r in rs if r.method == m and _hp(r) == hp]
                problems += _differing(row, PER_ROW - {"method", "seed", "suite", "lr", "hparams"}, f"{t} {m} {hp}")
    if problems:
        raise ValueError("the runs were made under different configs, so one table would mix them:\n  "
                         + "\n  ".join(problems) + "\nMove or delete the runs of the config you do not want (the "
                         "config is each run JSON's 'spec'), or bench each config into its own --suite.")


def config_line(ok: list) -> str:
    keys = ("max_train", "max_eval", "epochs", "batch_size", "max_len", "warmup", "weight_decay",
            "random_init", "skip_bad_rows", "selection", "val_fraction", "val_cap", "val_seed", "behaviour",
            "regression_targets", "data")
    per_task = {t: canonical(next(r.spec.to_dict() for r in ok if r.task == t)) for t in sorted({r.task for r in ok})}
    parts, varying = [], []
    for k in keys:
        vals = {t: s.get(k) for t, s in per_task.items()}
        if len({json.dumps(v) for v in vals.values()}) == 1:
            parts.append(f"{k} {next(iter(vals.values()))}")
        else:
            varying.append(f"{k}: " + ", ".join(f"{t} {v}" for t, v in vals.items()))
    skipped = sum(sum((r.data_skipped or {}).values()) for r in ok)
    return ("; ".join(parts) + "." + (" Per task: " + "; ".join(varying) + "." if varying else "")
            + (f" Bad data rows skipped (--skip-bad-rows), summed over runs: {skipped}." if skipped else ""))
