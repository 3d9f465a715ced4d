"""Tiny random models of the architectures people fine-tune, for the architecture x method matrix (test_matrix.py).

Every config: hidden 32, 2 layers, an initializer range that puts logits at O(1) (so a 1e-5 tolerance means
something). Each entry: a builder, the usual attention targets, the ``train`` modules (PEFT's ``modules_to_save``)
and the inputs. Builders are called once per test module; cells work on deep copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

H, L, FFN, V, SEQ = 32, 2, 64, 100, 6
INIT = 0.2  # std of the random weights: with hidden 32, LM logits come out O(1)


@dataclass
class Arch:
    build: Callable[[], nn.Module]
    attn: list[str]  # the usual attention targets (PEFT's defaults for the family)
    inputs: Callable[[torch.Generator], dict]
    train: list[str] = field(default_factory=list)  # modules trained in full (a classification head)


def _ids(g, lo=0):
    return {"input_ids": torch.randint(lo, V, (2, SEQ), generator=g)}


def _seq2seq(g):
    return {**_ids(g), "decoder_input_ids": torch.randint(0, V, (2, 4), generator=g)}


def _pixels(g):
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}


def _hf(config_cls: str, model_cls: str, **kw):
    def build():
        import transformers
        cfg = getattr(transformers, config_cls)(**kw)
        return getattr(transformers, model_cls)(cfg)
    return build


_enc = dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, intermediate_size=FFN, vocab_size=V,
            max_position_embeddings=64, initializer_range=INIT, num_labels=3)
_dec = dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, num_key_value_heads=1, intermediate_size=FFN,
            vocab_size=V, max_position_embeddings=64, initializer_range=INIT)


def _scale_init(model: nn.Module) -> None:
    """He-normal weights and O(0.1) biases, so outputs are O(1) (torch's default init shrinks them layer by layer)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, std=(2 / m.weight[0].numel()) ** 0.5)
            nn.init.normal_(m.bias, std=0.1)


class MLP(nn.Module):
    """A plain MLP whose output layer (32 -> 2) is smaller than the rank: PEFT accepts r > min(d_in, d_out)."""

    def __init__(self):
        super().__init__()
        self.lin0, self.lin1, self.out = nn.Linear(20, H), nn.Linear(H, H), nn.Linear(H, 2)
        _scale_init(self)

    def forward(self, x):
        return self.out(torch.relu(self.lin1(torch.relu(self.lin0(x)))))


class ConvNet(nn.Module):
    """A small conv net: its Linear layers are in every cell, its Conv2d in the conv cells (CONV_CELLS, test_matrix.py):
    a 3×3 stride-2 conv and a 1×1 one (``pw``, padded: the only kind of Conv2d peftzoo's OFT adapts)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.pw = nn.Conv2d(8, 8, 1, padding=1)
        self.fc1, self.fc2 = nn.Linear(8 * 9 * 9, H), nn.Linear(H, 10)
        _scale_init(self)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.pw(torch.relu(self.conv(x)))).flatten(1))))


ARCHS: dict[str, Arch] = {
    "bert": Arch(_hf("BertConfig", "BertForSequenceClassification", **_enc), ["query", "value"], _ids, ["classifier"]),
    "roberta": Arch(_hf("RobertaConfig", "RobertaForSequenceClassification", **_enc), ["query", "value"],
                    lambda g: _ids(g, lo=2), ["classifier"]),
    "distilbert": Arch(_hf("DistilBertConfig", "DistilBertForSequenceClassification", dim=H, n_layers=L, n_heads=2,
                           hidden_dim=FFN, vocab_size=V, max_position_embeddings=64, initializer_range=INIT,
                           num_labels=3), ["q_lin", "v_lin"], _ids, ["classifier"]),
    "deberta-v2": Arch(_hf("DebertaV2Config", "DebertaV2ForSequenceClassification", **_enc),
                       ["query_proj", "value_proj"], _ids, ["classifier"]),
    "gpt2": Arch(_hf("GPT2Config", "GPT2LMHeadModel", n_embd=H, n_layer=L, n_head=2, vocab_size=V, n_positions=64,
                     initializer_range=INIT, bos_token_id=0, eos_token_id=0), ["c_attn"], _ids),
    "llama": Arch(_hf("LlamaConfig", "LlamaForCausalLM", **_dec), ["q_proj", "v_proj"], _ids),
    "qwen2": Arch(_hf("Qwen2Config", "Qwen2ForCausalLM", **_dec), ["q_proj", "v_proj"], _ids),
    "mistral": Arch(_hf("MistralConfig", "MistralForCausalLM", **_dec), ["q_proj", "v_proj"], _ids),
    "gemma": Arch(_hf("GemmaConfig", "GemmaForCausalLM", head_dim=16, **_dec), ["q_proj", "v_proj"], _ids),
    "phi": Arch(_hf("PhiConfig", "PhiForCausalLM", **_dec), ["q_proj", "v_proj"], _ids),
    "t5": Arch(_hf("T5Config", "T5ForConditionalGeneration", d_model=H, d_kv=16, d_ff=FFN, num_layers=L, num_heads=2,
                   vocab_size=V, initializer_factor=1.0), ["q", "v"], _seq2seq),
    "bart": Arch(_hf("BartConfig", "BartForConditionalGeneration", d_model=H, encoder_layers=L, decoder_layers=L,
                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
                     vocab_size=V, max_position_embeddings=64, init_std=INIT), ["q_proj", "v_proj"], _seq2seq),
    "vit": Arch(_hf("ViTConfig", "ViTForImageClassification", hidden_size=H, num_hidden_layers=L,
                    num_attention_heads=2, intermediate_size=FFN, image_size=16, patch_size=8, initializer_range=INIT,
                    num_labels=3), ["q_proj", "v_proj"], _pixels, ["classifier"]),
    "clip-text": Arch(_hf("CLIPTextConfig", "CLIPTextModel", hidden_size=H, num_hidden_layers=L, num_attention_heads=2,
                          intermediate_size=FFN, vocab_size=V, max_position_embeddings=64, initializer_range=INIT,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1), ["q_proj", "v_proj"], _ids),
    "mlp": Arch(MLP, ["lin0", "lin1"], lambda g: {"x": torch.randn(4, 20, generator=g)}),
    "convnet": Arch(ConvNet, ["fc1"], lambda g: {"x": torch.randn(2, 3, 16, 16, generator=g)}),
}


def output(model: nn.Module, inputs: dict) -> torch.Tensor:
    """The tensor a cell compares: logits, else the last hidden state, else the module's output."""
    out = model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
