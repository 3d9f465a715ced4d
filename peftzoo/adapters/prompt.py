"""Prompt tuning (Lester et al. 2021, arXiv:2104.08691): n trained virtual-token embeddings before the input.

    inputs_embeds = [P ; E(x)],   P ∈ R^{n×d} trained,  E the frozen word embeddings (d their width)
    attention_mask = [1_n ; mask],   token_type_ids = [0_n ; token_type_ids],   position_ids dropped (warned)

which is Hugging Face PEFT 0.21.2's ``PeftModelForSequenceClassification.forward`` for PROMPT_TUNING: the base
model is called with ``inputs_embeds`` alone, so it numbers the positions 0..n+L−1 itself (the virtual tokens take
the first n, each costs a position), an encoder's pooler reads the first virtual token and a decoder's classifier
the last position (pad on the left, as with PEFT). Sequence-classification models only: that is the task whose
forward this file reproduces (PEFT's plain model class, task_type None, would not prepend the prompt at all).

Trainable elements: n · d (+ the ``train`` modules). The update is no weight change: ``merge()`` and
``unload(merge=True)`` refuse, saying so; ``disable_adapter()`` calls the base model with the input as given;
``unload()`` gives the base model back (the wrapper then refuses calls). Init (PEFT's ``prompt_tuning_init``):
"RANDOM" (N(0, 1), the law of PEFT's ``nn.Embedding``, drawn from the config's seed), "SAMPLE_VOCAB" (the
embeddings of n tokens drawn from the vocabulary, seeded) or "TEXT" (the embeddings of ``init_text``'s tokens,
repeated or cut to n, as PEFT; the ids are recorded in the config, so a saved adapter reloads without the
tokenizer).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from peftzoo import io
from peftzoo.adapters import lifecycle
from peftzoo.adapters.base import Adapter, AdapterConfig, count_train, find_train
from peftzoo.adapters.lifecycle import AdapterModule
from peftzoo.adapters.info import MethodInfo
from peftzoo.io import PeftCodec, copy_checked
from peftzoo.registry import register

INITS = ("RANDOM", "SAMPLE_VOCAB", "TEXT")
NO_MERGE = ("{what}: prompt tuning's update is {n} virtual tokens before the input, no change of any weight, so no "
            "plain model computes it (PEFT has no merge for it either). Use the adapted model (ad.model) as it is, "
            "keep the adapter with ad.save(dir) / ad.save_peft(dir), and ad.unload() for the base model")


@dataclass
class PromptConfig(AdapterConfig):
    targets: object = None  # unused: prompt tuning adapts no layer (its tokens go before the input)
    num_virtual_tokens: int = 20  # n, the prompt's length: n × d trainable elements, and n positions of the model's
    init: str = "RANDOM"  # PEFT's prompt_tuning_init: "RANDOM", "SAMPLE_VOCAB" or "TEXT" (see the docstring)
    init_text: str | None = None  # TEXT: the text whose token embeddings start the prompt (prompt_tuning_init_text)
    tokenizer: str | None = None  # TEXT: the tokenizer's folder or hub id (PEFT's tokenizer_name_or_path)
    tokenizer_kwargs: dict | None = None  # TEXT: options of AutoTokenizer.from_pretrained (trust_remote_code refused)
    init_ids: list | None = None  # TEXT: init_text's token ids, filled on attach: a reload needs no tokenizer


class PromptModel(AdapterModule):
    """The base model called with the prompt before its input embeddings; alone while switched off."""

    def __init__(self, base: nn.Module, prompt: torch.Tensor):
        super().__init__()
        self.base = base
        self.prompt = nn.Parameter(prompt)
        self.disabled = False  # inside disable_adapter()
        self.unloaded = False  # after unload(): the model unload() returned is the one to call

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, token_type_ids=None,
                position_ids=None, **kwargs):
        if self.unloaded:
            raise RuntimeError("this prompt-tuning wrapper was unloaded (ad.unload()): call the model unload() "
                               "returned")
        if self.disabled:
            given = dict(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                         token_type_ids=token_type_ids, position_ids=position_ids)
            return self.base(**{k: v for k, v in given.items() if v is not None}, **kwargs)
        if position_ids is not None:
            warnings.warn("prompt tuning ignores position_ids, as PEFT does: the base model numbers the virtual "
                          "tokens 0..n-1 and the input after them", stacklevel=2)
        if inputs_embeds is None:
            inputs_embeds = self.base.get_input_embeddings()(input_ids)
        b, n = inputs_embeds.shape[0], self.prompt.shape[0]
        extra = {}
        if attention_mask is not None:
            extra["attention_mask"] = torch.cat((attention_mask.new_ones(b, n), attention_mask), dim=1)
        if token_type_ids is not None:
            extra["token_type_ids"] = torch.cat((token_type_ids.new_zeros(b, n), token_type_ids), dim=1)
        prompts = self.prompt.to(inputs_embeds.dtype).unsqueeze(0).expand(b, -1, -1)
        return self.base(inputs_embeds=torch.cat((prompts, inputs_embeds), dim=1), **extra, **kwargs)


def embeddings(model: nn.Module, config: PromptConfig) -> nn.Module:
    """The model's input embeddings, after refusing what this file does not run (naming the fix)."""
    from transformers import PreTrainedModel
    task = io.task_type(model) if isinstance(model, PreTrainedModel) else None
    if task != "SEQ_CLS":
        raise TypeError(f"prompt tuning runs on sequence-classification models (PEFT's SEQ_CLS forward, which it "
                        f"reproduces); {type(model).__name__} is {'PEFT task ' + task if task else 'not one'}: load "
                        "it with AutoModelForSequenceClassification")
    n = config.num_virtual_tokens
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_virtual_tokens={n!r} must be a positive integer")
    if config.init not in INITS:
        raise ValueError(f"init={config.init!r}: use one of {', '.join(INITS)} (PEFT's prompt_tuning_init)")
    if config.init == "TEXT" and (not config.init_text or not (config.tokenizer or config.init_ids)):
        raise ValueError("init='TEXT' needs init_text (the text whose tokens start the prompt) and tokenizer (its "
                         "tokenizer's folder or hub id)")
    if config.tokenizer_kwargs and config.init != "TEXT":
        raise ValueError("tokenizer_kwargs is only read with init='TEXT' (as in PEFT)")
    if "trust_remote_code" in (config.tokenizer_kwargs or {}):
        raise ValueError("tokenizer_kwargs: trust_remote_code is refused (PEFT drops it: a saved adapter could run "
                         "code on load)")
    return model.get_input_embeddings()


