"""A per-process cache of loaded models: each run gets a deep copy instead of re-reading the checkpoint.

Loading happens under ``torch.random.fork_rng`` so that a cache miss and a cache hit leave the global RNG alike;
the weights the checkpoint lacks (the new classification head) are then initialised from the global RNG, with the
model's own ``_init_weights``, exactly as ``from_pretrained`` does it. So a run seeded with ``s`` gets the same
head whether or not the model was cached, and different seeds get different heads, as before the cache.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch

CACHE_SIZE = 2  # models kept per process (MiniLM: ~90 MB each)
_CACHE: OrderedDict = OrderedDict()


def _load(path: str, task, random_init: bool):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    hf_logging.disable_progress_bar()
    kw = {"problem_type": "regression"} if task.regression else {}
    with torch.random.fork_rng(devices=[]):
        if random_init:
            from transformers import AutoConfig
            torch.manual_seed(0)  # the same random θ0 for every run
            model = AutoModelForSequenceClassification.from_config(
                AutoConfig.from_pretrained(path, num_labels=task.num_labels, **kw))
            missing = []
        else:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=task.num_labels, output_loading_info=True, **kw)
            missing = sorted(set(info["missing_keys"]) | set(k for k, *_ in info.get("mismatched_keys", [])))
    return model, AutoTokenizer.from_pretrained(path), missing


def _reinit(model, missing: list) -> None:
    """Initialise the checkpoint's missing tensors from the global RNG, as ``from_pretrained`` does."""
    owners = {}
    for key in missing:
        mod_name = key.rpartition(".")[0]
        owners.setdefault(mod_name, model.get_submodule(mod_name))
    with torch.no_grad():
        for mod in owners.values():
            for t in (*mod.parameters(recurse=False), *mod.buffers(recurse=False)):
                if getattr(t, "_is_hf_initialized", False):
                    del t._is_hf_initialized  # transformers' init functions skip flagged tensors
            model._init_weights(mod)


def load(path: str, task, random_init: bool = False):
    """(a fresh copy of the model, the tokenizer) for ``path``; the checkpoint is read once per process."""
    key = (path, task.num_labels, task.regression, random_init)
    if key not in _CACHE:
        _CACHE[key] = _load(path, task, random_init)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    model, tok, missing = _CACHE[key]
    fresh = copy.deepcopy(model)
    _reinit(fresh, missing)
    return fresh, tok


def clear_cache() -> None:
    _CACHE.clear()
