"""``DeltaSpectrum``: a fit callback recording what rows 12, 13 and 19 read of a run's weight change, into its record.

ΔW = W_eff − W_pre per adapted layer, W_eff = ``base_weight() + delta_weight()`` (float64) whatever the method does to
W (LoRA leaves it, PiSSA/LoRAM start from a residual, Delta-LoRA moves it), W_pre the pretrained weight read from a
fresh copy of the model. At every epoch end: ``peftzoo.analysis.analyze_deltas``'s effective, stable and numerical
rank and ‖ΔW‖_F, mean over the layers (and per layer). At the start: ‖W_eff(0) − W_pre‖_F (the output's move at init:
0 unless both factors start random) and ‖delta_weight()‖_F (the part the factors start with: PiSSA's top-r part,
LoRAM's magnitude); after step 1: ‖W_eff(1) − W_eff(0)‖_F (the first update's magnitude). It draws no random number
from the run's generators (the copy is loaded under ``fork_rng``), so the run trains as without it (tested).
"""
from __future__ import annotations

import numpy as np
import torch

from peftzoo.bench.train import Callback


class DeltaSpectrum(Callback):
    def __init__(self, spec):
        self.spec, self.epochs, self.first = spec, [], None

    def on_train_begin(self, ad, total_steps):
        from peftzoo.bench.models import load_model
        self.layers = getattr(ad, "layers", {})
        if not self.layers:
            raise ValueError(f"{ad.name}: DeltaSpectrum needs an adapter with per-layer updates (ad.layers)")
        with torch.random.fork_rng(devices=[]):  # loading draws a fresh head: the run's RNG is left as it was
            fresh, _ = load_model(self.spec.model, self.spec.task_spec())
        self.pre = {}
        for n, ly in self.layers.items():
            w = fresh.get_submodule(n).weight.detach()
            self.pre[n] = (w.t() if ly.fan_in_fan_out else w).double()
        self.start = self._eff()
        with torch.no_grad():
            self.init = {"init_move_fro": _mean((self.start[n] - self.pre[n]).norm() for n in self.layers),
                         "init_factor_fro": _mean(ly.delta_weight().double().norm() for ly in self.layers.values())}

    @torch.no_grad()
    def _eff(self) -> dict:
        return {n: ly.base_weight().detach().double() + ly.delta_weight().detach().double()
                for n, ly in self.layers.items()}

    def on_step_end(self, step, loss):
        if step == 1:
            now = self._eff()
            self.first = _mean((now[n] - self.start[n]).norm() for n in self.layers)

    def on_epoch_end(self, result):
        self.epochs.append({"epoch": result.epoch, **self.measure()})

    def measure(self) -> dict:
        """The spectrum of ΔW now (a non-finite ΔW, a run that blew up, is reported as such, not analysed)."""
        from peftzoo.analysis import AnalysisConfig, LayerDelta, analyze_deltas
        eff = self._eff()
        dw = {n: eff[n] - self.pre[n] for n in self.layers}
        if not all(bool(torch.isfinite(d).all()) for d in dw.values()):
            return {"nonfinite": True}
        deltas = {n: LayerDelta(self.pre[n], d) for n, d in dw.items() if bool(d.any())}
        if not deltas:
            return {"effective_rank": 0.0, "stable_rank": 0.0, "numerical_rank": 0.0, "dW_fro": 0.0}
        layers, _ = analyze_deltas(deltas, AnalysisConfig(threads=1, top_k=1, eps=(0.5,), max_dim=1))
        keys = ("effective_rank", "stable_rank", "numerical_rank", "dW_fro", "relative_norm")
        return {**{k: _mean(v[k] for v in layers.values()) for k in keys},
                "layers": {n: {k: v[k] for k in keys[:4]} for n, v in layers.items()}}

    def summary(self) -> dict:
        """What the record keeps (``extra["delta_spectrum"]``)."""
        return {**self.init, "first_step_fro": self.first, "epochs": self.epochs}


def _mean(xs) -> float:
    return float(np.mean([float(x) for x in xs]))


def last(rec) -> dict | None:
    """The record's ΔW spectrum at its last epoch, or None (not probed, failed, or non-finite)."""
    ep = (rec.extra or {}).get("delta_spectrum", {}).get("epochs") if rec is not None and rec.ok else None
    return ep[-1] if ep and "effective_rank" in ep[-1] else None
