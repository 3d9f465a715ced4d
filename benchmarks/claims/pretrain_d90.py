"""Claim 9 (Aghajanyan et al. 2020: pre-training lowers d_90) on Li et al.'s FC net 784-200-200-10 for MNIST.

θ0 is either the seed's random init (claim 10's "fc-10k" searches, reused) or that same init after ordinary
training (all weights, Adam) on Fashion-MNIST, loaded with ``peftzoo d90 --init-from``; both run the same d_90
search (mnist_d90.COMMON + the fc case), one per seed. Reported: d_90 relative to each θ0's own full fine-tuning
baseline, and the smallest d whose MNIST accuracy reaches a fixed ``ACC`` (read off each search's curve).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mnist_d90  # noqa: E402
from measure import ci95, fmt  # noqa: E402

from peftzoo import palette  # noqa: E402

ACC = 0.85  # fixed absolute MNIST test accuracy for the second metric
PRETRAIN = {"task": "fashion-mnist", "net": "fc", "epochs": 3, "lr": 1e-3, "batch_size": 128, "max_train": None}
PLOT = "c9_pretrain_d90.png"


def pretrain(seed: int, cache: Path, data_dir) -> dict:
    """The FC net of ``seed``'s random init trained on Fashion-MNIST (Adam, all weights); its state_dict goes to
    ``cache/fc-fashion-s{seed}.pt``, its settings and hash to the .json beside it. Cached: the file is reused
    while the settings (and the .pt's content) are the same, else retrained."""
    import torch

    from peftzoo.bench.store import write_bytes, write_json
    from peftzoo.intrinsic.images import accuracy, build_net, file_sha, image_source, load_images
    pt, meta_path = weights(seed, cache), Path(cache) / f"fc-fashion-s{seed}.json"
    settings = {**PRETRAIN, "seed": seed, "data": image_source(PRETRAIN["task"], data_dir), "optimizer": "Adam"}
    if pt.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings and meta.get("sha") == file_sha(pt):
            return meta
    t0 = time.perf_counter()
    x, y, xt, yt = load_images(PRETRAIN["task"], data_dir, PRETRAIN["max_train"])
    net = build_net(PRETRAIN["net"], x.shape[-1], seed)  # the same θ as the random-init search of this seed
    opt = torch.optim.Adam(net.parameters(), lr=PRETRAIN["lr"])
    g, bs = torch.Generator().manual_seed(seed), PRETRAIN["batch_size"]
    for _ in range(PRETRAIN["epochs"]):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), bs):
            idx = perm[i:i + bs]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    write_bytes(pt, buf.getvalue())
    meta = {"settings": settings, "sha": file_sha(pt), "fashion_test_acc": accuracy(net, xt, yt),
            "wall_s": time.perf_counter() - t0}
    write_json(meta_path, meta)
    return meta


def weights(seed: int, cache: Path) -> Path:
    return Path(cache) / f"fc-fashion-s{seed}.pt"


def _search(cmd: list[str], path: Path, data_dir) -> dict:
    """A finished search's JSON; runs (or resumes) ``peftzoo d90`` unless the JSON holds a d_90 already."""
    rec = json.loads(path.read_text()) if path.is_file() else {}
    if "d90" not in rec:  # missing, or a killed search's partial scores (d90 resumes from them)
        cmd = [sys.executable, "-m", "peftzoo", *cmd[1:]] + (["--data-dir", str(data_dir)] if data_dir else [])
        subprocess.run(cmd, check=True)
        rec = json.loads(path.read_text())
    return rec


def at_accuracy(curve: dict, acc: float = ACC) -> tuple[int | None, list]:
    """(smallest d whose score reaches ``acc``, [largest d below it that does not, that d]); (None, [max d, None])
    when no d of the curve reaches it. ``curve``: a search JSON's {"d": {"mean": ...}}."""
    pts = sorted((int(d), v["mean"]) for d, v in curve.items())
    hit = next((d for d, s in pts if s >= acc), None)
    below = [d for d, s in pts if s < acc and (hit is None or d < hit)]
    return hit, [max(below) if below else None, hit]


def _case(recs: list[dict]) -> dict:
    d_acc = [at_accuracy(r["curve"]) for r in recs]
    return {"d90": [r["d90"] for r in recs], "reached": [bool(r.get("reached", True)) for r in recs],
            "bracket": [r["bracket"] for r in recs], "baseline": [r["baseline"] for r in recs],
            "target": [r["target"] for r in recs], "d_acc": [a for a, _ in d_acc], "acc_bracket": [b for _, b in d_acc],
            "curves": [{d: v["mean"] for d, v in r["curve"].items()} for r in recs],
            "wall_s": sum(r.get("wall_s", 0.0) for r in recs)}


