"""Encoding and batching for the runner: tokenise once, length-grouped training batches, length-sorted evaluation.

* ``encode_split`` tokenises the chosen rows of a split once per process and caches the result, keyed by what
  determines it: the tokenizer, ``max_len``, the task and a digest of the chosen texts themselves (so the data
  source, the split and the row selection are all in the key, and an edited file never hits a stale entry).
* ``train_batches(enc, labels, batch_size, seed, epoch)``: every epoch a fresh seeded shuffle; inside chunks of
  ``GROUP`` batches the examples are sorted by length, so a batch holds examples of similar length, and each batch
  is cut to its own longest example (dynamic padding). The batch order is shuffled again, so long and short
  batches are interleaved. Every example appears exactly once per epoch.
* ``eval_order`` / ``restore``: evaluation runs in length order (least padding) and the outputs are put back in
  the split's own order before any metric is computed.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

GROUP = 50  # batches per sorting chunk: enough to group lengths well, few enough that batches stay random
CACHE_SIZE = 8  # encoded splits kept per process (a 2,000-row SST-2 split at length 64 is ~2 MB)
_CACHE: OrderedDict = OrderedDict()


@dataclass(frozen=True)
class Encoded:
    tensors: dict  # name -> LongTensor [n, width], right-padded; width = the longest encoded row
    lengths: np.ndarray  # tokens per row (attention-mask sum)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows) -> dict:
        """The rows ``rows`` (in that order), cut to their longest member."""
        rows = np.asarray(rows, dtype=np.int64)
        width = int(self.lengths[rows].max()) if len(rows) else 0
        sel = torch.from_numpy(rows)
        return {k: v.index_select(0, sel)[:, :width] for k, v in self.tensors.items()}


def tokenizer_key(tok) -> tuple:
    """What identifies a tokenizer's output: its class, where it came from, its vocabulary and pad token (the
    padding side is always right: ``encode_split``)."""
    return (type(tok).__name__, str(getattr(tok, "name_or_path", "")), len(tok), getattr(tok, "pad_token_id", None))


def _digest(texts: list) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(repr(t).encode())
    return h.hexdigest()


def encode_split(tok, split, rows, max_len: int, task: str) -> Encoded:
    """Tokenise ``split.texts[rows]`` (truncated to ``max_len``), cached per (tokenizer, max_len, task, the texts)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ValueError(f"{task}: no rows to encode")
    texts = [split.texts[i] for i in rows]
    key = (tokenizer_key(tok), int(max_len), task, len(texts), _digest(texts))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    cols = list(zip(*texts))
    # right padding whatever the tokenizer's default (Llama's is left): batches are cut on the right, and a row's
    # real tokens keep their unpadded positions (transformers gives left-padded rows shifted position ids)
    enc = tok(*cols, truncation=True, max_length=max_len, padding="longest", padding_side="right",
              return_tensors="pt")
    tensors = {k: v.long().contiguous() for k, v in enc.items()}
    if "attention_mask" not in tensors:
        raise ValueError(f"tokenizer {tokenizer_key(tok)[1]!r} returns no attention_mask; cannot pad dynamically")
    out = Encoded(tensors, tensors["attention_mask"].sum(1).numpy())
    _CACHE[key] = out
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def clear_cache() -> None:
    _CACHE.clear()


def grouped_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Batches of row indices for one epoch: seeded by (seed, epoch), length-grouped inside shuffled chunks."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * GROUP
    batches = []
    for c in range(0, len(perm), chunk):
        part = perm[c:c + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]  # longest first inside the chunk
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[j] for j in rng.permutation(len(batches))]


def train_batches(enc: Encoded, labels, batch_size: int, seed: int, epoch: int, device=None) -> list[dict]:
    labels = torch.as_tensor(labels)
    out = []
    for rows in grouped_order(enc.lengths, batch_size, seed, epoch):
        b = enc.batch(rows)
        b["labels"] = labels[torch.from_numpy(rows)]
        out.append({k: v.to(device) for k, v in b.items()} if device is not None else b)
    return out


def eval_order(lengths: np.ndarray) -> np.ndarray:
    """Row indices, longest first (the first batch shows the peak memory at once)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def predict(model, enc: Encoded, batch_size: int, device, regression: bool, autocast) -> np.ndarray:
    """Model outputs for every row of ``enc`` (argmax, or the value for regression), in the rows' own order;
    computed in length order, ``batch_size`` rows at a time, under the ``autocast`` context."""
    order = eval_order(enc.lengths)
    outs = []
    with torch.no_grad(), autocast:
        for i in range(0, len(order), batch_size):
            b = {k: v.to(device) for k, v in enc.batch(order[i:i + batch_size]).items()}
            logits = model(**b).logits.float()
            outs.append(logits.squeeze(-1) if regression else logits.argmax(-1))
    return restore(torch.cat(outs).cpu(), order).numpy()


def restore(values, order: np.ndarray):
    """Outputs computed in ``order`` back in the original row order: ``restore(x[order], order) == x``."""
    out = values.new_empty(values.shape) if torch.is_tensor(values) else np.empty_like(values)
    out[torch.from_numpy(order) if torch.is_tensor(values) else order] = values
    return out
