"""One colour per method in every figure: ``peftzoo.palette`` gives it from the method's name alone (baselines
fixed), and every figure module takes its method colours from it. The figure tests replace ``palette.color`` by a
colour no figure could pick by itself and read the colours back from the drawn figures."""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from peftzoo import adapters, palette
from peftzoo.bench import plots

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "benchmarks" / "claims"
sys.path.insert(0, str(CLAIMS))


def fake(method: str) -> str:
    return "#" + hashlib.sha256(method.encode()).hexdigest()[:6]


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved during the test, in order; ``palette.color`` is ``fake`` meanwhile."""
    figs, save = [], Figure.savefig

    def savefig(self, *a, **k):
        figs.append(self)
        return save(self, *a, **k)
    monkeypatch.setattr(Figure, "savefig", savefig)
    monkeypatch.setattr(palette, "color", fake)
    return figs


def colours(fig) -> list[dict]:
    """Per panel: {series label: its colour}, from error bars, bars and labelled lines."""
    out = []
    for ax in fig.axes:
        got = {}
        for c in ax.containers:
            if isinstance(c, ErrorbarContainer) and c.lines[0] is not None:  # (a bar's error bars have no line)
                got[c.get_label()] = to_hex(c.lines[0].get_color())
            elif isinstance(c, BarContainer) and not c.get_label().startswith("_"):
                got[c.get_label()] = to_hex(c.patches[0].get_facecolor())
        for ln in ax.get_lines():
            if not ln.get_label().startswith("_"):
                got.setdefault(ln.get_label(), to_hex(ln.get_color()))
        out.append(got)
    return out


def test_a_method_has_one_colour_whatever_else_is_drawn():
    assert palette.color("full") == "#000000" and palette.color("head") == "#7f7f7f"
    listed = [m for m in adapters.REGISTRY if m in {**palette.METHODS, **palette.BASELINES}]
    assert len(listed) >= 17 and len({palette.color(m) for m in listed}) == len(listed)  # all distinct
    assert not set(palette._FALLBACK) & {palette.color(m) for m in listed}  # a new method never takes a listed one's
    assert palette.series(["lora", "vera"])[1] == palette.series(["vera"])[0] == palette.color("vera")
    code = ("import importlib.util as u; s = u.spec_from_file_location('p', {!r}); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); print(m.color('a-method-added-later'))").format(palette.__file__)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another process, another str hash: the same colour
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == palette.color("a-method-added-later")  # the same in every process


def test_shades_of_a_method_run_light_to_dark_around_its_colour():
    for m in ("lora", "full"):
        s = palette.shades(m, 5)
        light = [sum(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in s]
        assert len(set(s)) == 5 and light == sorted(light, reverse=True), (m, s)
    assert palette.shades("full", 3)[-1] == "#000000" and palette.shades("lora", 2)[-1] == palette.color("lora")
    assert palette.series(["lora", "full", "lora"]) == [palette.shades("lora", 2)[0], "#000000", palette.color("lora")]


def test_leaderboard_figures_take_each_methods_colour_from_the_palette(drawn, tmp_path):
    def pts(methods):
        return [{"task": "SST-2", "method": m, "x": 10 ** (i + 2), "mean": 0.8, "std": 0.01} for i, m in
                enumerate(methods)]
    plots.pareto(tmp_path / "a.png", ["SST-2"], pts(["lora", "vera"]))
    plots.pareto(tmp_path / "b.png", ["SST-2"], pts(["vera", "full", "head"]))
    curves = [{"task": "SST-2", "method": m, "per_lr": {1e-3: 0.7, 1e-2: 0.8}, "selected": 1e-2} for m in ("dora", "vera")]
    plots.lr_curves(tmp_path / "c.png", ["SST-2"], curves)
    plots.lr_curves(tmp_path / "d.png", ["SST-2"], curves[1:])
    got = [colours(f)[0] for f in drawn]
    assert got[0] == {"lora": fake("lora"), "vera": fake("vera")}
    assert got[1] == {"vera": fake("vera"), "full": fake("full"), "head": fake("head")}
    assert got[2] == {"dora": fake("dora"), "vera": fake("vera")} and got[3] == {"vera": fake("vera")}


def test_d90_plot_takes_each_results_method_colour(drawn, tmp_path):
    from peftzoo.intrinsic.report import plot
    did = json.loads((ROOT / "results" / "intrinsic" / "mnist-fc-did.json").read_text())
    plot({"fc": did}, tmp_path / "a.png")
    plot({"other": {**did, "method": "said"}, "fc": did}, tmp_path / "b.png")
    first, second = (colours(f)[0] for f in drawn)
    assert [c for k, c in first.items() if k.startswith("fc:")] == [fake("did")]
    assert {k.split(":")[0]: c for k, c in second.items()} == {"other": fake("said"), "fc": fake("did")}


def test_claims_figures_take_method_colours_from_the_palette(drawn, tmp_path):
    spec = importlib.util.spec_from_file_location("claims_plots", CLAIMS / "plots.py")
    cp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cp)
    ls = pytest.importorskip("lora_scaling")
    data = json.loads((ROOT / "results" / "claims" / "claims.json").read_text())
    data["c5"] = {int(k) if k.isdigit() else k: v for k, v in data["c5"].items()}
    cp.all_plots(data, tmp_path)
    c7 = next(c[0] for c in map(colours, drawn) if "full FT" in c[0])
    assert c7 == dict(zip(data["c7"], palette.series(["lora", "lora", "lora", "full"])))
    c5 = next(c[0] for c in map(colours, drawn) if "r=64" in c[0])
    assert c5 == {"r=4": palette.shades("lora", 2)[0], "r=64": fake("lora")}
    drawn.clear()
    ls.plot_c2(data["c2"], tmp_path)
    lora, rslora, sweeps = colours(drawn[0])[:3]
    assert list(lora.values()) == palette.shades("lora", 5) and list(rslora.values()) == palette.shades("rslora", 5)
    assert {k: c for k, c in sweeps.items()} == {k: fake(k.split()[0]) for k in sweeps} and len(sweeps) == 4


def test_analysis_figures_take_the_analysed_methods_colour(drawn, tmp_path):
    from peftzoo.analysis.report import write
    layer = {"singular_values": [3.0, 2.0, 1.0], "effective_rank": 2.5, "stable_rank": 1.4,
             "intruders": {"counts": {"0.5": 1, "0.9": 2}, "k": 10}}
    write({"source": {"method": "dora"}, "layers": {"bert.encoder.layer.0.attention.self.query": layer}}, tmp_path)
    spectra, intruders = drawn
    assert {to_hex(ln.get_color()) for ln in spectra.axes[0].get_lines()} == {fake("dora")}
    assert colours(intruders)[0] == {"mean over layers": fake("dora")}
