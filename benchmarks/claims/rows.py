"""results/claims/README.md from the measured numbers: one table row per claim, verdicts computed by the rules
stated under each row (never typed in by hand)."""
from __future__ import annotations

import numpy as np

import lora_scaling
import planrun
import pretrain_d90
from measure import ci95, fmt

CMD = "`PEFTZOO_DATA_DIR=../shared/data python benchmarks/claims/run.py`"
PENDING = "pending: needs the cpu leaderboard runs (issue 10)"


def _lo(xs):
    m, h = ci95(xs)
    return m - (0 if np.isnan(h) else h)


def _hi(xs):
    m, h = ci95(xs)
    return m + (0 if np.isnan(h) else h)


def c4(d):
    r, left = d["c4"]["right"], d["c4"]["left"]
    chance = 1 / r["dim"]
    above = _lo(r["phi11"]) > 10 * chance
    top = np.mean(r["phi11"]) > np.mean(r["phi88"])
    weaker = f" qualitatively; φ(1,1) is below the paper's 0.5" if np.mean(r["phi11"]) < 0.5 else ""
    verdict = (f"**holds**{weaker}" if above and top else "**partly holds**: above chance, but not concentrated in the top "
               "direction" if above else "**does not hold** at this scale")
    ours = (f"φ(1,1) = {fmt(r['phi11'])} (chance 1/d = {chance:.4f}); φ(8,8) = {fmt(r['phi88'])} (chance "
            f"{8 * chance:.3f}); left singular vectors: φ(1,1) = {fmt(left['phi11'])}")
    rule = "φ(1,1)'s 95% CI above 10× chance and φ(1,1) > φ(8,8)"
    return ("4", "Top directions of r = 8 and r = 64 adapters overlap; the rest look random",
            "Hu et al. 2021 (LoRA) §7.2, Fig. 3: φ > 0.5 for i = 1 (GPT-3, A matrices)",
            "LoRA r = 8 seed s vs r = 64 seed s+1 (independent inits); φ of ΔW's right singular vectors (the input "
            "side, A's row space), mean over the 12 query/value layers; 3 pairs", ours, verdict, rule, "c4_subspace.png")


def c5(d):
    a = d["c5"]
    f4, f64 = a[4]["factor_q"], a[64]["factor_q"]
    more = _lo(f4) > _hi(f64)
    hidden = np.mean(a[4]["proj_dW_q"]) < np.mean(a[4]["proj_W_q"]) / 3
    weaker = "; the r=4 factor is far below the paper's 21.5" if np.mean(f4) < 21.5 / 3 else ""
    weaker += "; at r=64 ΔW does not amplify at all (factor < 1)" if _hi(f64) < 1 else ""
    verdict = (f"**holds**{weaker}" if more and hidden and np.mean(f4) > 1 else
               "**partly holds**" if (more or hidden) else "**does not hold** at this scale")
    ours = (f"factor (query layers) r=4: {fmt(f4)}, r=64: {fmt(f64)}; ‖UᵀWVᵀ‖_F r=4: ΔW dirs "
            f"{np.mean(a[4]['proj_dW_q']):.3f}, W's top-4 {np.mean(a[4]['proj_W_q']):.3f}, random "
            f"{np.mean(a[4]['proj_rand_q']):.3f}; r=64: ΔW dirs {np.mean(a[64]['proj_dW_q']):.3f}, W's top-64 "
            f"{np.mean(a[64]['proj_W_q']):.3f}, random {np.mean(a[64]['proj_rand_q']):.3f}")
    rule = ("factor(r=4)'s CI above factor(r=64)'s, factor(r=4) > 1, and ΔW's directions hold < 1/3 of what W's own "
            "top directions hold (partly: one of the first and the last)")
    return ("5", "ΔW amplifies directions not emphasised in W, more at low rank",
            "Hu et al. 2021 Table 7 (GPT-3 W_q, layer 48): factor ≈ 21.5 at r = 4, ≈ 1.9 at r = 64",
            "LoRA r = 4 and r = 64, 3 seeds; ‖ΔW‖_F / ‖UᵀWVᵀ‖_F with U, V ΔW's top-r singular vectors, mean over the "
            "6 query layers", ours, verdict, rule, "c5_amplification.png")


