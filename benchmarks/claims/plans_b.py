"""Rows 12, 13, 16, 17 and 19 of results/claims (issue 27): their setups as data, run by plans.py's machinery.

    PEFTZOO_DATA_DIR=../shared/data python benchmarks/claims/run.py --rows 12,13,16,17,19 [--dry-run] [--smoke]

Every run is a cpu-preset ``RunSpec`` (all-MiniLM-L6-v2, SST-2 1,500 train, 2 epochs, batch 32, LoRA on query+value
α = 16) whose cell is the preset's LoRA cell at a count with one thing changed: the init (``init_lora_weights``:
False for both factors random, "pissa", "loram"), the method (DoRA, Delta-LoRA) or the weight decay. Each
configuration is swept over its LR grid on seed 0 and selected on validation, then run on seeds 1, 2 there, as the
leaderboard. The rows share one store (``plans/shared``): a configuration two rows need (PiSSA r = 8: rows 13 and
16; LoRA r = 8: 13, 16, 19; LoRA r = 1: 16, 17) runs once, and the leaderboard's runs are read where the spec is
theirs. A configuration whose rule reads ΔW (rows 12, 19; 13's init and first-step magnitudes) records it with
``probe.DeltaSpectrum`` on every run, in ``plans/shared-probed``; a probed record also serves an unprobed request
(the probe changes nothing in training: tested). The verdicts are in verdicts_b.py.

Cost, as `--dry-run` printed it before any of these runs existed (Dec 4 2026; benchmarks/plan_cost.py's fit over
results/cpu, 2 threads; a run two rows share is costed once): row 12 36 runs, 0.30 CPU h; row 13 21 runs (7 from
the leaderboard), 0.12 h; row 16 42 runs (9 from the leaderboard, 7 row 13's), 0.21 h; row 17 42 runs (1 from the
leaderboard, 6 row 16's), 0.28 h; row 19 14 runs (3 row 12's), 0.09 h; 0.99 CPU h in all. With rows 14, 15, 18 in
the same invocation (`--rows 12,13,14,15,16,17,18,19`) row 16 takes 12 more of its runs from row 14 (LoRA r = 1, 64
at batch 32): 4.83 CPU h for the eight rows, rows 14, 15, 18 being 0.51, 3.27 and 0.15 of it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ROWS = ("12", "13", "16", "17", "19")
STORE = "shared"  # plans/<STORE>: one folder for every row here, so equal configurations run once


@dataclass(frozen=True)
class RowsB:
    """The five rows' settings (the default is the cpu leaderboard's SST-2 setting; ``smoke`` a seconds-sized one)."""
    task: str = "SST-2"  # the leaderboard's SST-2 setting: its LoRA r = 1, 8, 64 runs are reused (same specs)
    rank: int = 8  # rows 12, 13, 19: the leaderboard's middle count (LoRA r = 8, 73,728 elements)
    # row 12: AdamW's decoupled decay multiplies the factors by (1 − lr·wd) each step: over 94 steps at lr 3e-3, wd
    # 0.1 pulls them in by ~3% (small) and wd 1.0 by ~25% (large); 0 is the leaderboard's
    decays: tuple = (0.0, 0.1, 1.0)
    inits12: tuple = (True, False)  # row 12: zero-B (LoRA's default) vs both factors random (init_lora_weights=False)
    # row 12: the leaderboard's LoRA optimum (3e-3) and up to 10× above it: runs that fail are the claim's other half
    grid12: tuple | None = (1e-3, 3e-3, 1e-2, 3e-2)
    ranks16: tuple = (1, 8, 64)  # row 16: the leaderboard's three counts, each (method, rank) at its own swept LR
    ranks17: tuple = (1, 2, 4)  # row 17: the paper's "low rank", at equal rank (DoRA adds d_out magnitudes a layer)
    start_steps: int = 10  # row 19: Delta-LoRA's K (the paper's 500 would never move W in a 94-step run)
    update_ratio: float = 2.0  # row 19: Delta-LoRA's λ (the paper's 2)
    fail_score: float = 0.6  # row 12: a run fails when its final validation accuracy is below this (chance ~0.5)


def smoke() -> RowsB:
    """Every row's code path on the tiny model: two ranks, two decays, K = 0 (W moves from step 2 of the 2)."""
    return RowsB(decays=(0.0, 1.0), grid12=None, ranks16=(2, 8), ranks17=(1, 2), start_steps=0)


INIT_LABEL = {True: "zero-B", False: "both random"}


