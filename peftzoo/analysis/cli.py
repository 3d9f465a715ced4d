"""`peftzoo analyze`: the spectral diagnostics of an adapter (own or PEFT format), of two adapters side by side, or
of full fine-tuning (two checkpoints). ``register(subparsers)`` adds the subcommand to peftzoo's CLI."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("analyze", help="spectra, ranks, amplification, intruders and φ of weight updates",
                       description="Per adapted layer: ΔW's singular values, effective and stable rank, ‖ΔW‖/‖W‖, "
                       "LoRA's amplification factor, intruder dimensions vs ε; with --compare, φ(i, j) between two "
                       "adapters. Writes analysis.json and PNGs to --out.")
    p.add_argument("--model", default=None, help="the base model: transformers id or path (default: embedded MiniLM)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", help="adapter folder (peftzoo.json or PEFT's adapter_config.json), or a run JSON "
                     "of `peftzoo bench --save-adapters` (its saved adapter, on the model it ran on)")
    src.add_argument("--finetuned", help="a fully fine-tuned checkpoint of --model (transformers folder)")
    p.add_argument("--compare", help="a second adapter folder (or run JSON) for the same base: adds φ(i, j) between "
                   "the two")
    p.add_argument("--num-labels", type=int, default=None,
                   help="classification head size the adapter was trained with (default: the one its peftzoo.json "
                   "records, else the model config's)")
    p.add_argument("--rank", type=int, default=None, help="r of the amplification factor (default: ΔW's rank)")
    p.add_argument("--top-k", type=int, default=10, help="top singular vectors checked for intruder dimensions")
    p.add_argument("--eps", type=float, nargs="+", default=None, help="intruder cosine thresholds (default 0.1..0.9)")
    p.add_argument("--max-dim", type=int, default=64, help="largest i, j of the φ(i, j) heatmap")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the SVDs (1 is fastest on a busy CPU)")
    p.add_argument("--out", default="analysis", help="output folder for analysis.json and the PNGs")
    p.add_argument("--no-plots", action="store_true", help="write analysis.json only")
    p.set_defaults(fn=run)


def _load(path: str | None, num_labels: int | None, head: bool):
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from peftzoo.bench.models import default_model
    hf_logging.set_verbosity_error()
    path = path or default_model()
    kw = {"num_labels": num_labels} if num_labels else {}
    try:
        if not head:  # checkpoints: compare the shared backbone (heads of two checkpoints need not match)
            return AutoModel.from_pretrained(path)
        return AutoModelForSequenceClassification.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        where = "no such folder" if not Path(path).exists() and path.startswith(("/", ".", "~")) else str(e).splitlines()[0]
        raise FileNotFoundError(f"cannot load model {path!r}: {where}") from e


def saved_adapter(path: str, model: str | None) -> tuple[str, str | None]:
    """(adapter folder, base model) of ``--adapter``: a folder as given, with ``model``; a run JSON of ``bench
    --save-adapters``: the folder its record names (beside it) and, unless ``model`` is given, the model it ran on."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".json"):
        return path, model
    from peftzoo.bench import store
    rec, problem = store.read_record(p)
    if rec is None:
        raise ValueError(f"{p} is not a run record ({problem}): --adapter takes an adapter folder or a run JSON")
    saved = rec.saved_adapter or {}
    if "path" not in saved:
        why = saved.get("skipped") or "it ran without `peftzoo bench --save-adapters`"
        raise FileNotFoundError(f"run {p} has no saved adapter: {why}")
    return str(p.parent / saved["path"]), model or rec.spec.model


def _num_labels(adapter: str) -> int | None:
    """The head size a peftzoo-format adapter records of its base model (None: not recorded, or PEFT's format)."""
    import json
    meta = Path(adapter) / "peftzoo.json"
    return json.loads(meta.read_text()).get("base_model", {}).get("num_labels") if meta.is_file() else None


def run(args) -> None:
    from peftzoo.analysis.core import AnalysisConfig, analyze_adapter, analyze_checkpoints
    from peftzoo.analysis.report import write
    if args.compare and not args.adapter:
        raise ValueError("--compare needs --adapter (it compares two adapters of the same base model)")
    cfg = AnalysisConfig(rank=args.rank, top_k=args.top_k, max_dim=args.max_dim, threads=args.threads,
                         **({"eps": tuple(args.eps)} if args.eps else {}))
    cfg.check()
    if args.adapter:
        adapter, model = saved_adapter(args.adapter, args.model)
        compare = saved_adapter(args.compare, None)[0] if args.compare else None
        res = analyze_adapter(_load(model, args.num_labels or _num_labels(adapter), head=True), adapter, compare, cfg)
    else:
        res = analyze_checkpoints(_load(args.model, None, head=False), _load(args.finetuned, None, head=False), cfg)
    paths = write(res, args.out, plots=not args.no_plots)
    s = res["summary"]
    print(f"{res['source']['method']}: {s['layers']} adapted layers analysed in {res['seconds']:.1f} s")
    print(f"  mean effective rank {s['mean_effective_rank']:.2f}, stable rank {s['mean_stable_rank']:.2f}, "
          f"|ΔW|/|W| {s['mean_relative_norm']:.3g}, amplification {s['mean_amplification']:.2f}")
    e = min(s["mean_intruders"], key=float) if "0.5" not in s["mean_intruders"] else "0.5"
    print(f"  intruder dimensions per layer at ε={e}: {s['mean_intruders'][e]:.2f}")
    if "compare" in res:
        sim = res["compare"]["similarity"]
        phi11 = sum(v["phi"][0][0] for v in sim.values()) / len(sim)
        print(f"  φ(1, 1) between the two adapters, mean over layers: {phi11:.3f}")
    print("wrote " + ", ".join(str(p) for p in paths))