def c7(d):
    c = d["c7"]
    full = c["full FT"]["count"]
    loras = {k: v["count"] for k, v in c.items() if k != "full FT"}
    creates = all(_lo(v) > _hi(full) for v in loras.values())
    verdict = ("**holds**" if creates else "**does not hold** at this scale") + " (LoRA vs full FT)"
    by_rank = ", ".join(f"{k}: {fmt(v)}" for k, v in loras.items())
    rank_trend = np.mean(loras["LoRA r=64"]) - np.mean(loras["LoRA r=4"])
    trend = ("more at r=64 than at r=4" if _lo(loras["LoRA r=64"]) > _hi(loras["LoRA r=4"]) else
             "fewer at r=64 than at r=4" if _hi(loras["LoRA r=64"]) < _lo(loras["LoRA r=4"]) else
             f"no clear rank trend (r=64 − r=4 = {rank_trend:+.2f})")
    ours = f"intruders among the top 10 at ε = 0.5, per q/v layer: {by_rank}; full FT: {fmt(full)}"
    where = sorted({n for v in c.values() for n in v["layers_with_intruders"]})
    ours += f" (every intruder found is in: {', '.join(where) or 'none'})"
    verdict += f"; rank: {trend}"
    rel = ", ".join(f"{k} {np.mean(v['relative_norm']):.3g}" for k, v in c.items())
    rule = f"every LoRA rank's CI above full FT's (‖ΔW‖/‖W‖ on q/v: {rel})"
    return ("7", "LoRA creates intruder dimensions, full fine-tuning hardly any; more at higher rank",
            "Shuttleworth et al. 2024 (arXiv:2410.21228): intruders in LoRA, ~none in full FT; fewer as rank grows "
            "(esp. rsLoRA), i.e. the issue's 'more at higher rank' is not the paper's statement",
            "LoRA r = 4, 8, 64 and full FT, 3 seeds each; top-10 left singular vectors of W₀ + ΔW vs all of W₀'s, on "
            "the 12 query/value layers", ours, verdict, rule, "c7_intruders.png")


def c8(d):
    g = d["c8"]
    low = _hi(g["stable"]) < 0.1 * g["max_rank"]
    verdict = "**holds**" if low else "**does not hold** at this scale"
    ours = (f"stable rank of ∇W {fmt(g['stable'])}, effective rank {fmt(g['effective'])} "
            f"({100 * np.mean(g['eff_fraction']):.1f}% of min(d_out, d_in), mean {g['max_rank']:.0f})")
    rule = "stable rank's 95% CI below 10% of min(d_out, d_in)"
    return ("8", "Full fine-tuning's gradients are low-rank",
            "Zhao et al. 2024 (GaLore) §3: gradients become low-rank during training (no single number)",
            f"full FT, 3 seeds; ∇W of all {g['n_layers']} nn.Linear weights every 5 steps (GradientRank callback in "
            "fit), mean over layers and steps", ours, verdict, rule, "c8_gradient_rank.png")


def c10(d):
    if "c10" not in d:
        return ("10", "MNIST FC d_90 ≈ 750; LeNet lower (≈ 290)", "Li et al. 2018", "—", "not run (--skip-d90)",
                "not measured", "—", None)
    c = d["c10"]
    fc10, fc5, le = c["fc-10k"]["d90"], c["fc-5k"]["d90"], c["lenet-10k"]["d90"]
    if _hi(fc5) < _lo(fc10):
        data = "d_90 grows from 5k to 10k images, so the gap to 750 (60k images) is consistent with data size"
    elif _hi(fc10) < _lo(fc5):
        data = "d_90 shrinks from 5k to 10k images: data size does not explain the gap to 750"
    else:
        data = "d_90 at 5k and 10k images is not distinguishable (CIs overlap): no evidence that data size explains it"
    lenet = "LeNet < FC: **holds**" if _hi(le) < _lo(fc10) else "LeNet < FC: **does not hold**" if _lo(le) >= _hi(
        fc10) else "LeNet vs FC: CIs overlap, undecided"
    base = ", ".join(f"{k} full FT {np.mean(v['baseline']):.4f}" for k, v in c.items())
    ours = f"d_90 FC 10k: {fmt(fc10)}; FC 5k: {fmt(fc5)}; LeNet 10k: {fmt(le)} ({base})"
    return ("10", "MNIST FC d_90 ≈ 750 (is our 590 the data size?); LeNet lower than FC",
            "Li et al. 2018 (arXiv:1804.08838) §3: FC 784-200-200-10 d_90 ≈ 750, LeNet ≈ 290 (60k train images)",
            "DID (Fastfood), 5 epochs, one d_90 search per seed (3 seeds), grid 30..10,000 + 4 bisections",
            ours, f"{data}; {lenet}", "CIs of the per-seed d_90 separated", "c10_d90.png")


