"""Find target modules, swap in adapter layers, freeze the rest. Knows nothing about any particular method."""
from __future__ import annotations

import contextlib
import difflib
import re
from typing import Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftzoo.defaults import default_head, default_targets, model_type  # noqa: F401  (default_head: public here)

# The layers per-layer methods adapt and "all-linear" collects: nn.Linear and transformers' Conv1D (GPT-2's
# projections, weight stored (d_in, d_out): PEFT's fan_in_fan_out). Non-linear layer types are added per method.
LINEAR_TYPES = (nn.Linear, Conv1D)


def layer_dims(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a linear layer, whichever way its weight is stored."""
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _matches(name: str, targets) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _output_layer(model: nn.Module) -> nn.Module | None:
    """A transformers model's output layer (``lm_head``, or whatever is tied to the output embeddings), else None.
    As in PEFT, only a ``PreTrainedModel`` has one: a plain module's last layer is adapted like any other."""
    from transformers import PreTrainedModel
    return model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_modules(model: nn.Module, names, what: str = "train") -> dict[str, nn.Module]:
    """Modules whose name ends with one of ``names`` (PEFT's ``modules_to_save`` rule: a plain string suffix, so
    ``"classifier"`` also takes DistilBERT's ``pre_classifier``). Each name must match something."""
    if isinstance(names, str):
        names = [names]
    all_names = [n for n, _ in model.named_modules() if n]
    found = {}
    for t in names:
        hits = {n: model.get_submodule(n) for n in all_names if n.endswith(t)}
        if not hits:
            raise ValueError(_no_match_message(t, all_names, what))
        found.update(hits)
    return found


def _no_match_message(target: str, all_names: list[str], what: str, model: nn.Module | None = None) -> str:
    pool = sorted({s for n in all_names for s in _suffixes(n)})
    close = difflib.get_close_matches(target, pool, n=5, cutoff=0.5)
    hint = f" Close names: {', '.join(close)}." if close else ""
    return f"{what} {target!r} matches no module of the model.{hint}" + (f" {linear_layers(model)}" if model else "")


def linear_layers(model: nn.Module) -> str:
    """A sentence naming the model's linear layers (nn.Linear, Conv1D) by their last name component: the names
    ``targets`` can take."""
    linear = [n for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]
    short = sorted({n.rpartition(".")[2] for n in linear})
    return (f"Its {len(linear)} linear layers are named: {', '.join(short) or 'none'}"
            + (f" (full names like {linear[0]!r})" if linear and "." in linear[0] else ""))


def resolve_targets(model: nn.Module, targets, peft_type: str = "LORA"):
    """``targets`` itself, or for ``None`` the architecture's default (``peftzoo/defaults.py``: PEFT's table for
    ``peft_type``, keyed by ``model.config.model_type``); an architecture without one is an error listing the
    model's linear layers."""
    if targets is not None:
        return targets
    found = default_targets(model, peft_type)
    if found is None:
        raise ValueError(_no_default_message(model))
    return found


def _no_default_message(model: nn.Module) -> str:
    kind = model_type(model)
    what = (f"model type {kind!r} ({type(model).__name__}) has no default targets in peftzoo/defaults.py"
            if kind else f"{type(model).__name__} is not a transformers model (no config.model_type), so it has no "
            "default targets")
    short = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES)})
    example = ", ".join(repr(s) for s in short[:2])
    return (f"{what}: pass targets= to name the layers to adapt, e.g. targets=[{example}] (name suffixes), a regex, "
            f"or targets='all-linear'. {linear_layers(model)}")


