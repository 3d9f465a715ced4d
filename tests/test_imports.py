"""The import graph of peftzoo has floors that only look down, and no cycle.

Every ``import`` statement of every module counts, the lazy ones inside functions too (only those under
``if TYPE_CHECKING:`` are left out: they never run). Run as a script to print the graph's cycles and the
imports that look up a floor: ``python tests/test_imports.py``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "peftzoo"

# Lowest first. A module may import modules of its own floor or below, never above. The first matching prefix wins.
FLOORS = [
    ("ground: files, registry, injection, file formats",
     ["peftzoo._atomic", "peftzoo.registry", "peftzoo.defaults", "peftzoo.inject", "peftzoo.io"]),
    ("layer types and methods", ["peftzoo.adapters."]),
    ("the list of methods", ["peftzoo.adapters"]),
    ("public API", ["peftzoo.api", "peftzoo.hf", "peftzoo"]),
    ("benchmark and intrinsic-dimension tools", ["peftzoo.bench", "peftzoo.intrinsic", "peftzoo.analysis"]),
    ("command line", ["peftzoo.cli", "peftzoo.__main__"]),
]


def module_names() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The peftzoo modules ``name`` imports (a ``from pkg import x`` counts as pkg.x when x is a module)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in out if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    mods = module_names()
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def floor(name: str) -> int:
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if name == p or (p.endswith(".") and name.startswith(p)) or (not p.endswith(".") and p != "peftzoo"
                                                                          and name.startswith(p + ".")):
                return i
    raise AssertionError(f"{name} is on no floor: add it to FLOORS in tests/test_imports.py")


def upward(g: dict[str, set[str]]) -> list[str]:
    return [f"{a} ({FLOORS[floor(a)][0]}) imports {b} ({FLOORS[floor(b)][0]})"
            for a in sorted(g) for b in sorted(g[a]) if floor(b) > floor(a)]


def test_the_import_graph_has_no_cycle():
    g = graph()
    assert len(g) > 30 and g["peftzoo.api"], "the graph was not read"
    assert cycles(g) == []


def test_every_import_looks_down():
    assert upward(graph()) == []


def test_the_checker_sees_lazy_imports_and_cycles():
    g = graph()
    assert "peftzoo.bench.models" in g["peftzoo.cli"]  # imported inside a function only
    g["peftzoo.inject"] = g["peftzoo.inject"] | {"peftzoo.api"}  # a made-up back edge closes a circle
    assert any({"peftzoo.inject", "peftzoo.api"} <= set(c) for c in cycles(g))
    assert upward(g) == ["peftzoo.inject (ground: files, registry, injection, file formats) imports peftzoo.api "
                         "(public API)"]


def test_a_method_module_loads_no_benchmark_or_intrinsic_code():
    code = ("import sys, peftzoo.adapters.lora; "
            "print(sorted(m for m in sys.modules if m.startswith(('peftzoo.bench', 'peftzoo.intrinsic', "
            "'peftzoo.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


if __name__ == "__main__":
    g = graph()
    print(f"{len(g)} modules, {sum(map(len, g.values()))} imports")
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    for line in upward(g):
        print("looks up:", line)
    print("no cycle" if not cycles(g) else "CYCLES FOUND", "/", "all imports look down" if not upward(g) else "")
