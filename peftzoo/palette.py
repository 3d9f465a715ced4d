"""One colour per method in every figure of the project (leaderboard PNGs, the HTML page, the d_90 plots, the claims
figures): ``color(method)`` is fixed by the method's name alone, so a method keeps its colour whichever other methods
share the figure, and the baselines are always the same (full fine-tuning black, head-only grey).

``series(methods)`` colours a list of series, some of which may be variants of one method (LoRA at r = 4, 8, 64):
each method's series get shades of its colour, lightest first.
"""
from __future__ import annotations

import hashlib

BASELINES = {"full": "#000000", "head": "#7f7f7f"}  # full FT black, head-only grey: in every figure
METHODS = {  # a method added later gets its line here (else ``_other`` gives it a stable colour from its name)
    "lora": "#1f77b4", "rslora": "#17becf", "loraplus": "#393b79", "dora": "#2ca02c", "vera": "#d62728",
    "adalora": "#9467bd", "ia3": "#ff7f0e", "loha": "#8c564b", "lokr": "#e377c2", "oft": "#bcbd22",
    "bitfit": "#637939", "deltalora": "#7b4173", "galore": "#e7ba52", "did": "#843c39", "said": "#8c6d31",
    "prompt": "#5254a3",
}
_FALLBACK = ("#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#9c9ede", "#cedb9c", "#e7969c", "#de9ed6",
             "#6b6ecf", "#b5cf6b", "#bd9e39", "#ad494a", "#a55194", "#fd8d3c", "#74c476")


def _other(name: str) -> str:
    """A colour for a name this file does not list: from its hash (hashlib: the same in every process)."""
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return _FALLBACK[h % len(_FALLBACK)]


def color(method: str) -> str:
    """The method's colour as '#rrggbb' (a registry name: 'lora', 'full', 'head', ...)."""
    return BASELINES.get(method) or METHODS.get(method) or _other(str(method))


def _mix(c: str, toward: str, f: float) -> str:
    """``c`` moved a fraction ``f`` of the way to ``toward`` (both '#rrggbb')."""
    a = [int(c[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(toward[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + f * (y - x)):02x}" for x, y in zip(a, b))


def shades(method: str, n: int) -> list[str]:
    """``n`` shades of the method's colour, lightest first: from 60% of the way to white up to 40% of the way to
    black; for two shades, and for dark colours such as full FT's black, from 70% toward white up to the colour."""
    base = color(method)
    dark = sum(int(base[i:i + 2], 16) for i in (1, 3, 5)) < 3 * 0x50
    lo, hi = (-0.7, 0.0) if dark or n == 2 else (-0.6, 0.4)
    ts = [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [0.0]
    return [_mix(base, "#ffffff", -t) if t < 0 else _mix(base, "#000000", t) for t in ts]


def series(methods: list[str]) -> list[str]:
    """One colour per series, each the method's colour, or a shade of it where the method has several series."""
    count = {m: methods.count(m) for m in methods}
    seen: dict = {}
    out = []
    for m in methods:
        i = seen[m] = seen.get(m, -1) + 1
        out.append(shades(m, count[m])[i] if count[m] > 1 else color(m))
    return out
