"""Find target modules, swap in adapter layers, freeze the rest. Knows nothing about any particular method."""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from torch import nn

# Output heads are never adapted by "all-linear" (PEFT excludes the output layer the same way).
HEAD_NAMES = ("classifier", "score", "lm_head", "qa_outputs", "pooler.dense", "out_proj")


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _matches(name: str, targets) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _is_head(model: nn.Module, name: str) -> bool:
    out = getattr(model, "get_output_embeddings", lambda: None)()
    if out is not None and model.get_submodule(name) is out:
        return True
    return any(name == h or name.endswith("." + h) or name.startswith(h + ".") or f".{h}." in name
               for h in HEAD_NAMES)


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_modules(model: nn.Module, names, what: str = "train") -> dict[str, nn.Module]:
    """Modules whose name is, or ends with, one of ``names``. Each name must match something."""
    if isinstance(names, str):
        names = [names]
    all_names = [n for n, _ in model.named_modules() if n]
    found = {}
    for t in names:
        hits = {n: model.get_submodule(n) for n in all_names if n == t or n.endswith("." + t)}
        if not hits:
            raise ValueError(_no_match_message(t, all_names, what))
        found.update(hits)
    return found


def _no_match_message(target: str, all_names: list[str], what: str) -> str:
    pool = sorted({s for n in all_names for s in _suffixes(n)})
    close = difflib.get_close_matches(target, pool, n=5, cutoff=0.5)
    hint = f" Close names: {', '.join(close)}." if close else ""
    return f"{what} {target!r} matches no module of the model.{hint}"


def find_targets(model: nn.Module, targets, skip: Iterable[str] = (), layer_types: tuple = (),
                 base_types: tuple = (nn.Linear,), method: str = "") -> dict[str, nn.Module]:
    """The modules an adapter should wrap, by PEFT's ``target_modules`` rules.

    ``targets``: a list of name suffixes, a regex string (full match, as PEFT), or ``"all-linear"``.
    ``skip``: module prefixes never adapted (the fully trained modules). ``layer_types``: adapter layer
    classes; a target that is already one of them is an error (an adapter is attached already).
    ``base_types``: the layer types ``method`` can adapt; a named target of another type is a TypeError.
    """
    if targets is None or (not isinstance(targets, str) and len(list(targets)) == 0):
        raise ValueError("targets is empty: name the nn.Linear modules to adapt, e.g. targets=['query', 'value'], "
                         "or targets='all-linear'")
    skip = list(skip)
    named = [(n, m) for n, m in model.named_modules() if n]
    adapted = {n for n, m in named if layer_types and isinstance(m, layer_types)}
    if targets == "all-linear":
        if adapted:
            raise ValueError(f"the model already has adapter layers ({sorted(adapted)[0]}, ...): "
                             "attaching twice to the same layer is not supported")
        found = {n: m for n, m in named if isinstance(m, nn.Linear) and not _is_head(model, n) and not _under(n, skip)}
        if not found:
            raise ValueError("targets='all-linear' found no nn.Linear outside the output head")
        return found
    tlist = [targets] if isinstance(targets, str) else list(targets)
    hits = {n: m for n, m in named if _matches(n, targets) and not _under(n, skip)
            and not any(_under(n, [a + ".base"]) for a in adapted)}
    if not isinstance(targets, str):
        for t in tlist:
            if not any(_matches(n, [t]) for n in hits):
                raise ValueError(_no_match_message(t, [n for n, _ in named], "target"))
    elif not hits:
        raise ValueError(f"target regex {targets!r} matches no module of the model")
    twice = [n for n in hits if n in adapted]
    if twice:
        raise ValueError(f"{twice[0]!r} already has an adapter layer: attaching twice to the same layer is not "
                         "supported (merge and detach the first adapter, or pick other targets)")
    bad = {n: type(m).__name__ for n, m in hits.items() if not isinstance(m, base_types)}
    if bad:
        n, t = next(iter(bad.items()))
        kinds = ", ".join(f"nn.{b.__name__}" if b.__module__.startswith("torch.nn") else b.__name__
                          for b in base_types)
        inner = [f"{n}.{c}" for c, cm in model.get_submodule(n).named_modules() if isinstance(cm, base_types) and c]
        hint = f" Its submodules {method or 'peftzoo'} can adapt: {', '.join(inner[:5])}." if inner else ""
        raise TypeError(f"target {n!r} is a {t}, not a layer type {method or 'peftzoo'} adapts ({kinds}).{hint}")
    return hits


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