def configs(b: RowsB, rows, pre, cells, grid, Config) -> list:
    """The configurations of ``rows`` (of ROWS) from the preset's LoRA cells (``cells[("lora", r)]`` at r = 1, 8,
    64; other ranks are made at r × r = 1's count, exact for LoRA), ``grid(task, method)`` the preset's LR grid."""
    one = cells[("lora", 1)]

    def lora(r):
        if ("lora", r) in cells:
            return cells[("lora", r)]
        n = one.achieved * r  # LoRA's count is linear in r
        return dataclasses.replace(one, hparams={**one.hparams, "r": r}, label=f"{n:,}", budget=n, achieved=n,
                                   entry=f"lora:r={r}")

    def init(r, how):
        c = lora(r)
        return c if how is True else dataclasses.replace(c, hparams={**c.hparams, "init_lora_weights": how})

    def cfg(row, key, cell, changes=None, g=None, probe=False):
        return Config(row, key, b.task, cell, changes or {}, tuple(g or grid(b.task, "lora")), store=STORE,
                      probe=probe)
    out = []
    if "12" in rows:
        out += [cfg("12", (f"LoRA r={b.rank} {INIT_LABEL[i]}", wd), init(b.rank, i), {"weight_decay": wd},
                    b.grid12, probe=True) for i in b.inits12 for wd in b.decays]
    if "13" in rows:  # the init's and the first step's magnitude are read from the PiSSA and LoRAM runs
        out += [cfg("13", ("LoRA", b.rank), lora(b.rank))]
        out += [cfg("13", (name, b.rank), init(b.rank, how), probe=True) for name, how in (("PiSSA", "pissa"),
                                                                                           ("LoRAM", "loram"))]
    if "16" in rows:
        out += [cfg("16", (name, r), init(r, how), probe=name == "PiSSA" and r == b.rank)
                for r in b.ranks16 for name, how in (("LoRA", True), ("PiSSA", "pissa"))]
    if "17" in rows:
        alpha = pre.hparams.get("dora", {}).get("alpha", one.hparams.get("alpha"))
        for r in b.ranks17:
            dora = dataclasses.replace(lora(r), method="dora", hparams={"alpha": alpha, "r": r}, label=f"r={r}",
                                       budget=None, achieved=None, entry="")  # DoRA's count: its own (see setup)
            out += [cfg("17", ("LoRA", r), lora(r)), cfg("17", ("DoRA", r), dora, g=grid(b.task, "dora"))]
    if "19" in rows:
        c = lora(b.rank)
        delta = dataclasses.replace(c, method="deltalora", hparams={**c.hparams, "start_steps": b.start_steps,
                                                                  "update_ratio": b.update_ratio})
        out += [cfg("19", ("LoRA", b.rank), c, probe=True), cfg("19", ("Delta-LoRA", b.rank), delta, probe=True)]
    return out


CLAIM = {"12": "LoRA converges to a low-rank solution, or fails loudly (high-rank, large-magnitude ΔW)",
         "13": "Magnitude, not the spectrum: PiSSA's gain over LoRA vanishes once the init's magnitude is matched "
               "(LoRAM)",
         "16": "PiSSA beats LoRA when each is at its own swept LR, at several ranks ('LoRA Without Regret' method)",
         "17": "DoRA improves on LoRA at low rank (by 22–37%)",
         "19": "Delta-LoRA breaks the low-rank bottleneck: its total change of W has a higher rank than LoRA's at the "
               "same r, and it scores better"}
SOURCE = {"12": "Kim, Kim & Ryu, ICML 2025 ('LoRA training provably converges to a low-rank global minimum or it "
                "fails loudly'): zero init and weight decay bias LoRA to the low-rank, small-magnitude minimum",
          "13": "Zhang et al. 2025 (arXiv:2507.06558, 'The Primacy of Magnitude'): spectral inits help through the "
                "update's magnitude; LoRAM matches it without an SVD",
          "16": "Meng et al. 2024 (PiSSA, arXiv:2404.02948): PiSSA > LoRA; methodology of Thinking Machines, 'LoRA "
                "Without Regret' (2025): every arm at its own best LR",
          "17": "Liu et al. 2024 (DoRA), commonsense reasoning with LLaMA-7B: DoRA ahead of LoRA by 22–37% at low "
                "rank",
          "19": "Zi et al. 2023 (Delta-LoRA, arXiv:2309.02411): W moves by the change of B A, escaping LoRA's rank r"}


def setup(row: str, s, b: RowsB) -> str:
    """The README's setup cell of a row (``s``: plans.Scale, for the seeds)."""
    seeds = ", ".join(map(str, s.seeds))
    base = (f"cpu preset setting ({b.task} 1,500 train, 2 epochs, batch 32, all-MiniLM-L6-v2, query+value, α = 16; "
            f"each configuration swept on seed 0, its LR selected on validation, seeds {seeds})")
    grid = "LoRA's leaderboard grid 1e-4…1e-2 (5 points) for every arm"
    text = {
        "12": f"LoRA r = {b.rank}; init zero-B vs both random (A, B Kaiming-uniform); AdamW weight decay "
              f"{', '.join(f'{d:g}' for d in b.decays)}; LR grid {', '.join(f'{x:g}' for x in b.grid12 or ())}; "
              f"ΔW = W_eff − W_pretrained per q/v layer at the end (effective, stable rank, ‖ΔW‖_F, mean over the 12 "
              f"layers); a run fails when its final validation accuracy is < {b.fail_score:g}",
        "13": f"LoRA, PiSSA and LoRAM (the paper's magnitude init; its s·B A is the paper's at any α) at r = "
              f"{b.rank}; {grid}; ‖s·B A‖_F at init and the first step's ‖ΔW_eff‖_F recorded (PiSSA, LoRAM)",
        "16": f"LoRA and PiSSA at r = {', '.join(map(str, b.ranks16))} (the leaderboard's counts), each (method, "
              f"rank) at its own LR; {grid}; PiSSA r = {b.rank}'s runs are row 13's",
        "17": f"LoRA and DoRA at r = {', '.join(map(str, b.ranks17))} (equal rank: DoRA adds d_out = 384 "
              f"magnitudes a layer, 1.5×, 1.25×, 1.125× LoRA's count at r = 1, 2, 4; no integer DoRA rank matches "
              f"LoRA's count within 10% there), each at its own LR; LoRA's and DoRA's leaderboard grids 1e-4…1e-2",
        "19": f"LoRA and Delta-LoRA (λ = {b.update_ratio:g}, K = {b.start_steps} of 94 steps) at r = {b.rank}; "
              f"{grid}; the total change W_T + s·B A − W_pretrained per q/v layer (effective rank)"}[row]
    return f"{base}; {text}"
