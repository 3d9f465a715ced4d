"""Per-architecture defaults: the layers a method adapts and the head it trains when the user names neither.

The tables are Hugging Face PEFT 0.21.2's (``peft/utils/constants.py``), keyed as PEFT keys them: by
``model.config.model_type`` within a PEFT ``peft_type`` (LoRA, rsLoRA, LoRA+ and DoRA use ``"LORA"``). A method whose
own table has no entry for an architecture falls back to the LoRA table (PEFT refuses there, e.g. AdaLoRA on
Mistral); ``EXTRA`` adds architectures PEFT has no default for (DistilBERT, ViT, CLIP, ALBERT, mBART), with their
attention query and value projections, as PEFT's defaults for the other encoders.
``tests/test_defaults.py`` checks the choice against ``peft.get_peft_model`` without ``target_modules``.
"""
from __future__ import annotations

from torch import nn

_QV = ["q_proj", "v_proj"]

LORA: dict[str, list[str] | str] = {
    "t5": ["q", "v"], "mt5": ["q", "v"], "bart": _QV, "gpt2": ["c_attn"], "bloom": ["query_key_value"],
    "blip-2": ["q", "v", "q_proj", "v_proj"], "opt": _QV, "gptj": _QV, "gpt_neox": ["query_key_value"],
    "gpt_neo": _QV, "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"], "deberta-v2": ["query_proj", "value_proj"], "deberta": ["in_proj"],
    "layoutlm": ["query", "value"], "llama": _QV, "llama4": _QV, "chatglm": ["query_key_value"],
    "gpt_bigcode": ["c_attn"], "mpt": ["Wqkv"], "RefinedWebModel": ["query_key_value"],
    "RefinedWeb": ["query_key_value"], "falcon": ["query_key_value"], "btlm": ["c_proj", "c_attn"],
    "codegen": ["qkv_proj"], "mistral": _QV, "mixtral": _QV, "stablelm": _QV, "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "gemma": _QV, "gemma2": _QV, "gemma3_text": _QV, "gemma4": r".*language_model\..*\.(q_proj|v_proj)",
    "qwen2": _QV, "qwen3": _QV, "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "rwkv": ["key", "value", "receptance", "output"], "rwkv7": ["r_proj", "k_proj", "v_proj", "o_proj", "key", "value"],
}

# Where PEFT's table for a method differs from LoRA's (entries it lacks fall back to LORA, see the docstring).
BY_PEFT_TYPE: dict[str, dict[str, list[str] | str]] = {
    "LORA": {},
    "VERA": {"phi": _QV},
    "ADALORA": {
        "t5": ["q", "k", "v", "o", "wi", "wo"], "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
        "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        "roberta": ["query", "key", "value", "dense"], "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    },
}

# Architectures PEFT 0.21.2 has no default for (its get_peft_model asks for target_modules): ours.
EXTRA: dict[str, list[str]] = {
    "distilbert": ["q_lin", "v_lin"], "albert": ["query", "value"], "mbart": _QV, "vit": _QV, "clip": _QV,
    "clip_text_model": _QV, "clip_vision_model": _QV,
}

# The heads PEFT trains in full with task_type="SEQ_CLS" (and TOKEN_CLS): PeftModelForSequenceClassification.
HEADS = ("classifier", "score")


def model_type(model: nn.Module) -> str | None:
    """``model.config.model_type`` of a transformers model, None for a plain torch module."""
    return getattr(getattr(model, "config", None), "model_type", None)


def default_targets(model: nn.Module, peft_type: str = "LORA") -> list[str] | str | None:
    """The layers a method of PEFT type ``peft_type`` adapts on ``model`` by default (a copy), None if unknown."""
    kind = model_type(model)
    if kind is None:
        return None
    found = BY_PEFT_TYPE.get(peft_type, {}).get(kind) or LORA.get(kind) or EXTRA.get(kind)
    return list(found) if isinstance(found, list) else found


def default_head(model: nn.Module) -> list[str]:
    """The ``train=`` names PEFT's ``task_type="SEQ_CLS"`` would train in full on ``model`` (its ``modules_to_save``
    rule, a suffix match: ``"classifier"`` also takes DistilBERT's ``pre_classifier``); [] for a model without one."""
    names = [n for n, _ in model.named_modules() if n]
    return [h for h in HEADS if any(n.endswith(h) for n in names)]