def pending(d):
    sc = d["scores"]
    side = ", ".join(f"{k} {fmt(v)}" for k, v in sc.items())
    return [
        ("1", "LoRA's best LR ≈ 10× full fine-tuning's", "Thinking Machines, 'LoRA Without Regret' 2025: fitted "
         "multiplier 9.8", "—", PENDING, "not yet testable here", "missing: LR sweeps (≥ 5 LRs, 3 seeds) of full FT "
         "and LoRA r = 1, 8, 64 on a task that separates methods; the committed quick run has one LR per method, "
         "1 seed", None),
        ("2", "With α/r, early curves ≈ identical for r = 1…256 and best LR ≈ rank-independent; with α/√r not, and "
         "rsLoRA learns better at high rank", "Kalajdzievski 2023 (rsLoRA)", "—", "not run yet: designed in "
         "benchmarks/claims/lora_scaling.py (30 SST-2 runs at the cpu leaderboard's setting, ~24 CPU min)",
         "not yet measured", "missing: the runs of `python benchmarks/claims/lora_scaling.py` (LoRA and rsLoRA at "
         "r = 1…256, one shared LR with per-step losses, LR sweeps at r = 1 and 256, 3 seeds at r = 256)", None),
        ("3", "Rank matters little on GLUE-style tasks: r = 1 ≈ r = 64", "Hu et al. 2021 Tables 6–7", "—",
         f"{PENDING}. Side evidence at one LR (2e-3, α = 16, not each rank's best): {side}", "not yet testable here",
         "missing: r = 1 and r = 64 at each one's best LR (LR sweep, 3 seeds)", None),
        ("6", "Attention-only LoRA < MLP-only or all-layer LoRA at equal parameters", "'LoRA Without Regret' 2025",
         "—", "not run yet: designed in benchmarks/claims/lora_scaling.py (18 SST-2 runs)", "not yet measured",
         "missing: the runs of `python benchmarks/claims/lora_scaling.py` (LoRA at 165,888 elements on attention "
         "r = 9 / MLP r = 7 / all-linear r = 4, each LR-swept on validation, 3 seeds)", None),
        ("9", "Pre-training lowers d_90", "Aghajanyan et al. 2020", "—", "not finished: designed in "
         "benchmarks/claims/pretrain_d90.py (MNIST FC net from random init vs pre-trained on Fashion-MNIST, 3 seeds; "
         "the random-init searches are claim 10's)", "not yet measured", "missing: the pre-trained searches of "
         "`python benchmarks/claims/run.py` (d_90 relative to each baseline and the d reaching 0.85 accuracy)", None),
        ("11", "VeRA ≈ LoRA at ~10× fewer parameters; DoRA > LoRA at low rank; AdaLoRA > LoRA at equal budget; "
         "LoRA+ > LoRA", "Kopiczko et al. 2024; Liu et al. 2024; Zhang et al. 2023; Hayou et al. 2024", "—", PENDING,
         "not yet testable here", "missing: the leaderboard's budget-matched runs with per-method LR sweeps and 3 "
         "seeds (the quick run: 1 seed, 1 LR)", None),
    ]


def readme(d: dict) -> str:
    measured = [c4(d), c5(d), c7(d), c8(d), c10(d)] + ([pretrain_d90.row(d["c9"])] if "c9" in d else []) \
        + ([lora_scaling.row_c2(d["c2"])] if "c2" in d else []) + ([lora_scaling.row_c6(d["c6"])] if "c6" in d else [])
    measured += [planrun.measured_row(r, d[f"c{r}"]) if f"c{r}" in d else planrun.planned_row(r)
                 for r in planrun.DECIDE]  # rows 14, 15, 18: planned until `run.py --rows` has run them
    lb = d.get("leaderboard_rows", {})  # claims answered by the cpu leaderboard's runs (lb.py)
    done = {r[0] for r in measured}
    all_rows = sorted(measured + [tuple(lb.get(r[0], r)) for r in pending(d) if r[0] not in done],
                      key=lambda r: int(r[0]))
    lines = ["# The literature's claims on why low rank suffices, re-tested at CPU scale", "",
             f"Made by {CMD} on a 2-core CPU shared with other jobs: the 12 SST-2 runs train for "
             f"{d['sst2_train_s'] / 60:.0f} min in all (cached under `local-results/claims`; this invocation took "
             f"{d['wall_s'] / 60:.1f} min). Numbers: mean ± 95% t-interval half-width over seeds (n = 3). "
             f"SST-2 setup: {d['setup']}."
             + (f" The MNIST d_90 searches (claim 10) took {sum(v['wall_s'] for v in d['c10'].values()) / 60:.0f} min "
                "(their JSONs under `d90/` are reused when present)." if "c10" in d else "")
             + (f" Claims {', '.join(sorted(lb, key=int))} are read from the `cpu` leaderboard's runs "
                "(`results/cpu/runs`, benchmarks/claims/lb.py: the table's own selection and paired bootstrap); "
                "`python benchmarks/claims/run.py --reuse-measured` recomputes them alone." if lb else ""), "",
             "| # | claim | source (paper's number) | our setup | our number (95% CI) | verdict | rule / what is missing |",
             "|---|---|---|---|---|---|---|"]
    for row in all_rows:
        n, claim, src, setup, ours, verdict, rule, _ = row
        lines.append(f"| {n} | {claim} | {src} | {setup} | {ours} | {verdict} | {rule} |")
    lines += ["", "## Plots and caveats", ""]
    for row in measured:
        if row[7]:
            lines.append(f"- claim {row[0]}: [{row[7]}]({row[7]})")
    lines += ["", "Caveats: these are small runs (MiniLM, 320 SST-2 examples, 40 steps; dev accuracy "
              + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in d["scores"].items())
              + "); the papers' numbers come from GPT-3/RoBERTa/LLaMA trained to convergence. ΔW after 40 steps is "
              "small (see ‖ΔW‖/‖W‖ under claim 7), which limits how far any spectral effect can develop; a verdict "
              "here is about this scale. Raw numbers: `claims.json`; per-run analyses in the cache folder.", ""]
    return "\n".join(lines)