def text_ids(config: PromptConfig, n: int) -> list[int]:
    """init_text's token ids (recorded in ``config.init_ids`` once read), repeated or cut to n as PEFT does."""
    if config.init_ids is None:
        from transformers import AutoTokenizer
        try:
            tok = AutoTokenizer.from_pretrained(config.tokenizer, **(config.tokenizer_kwargs or {}))
        except OSError as e:
            raise OSError(f"prompt: init='TEXT' reads the tokenizer {config.tokenizer!r} to embed init_text, which "
                          f"failed ({e}); give a local tokenizer folder or a reachable hub id") from e
        config.init_ids = list(tok(config.init_text)["input_ids"])
    ids = list(config.init_ids)
    return (ids * math.ceil(n / len(ids)))[:n]


@torch.no_grad()
def initial_prompt(emb: nn.Module, config: PromptConfig) -> torch.Tensor:
    """P at attach (float32, as PEFT keeps it), on the embeddings' device."""
    n, (vocab, d) = config.num_virtual_tokens, emb.weight.shape
    gen = torch.Generator().manual_seed(config.seed)
    if config.init == "RANDOM":
        return torch.randn(n, d, generator=gen).to(emb.weight.device)
    ids = torch.randint(0, vocab, (n,), generator=gen) if config.init == "SAMPLE_VOCAB" else torch.tensor(
        text_ids(config, n))
    if int(ids.max()) >= vocab:
        raise ValueError(f"init_text's token ids reach {int(ids.max())}, beyond this model's {vocab}-token "
                         f"vocabulary: tokenizer {config.tokenizer!r} is not this model's")
    return emb(ids.to(emb.weight.device)).detach().clone().float()