def find_targets(model: nn.Module, targets, skip: Iterable[str] = (), layer_types: tuple = (),
                 base_types: tuple = LINEAR_TYPES, method: str = "", peft_type: str = "LORA") -> dict[str, nn.Module]:
    """The layers an adapter should wrap, by PEFT's rules (``all-linear``: ``nn.Linear``, transformers' ``Conv1D``).

    ``targets``: a list of name suffixes, a regex string (full match, as PEFT), or ``"all-linear"``: every linear
    layer except the model's output layer (``get_output_embeddings()``: ``lm_head`` or the layer tied to the input
    embeddings) and the ``skip`` modules, which is PEFT's rule (PEFT with ``task_type=SEQ_CLS`` also leaves out
    ``classifier``/``score``, which it then trains in full: name them in ``train`` for the same effect).
    ``skip``: module prefixes never adapted (the fully trained modules). ``layer_types``: adapter layer
    classes; a model that already holds one is an error (one adapter per model).
    ``base_types``: the layer types ``method`` can adapt; a named target of another type is a TypeError.
    ``targets=None``: the architecture's default for ``peft_type`` (``resolve_targets``).
    """
    targets = resolve_targets(model, targets, peft_type)
    if not isinstance(targets, str) and len(list(targets)) == 0:
        raise ValueError("targets is empty: name the nn.Linear modules to adapt, e.g. targets=['query', 'value'], "
                         "or targets='all-linear'")
    skip = list(skip)
    named = [(n, m) for n, m in model.named_modules() if n]
    adapted = sorted(n for n, m in named if layer_types and isinstance(m, layer_types))
    if adapted:
        raise second_adapter_error(f"{len(adapted)} adapter layers, e.g. {adapted[0]!r}")
    if targets == "all-linear":
        out = _output_layer(model)
        found = {n: m for n, m in named if isinstance(m, LINEAR_TYPES) and m is not out and not _under(n, skip)}
        if not found:
            raise ValueError("targets='all-linear' found no nn.Linear/Conv1D outside the output layer and train modules")
        return _check_types(model, found, base_types, method, " (targets='all-linear' takes every nn.Linear and "
                            "Conv1D, as PEFT's does: name the layers to adapt instead)")
    tlist = [targets] if isinstance(targets, str) else list(targets)
    hits = {n: m for n, m in named if _matches(n, targets) and not _under(n, skip)}
    if not isinstance(targets, str):
        for t in tlist:
            if not any(_matches(n, [t]) for n, _ in named):
                raise ValueError(_no_match_message(t, [n for n, _ in named], "target", model))
    elif not any(_matches(n, targets) for n, _ in named):
        raise ValueError(f"target regex {targets!r} matches no module of the model. {linear_layers(model)}")
    if not hits:
        raise ValueError(f"every module matching targets={targets!r} is inside a train module {skip}: "
                         "nothing is left to adapt")
    return _check_types(model, hits, base_types, method)


def _check_types(model: nn.Module, hits: dict, base_types: tuple, method: str, why: str = "") -> dict:
    """``hits``, or a TypeError naming the first one whose type ``method`` does not adapt (and the types it does)."""
    bad = {n: type(m).__name__ for n, m in hits.items() if not isinstance(m, base_types)}
    if bad:
        n, t = next(iter(bad.items()))
        kinds = ", ".join(f"nn.{b.__name__}" if b.__module__.startswith("torch.nn") else
                          f"{b.__module__.split('.')[0]}.{b.__name__}" for b in base_types)
        inner = [f"{n}.{c}" for c, cm in model.get_submodule(n).named_modules() if isinstance(cm, base_types) and c]
        hint = f" Its submodules {method or 'peftzoo'} can adapt: {', '.join(inner[:5])}." if inner else ""
        raise TypeError(f"target {n!r} is a {t}, not a layer type {method or 'peftzoo'} adapts ({kinds}){why}.{hint}")
    return hits


def second_adapter_error(what: str) -> ValueError:
    """The error for attaching to a model that carries an adapter; ``what`` says which (its layers, its method)."""
    return ValueError(f"the model already has an adapter ({what}): "
                      "attaching twice is not supported: peftzoo holds one adapter per model, with no named "
                      "adapters (a second attach would freeze the first one). For the base model's outputs use "
                      "`with ad.disable_adapter():`; to replace the adapter, ad.unload() (or ad.unload(merge=True) to "
                      "keep its update in the weights) and attach to the model it returns. Attach every target in "
                      "one call, or start from a fresh copy of the model")


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


@contextlib.contextmanager
def transaction(model: nn.Module, keep: Iterable[nn.Module] = ()):
    """On any error inside the block, put ``model`` back as it was: its module tree, every parameter's
    ``requires_grad`` and storage (an init such as PiSSA gives a frozen weight new values by replacing its
    ``.data``: the old storage is kept by reference, no copy), the tensors of the ``keep`` modules (those the
    block may write into in place), and no attribute the block set on ``model`` itself (an adapter's guard on
    ``save_pretrained``)."""
    attrs = set(model.__dict__)
    children = [(m, dict(m._modules)) for m in model.modules()]
    grads = [(p, p.requires_grad, p.data) for p in model.parameters()]
    saved = [(t, t.detach().clone()) for m in keep for t in m.state_dict(keep_vars=True).values()]
    try:
        yield
    except BaseException:
        for m, kids in children:
            m._modules.clear()
            m._modules.update(kids)
        for p, flag, data in grads:
            p.requires_grad_(flag)
            p.data = data
        for t, v in saved:
            t.data.copy_(v)
        for k in set(model.__dict__) - attrs:
            del model.__dict__[k]
        raise
