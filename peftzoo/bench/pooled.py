"""The last encoder layer computed only for the token the classification head reads (``RunSpec.last_layer="pooled"``).

A BERT-style sequence classifier pools its last layer's first token (``BertPooler``: ``hidden[:, 0]``), so of that
layer's output only row 0 of each sequence is ever read, and in training only row 0 receives a gradient. Computed
in full, the last layer still makes every row's query, attention output, and feed-forward block: 10 of its 12
d×d-sized matmuls per token, forward and backward. ``pooled_last_layer`` runs that layer for the first token only:
the keys and values of every token (the first token attends to all of them), then the query, attention, attention
output and feed-forward block of token 0. The pooled output is the same function (equal within float rounding);
the last layer's output has one row per sequence instead of one per token.

Not bit-identical to the full layer: a matmul on fewer rows may round differently, and in training the dropout
masks of that layer are drawn for fewer elements, so the random stream after it differs (the classifier's dropout
mask too). Hence a run setting, part of a run's identity when not ``"full"`` (``RunSpec.last_layer``).

Which models: a ``transformers`` BERT encoder (``BertModel``, incl. all-MiniLM-L6-v2) whose head reads the pooler
(``BertForSequenceClassification``), found by type, never by name. Any other model is refused with the reason when
the setting asks for ``"pooled"``. A call the shortcut cannot serve (a cache, cross-attention, chunked feed-forward,
attention weights asked for) runs the layer in full.
"""
from __future__ import annotations

import contextlib
import types

LAST_LAYERS = ("full", "pooled")  # RunSpec.last_layer


def _bert_last_layer(model):
    """The last ``BertLayer`` of a ``BertForSequenceClassification`` (its head reads the pooler: token 0), else None."""
    from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer, BertPooler
    if not isinstance(model, BertForSequenceClassification) or not isinstance(model.bert.pooler, BertPooler):
        return None
    layer = model.bert.encoder.layer[-1]
    return layer if type(layer) is BertLayer else None


def supports(model) -> bool:
    """Whether ``pooled_last_layer`` can shorten ``model``'s last layer."""
    return _bert_last_layer(model) is not None


def _first_token_forward(layer, full):
    """The layer's forward for the first token's output only (``full``: its own forward, for calls it cannot serve)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, **kwargs):
        if (cache is not None or encoder_hidden_states is not None or self.is_decoder or self.chunk_size_feed_forward
                or kwargs.get("output_attentions")):
            return full(hidden_states, attention_mask, encoder_hidden_states,
                        encoder_attention_mask=encoder_attention_mask, cache=cache, **kwargs)
        sa = self.attention.self
        b, t, _ = hidden_states.shape
        first = hidden_states[:, :1]
        q = sa.query(first).view(b, 1, -1, sa.attention_head_size).transpose(1, 2)
        k = sa.key(hidden_states).view(b, t, -1, sa.attention_head_size).transpose(1, 2)
        v = sa.value(hidden_states).view(b, t, -1, sa.attention_head_size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] == t:
            mask = mask[:, :, :1, :]  # the first query's row of the (b, 1, t, t) mask
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
        out, _ = attend(sa, q, k, v, mask, dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling,
                        **kwargs)
        attended = self.attention.output(out.reshape(b, 1, -1).contiguous(), first)
        return self.feed_forward_chunk(attended)
    return types.MethodType(forward, layer)


@contextlib.contextmanager
def pooled_last_layer(model, last_layer: str = "pooled"):
    """Inside the block ``model``'s last layer computes only the pooled token (``last_layer="pooled"``); a no-op for
    ``"full"``. Raises ValueError for a model it cannot shorten."""
    if last_layer not in LAST_LAYERS:
        raise ValueError(f"last_layer must be one of {LAST_LAYERS}, got {last_layer!r}")
    if last_layer == "full":
        yield model
        return
    layer = _bert_last_layer(model)
    if layer is None:
        raise ValueError(f"last_layer='pooled' needs a BERT sequence classifier whose head reads the pooled first "
                         f"token (BertForSequenceClassification); {type(model).__name__} is not one: use 'full'")
    had = "forward" in vars(layer)
    own = layer.forward
    layer.forward = _first_token_forward(layer, own)
    try:
        yield model
    finally:
        if had:
            layer.forward = own
        else:
            del layer.forward