def run_all(out: Path, data_dir, cache: Path | None = None) -> dict:
    """Claim 9's data: ``out`` is claim 10's d_90 folder (results/claims/d90), whose fc-10k-s{seed} searches are the
    random-init case (run only if missing); the pre-trained searches go to ``out/fc-10k-fashion-s{seed}``, the
    pre-trained weights (0.8 MB each) to ``cache`` (default ``out/pretrain``)."""
    out = Path(out)
    cache = Path(cache) if cache is not None else out / "pretrain"
    rand, pre, metas = [], [], []
    for seed in mnist_d90.SEEDS:
        rand.append(_search(mnist_d90.command("fc-10k", seed, out), mnist_d90.result_path("fc-10k", seed, out),
                            data_dir))
        meta = pretrain(seed, cache, data_dir)
        metas.append(meta)
        cmd = [*mnist_d90.command("fc-10k", seed, out)[:-1], str(out / f"fc-10k-fashion-s{seed}"),
               "--init-from", str(weights(seed, cache))]
        pre.append(_search(cmd, out / f"fc-10k-fashion-s{seed}" / "mnist-fc-did.json", data_dir))
    return {"acc": ACC, "pretrain": PRETRAIN, "d90_args": [*mnist_d90.COMMON, *mnist_d90.CASES["fc-10k"]],
            "cases": {"random": _case(rand), "fashion-pretrained": {**_case(pre), "pretrain": metas}}}


def _lo(xs):
    m, h = ci95(xs)
    return m - (0 if np.isnan(h) else h)


def _hi(xs):
    m, h = ci95(xs)
    return m + (0 if np.isnan(h) else h)


def _compare(pre: list, rand: list) -> str:
    """holds / does not hold / undecided for 'pre < rand', by separated 95% CIs; a missing value: undecided."""
    if None in pre or None in rand:
        return "undecided (a seed never reached it)"
    return "**holds**" if _hi(pre) < _lo(rand) else "**does not hold**" if _lo(pre) >= _hi(rand) else \
        "undecided (CIs overlap)"


def _show(xs, brackets) -> str:
    reached = [x for x in xs if x is not None]
    miss = f"; {len(xs) - len(reached)} seed(s) > {max(b[0] or 0 for b in brackets)}" if len(reached) < len(xs) else ""
    br = ", ".join(f"{lo}..{hi}" for lo, hi in brackets)
    return (fmt(reached) if reached else "none reached") + f" [brackets {br}]" + miss


def row(d: dict) -> tuple:
    """Claim 9's README row: (number, claim, source, setup, ours, verdict, rule, plot file)."""
    r, p = d["cases"]["random"], d["cases"]["fashion-pretrained"]
    rel, ab = _compare(p["d90"], r["d90"]), _compare(p["d_acc"], r["d_acc"])

    fash = np.mean([m["fashion_test_acc"] for m in p["pretrain"]])
    ours = (f"d_90 (90% of own full FT): random init {_show(r['d90'], r['bracket'])}, full FT "
            f"{fmt(r['baseline'], 4)}; Fashion-pre-trained {_show(p['d90'], p['bracket'])}, full FT "
            f"{fmt(p['baseline'], 4)}. Smallest d reaching accuracy {d['acc']}: random "
            f"{_show(r['d_acc'], r['acc_bracket'])}; pre-trained {_show(p['d_acc'], p['acc_bracket'])}")
    verdict = f"{rel} (relative d_90); at fixed accuracy {d['acc']}: {ab.replace('**', '')}"
    if min(np.mean(r["baseline"]), np.mean(p["baseline"])) < d["acc"]:  # a baseline that did not learn
        verdict = f"undecided: a full-FT baseline is below accuracy {d['acc']} (it did not learn)"
    pt = d["pretrain"]
    setup = (f"FC 784-200-200-10, MNIST 10k train; θ0 = the seed's random init, or that init trained on "
             f"Fashion-MNIST ({pt['epochs']} epoch(s), Adam lr {pt['lr']}, batch {pt['batch_size']}; Fashion test "
             f"accuracy {fash:.3f}); DID, then the claim-10 search (grid 30..10,000 + 4 bisections), 3 seeds")
    rule = ("decided by relative d_90: pre-trained's 95% CI entirely below random init's (does not hold: entirely "
            f"above); the d at fixed accuracy {d['acc']} (smallest grid/bisection d reaching it, bracket shown) is "
            "reported by the same rule; both θ0's full FT must reach that accuracy, else undecided")
    return ("9", "Pre-training lowers d_90",
            "Aghajanyan et al. 2020 (arXiv:2012.13255): 'pre-training implicitly minimizes intrinsic dimension' "
            "(d_90 of RoBERTa falls over pre-training checkpoints; ≈ 200 on MRPC when pre-trained)", setup, ours,
            verdict, rule, PLOT)


def plot(d: dict, out: Path) -> Path:
    """Score vs d (log x) per seed for both θ0's, their 90%-of-baseline lines and the fixed-accuracy line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftzoo.bench.store import write_figure
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    colors = palette.series(["did"] * len(d["cases"]))  # both θ0's searched with DID: shades of its colour
    for i, (name, c) in enumerate(d["cases"].items()):
        for j, curve in enumerate(c["curves"]):
            ds = sorted(curve, key=int)
            ax.plot([int(x) for x in ds], [curve[x] for x in ds], marker="o", ms=3, lw=1, alpha=0.8, color=colors[i],
                    label=f"{name} (per seed)" if j == 0 else None)
        ax.axhline(np.mean(c["target"]), color=colors[i], ls="--", lw=0.8, label=f"{name}: 90% of full FT")
    ax.axhline(d["acc"], color="k", ls=":", lw=0.8, label=f"accuracy {d['acc']}")
    ax.set_xscale("log")
    ax.set(xlabel="subspace dimension d (DID)", ylabel="MNIST test accuracy",
           title="Pre-training on Fashion-MNIST vs random θ0 (FC)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / PLOT
    write_figure(path, fig, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
