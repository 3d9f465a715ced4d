"""Diagnostics of weight updates: why low rank suffices, measured on your own adapters (``peftzoo analyze``).

    from peftzoo.analysis import analyze_adapter, write
    res = analyze_adapter(base_model, "out/adapter", compare="out/adapter-r64")   # own or PEFT format
    write(res, "out/analysis")                 # analysis.json + spectra.png, intruders.png, similarity.png
"""
from peftzoo.analysis.core import AnalysisConfig, analyze_adapter, analyze_checkpoints, analyze_deltas, compare_bases
from peftzoo.analysis.gradrank import GradientRank
from peftzoo.analysis.report import write
from peftzoo.analysis.weights import LayerDelta, adapter_deltas, checkpoint_deltas

__all__ = ["AnalysisConfig", "GradientRank", "LayerDelta", "adapter_deltas", "analyze_adapter", "analyze_checkpoints",
           "analyze_deltas", "checkpoint_deltas", "compare_bases", "write"]