class PromptCodec(PeftCodec):
    """PEFT's PROMPT_TUNING files (task SEQ_CLS): the prompt as ``prompt_embeddings``, the train modules under
    ``base_model.<module>`` (PEFT's prompt-learning layout)."""

    peft_type = "PROMPT_TUNING"
    prefix = "base_model."

    def task(self, ad):
        """SEQ_CLS, the task attach accepts: PEFT's class for it prepends the prompt, and needs the head's tensors
        in the file (it trains the head always), so a frozen head is refused here, naming the fix."""
        if io.peft_task(ad) != "SEQ_CLS":
            heads = [n for n, _ in ad.model.base.named_modules() if n and n.endswith(io.TASKS["SEQ_CLS"][1])]
            raise ValueError(f"ad.save_peft(): PEFT's sequence-classification prompt tuning always trains the "
                             f"classification head (its modules_to_save) and refuses a file without it; attach with "
                             f"train={heads} to write a PEFT file, or keep this adapter with ad.save(dir)")
        return "SEQ_CLS"

    def to_peft(self, c):
        return {"num_virtual_tokens": c.num_virtual_tokens, "num_transformer_submodules": 1,
                "prompt_tuning_init": c.init, "prompt_tuning_init_text": c.init_text,
                "tokenizer_name_or_path": c.tokenizer, "tokenizer_kwargs": c.tokenizer_kwargs}

    def fields(self, ad):
        return {**self.to_peft(ad.config), "token_dim": ad.model.prompt.shape[1]}

    def from_peft(self, cfg):
        if cfg.get("task_type") != "SEQ_CLS" or (cfg.get("num_transformer_submodules") or 1) != 1:
            raise ValueError(f"PEFT PROMPT_TUNING adapter of task_type {cfg.get('task_type')!r}: peftzoo runs prompt "
                             "tuning on sequence classifiers (task_type 'SEQ_CLS') only; PEFT's forward differs "
                             "per task")
        return {"num_virtual_tokens": int(cfg["num_virtual_tokens"]), "init": "RANDOM"}  # the file's P replaces
        # any init, as for LoRA's init options (so a TEXT file loads without its tokenizer)

    def state(self, ad):
        return {"prompt_embeddings": ad.model.prompt.detach()}

    def load_state(self, ad, tensors):
        if "prompt_embeddings" not in tensors:
            raise ValueError("PEFT prompt-tuning file lacks 'prompt_embeddings'")
        copy_checked(ad.model.prompt, tensors["prompt_embeddings"], "prompt_embeddings")
        return {"prompt_embeddings"}


@register
class Prompt(Adapter):
    name = "prompt"
    config_cls = PromptConfig
    peft = PromptCodec()
    merges = False
    # LR grid: Lester et al. train T5 with Adafactor at 0.3; for AdamW the paper states none: a grid far above
    # LoRA's, as for the other input-side vectors (IA3's)
    info = MethodInfo(paper="Lester et al. 2021, arXiv:2104.08691",
                      equation="f([P ; E(x)]): n trained virtual-token embeddings P before the input", formula="n·d",
                      default_lr=1e-2, lr_grid=(1e-3, 3e-3, 1e-2, 3e-2), budget_knob="num_virtual_tokens")

    def __init__(self, model: nn.Module, config: PromptConfig):
        super().__init__(model, config)
        emb = embeddings(model, config)
        self.freeze_base(find_train(model, config))
        self.model = PromptModel(model, initial_prompt(emb, config)).train(model.training)

    @classmethod
    def count(cls, model, config):
        emb = embeddings(model, config)
        return config.num_virtual_tokens * emb.weight.shape[1] + count_train(find_train(model, config))

    @classmethod
    def rank_fits(cls, model, config):
        """False once the prompt leaves no position for the input (n >= the model's max_position_embeddings)."""
        return config.num_virtual_tokens < getattr(model.config, "max_position_embeddings", math.inf)

    def roles(self):
        return {"prompt": [self.model.prompt]}

    def state(self):
        return {"prompt": self.model.prompt.detach()}

    def load_state(self, tensors):
        if set(tensors) != {"prompt"}:
            raise ValueError(f"prompt-tuning file does not fit: it holds {sorted(tensors)[:3]}, not ['prompt']")
        copy_checked(self.model.prompt, tensors["prompt"], "prompt")

    def initialize(self):
        """P drawn again (same seed) on the model as it is now (after ``to_empty`` on ``meta``: TEXT embeds the
        loaded embeddings)."""
        self.model.prompt = nn.Parameter(initial_prompt(self.model.base.get_input_embeddings(), self.config))

    def merge(self):
        lifecycle.refuse_while_off(self, "merge")
        raise ValueError(NO_MERGE.format(what="ad.merge()", n=self.config.num_virtual_tokens))

    def unmerge(self):
        lifecycle.refuse_while_off(self, "unmerge")  # never merged: nothing to undo

    @property
    def merged(self) -> bool:
        return False

    def enable_update(self, on: bool) -> None:
        self.model.disabled = not on

    def unload_model(self, merge: bool) -> nn.Module:
        if merge:
            raise ValueError(NO_MERGE.format(what="ad.unload(merge=True)", n=self.config.num_virtual_tokens))
        self.model.unloaded = True
        return self.model.base
