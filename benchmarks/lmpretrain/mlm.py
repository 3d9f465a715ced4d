"""Masked-LM pre-training of a small BERT from scratch, with checkpoints that a killed run resumes from.

Texts are packed into blocks of ``seq_len`` tokens (``[CLS]`` then texts each ended by ``[SEP]``, no padding);
15% of the non-special tokens are chosen per step, 80% of them replaced by ``[MASK]``, 10% by a random token, 10%
kept (transformers' ``DataCollatorForLanguageModeling``). Everything random is a function of (seed, step): the
blocks of step t (an epoch-wise permutation), its masks, and the dropout (torch's RNG, saved with the trainer
state), so a resumed run takes the steps an uninterrupted one takes.

Each checkpoint is a folder ``AutoModelForSequenceClassification.from_pretrained`` loads (config, safetensors
weights, tokenizer; its pooler and classifier are new there), finished by ``pretrain.json`` (step, held-out MLM
loss, times); the optimizer state of the latest one is kept beside it to resume from.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from peftzoo.bench import identity
from peftzoo.bench.store import write_json

MASK_SEED = 12345  # the held-out blocks' masks: the same at every checkpoint, so their losses compare


@dataclass(frozen=True)
class Shape:
    layers: int = 4  # transformer blocks
    hidden: int = 128  # width; heads of 64 dimensions, MLP 4x the width (BERT's ratios)
    max_positions: int = 128  # position embeddings: at least the longest input (blocks, downstream --max-len)

    @property
    def heads(self) -> int:
        return max(1, self.hidden // 64)


@dataclass(frozen=True)
class Schedule:
    steps: tuple = (0, 300, 1000, 3000, 10000)  # the checkpoints; the last is the run's length (LR decays to it)
    batch_size: int = 32  # blocks per step
    seq_len: int = 64  # tokens per block: the downstream --max-len, so positions seen in pre-training are used
    lr: float = 5e-4  # AdamW peak LR (small BERTs from scratch: 1e-4..1e-3)
    warmup: float = 0.06  # share of the steps with linear warm-up, then linear decay to 0 at the last step
    weight_decay: float = 0.01  # on matrices (ndim >= 2) only, as BERT
    seed: int = 0  # the init, the block order, the masks, the dropout


def run_name(shape: Shape, sched: Schedule, corpus_id: str) -> str:
    """``bert-l4h256-<hash>``: the hash of every setting that changes the weights (and the corpus's identity)."""
    return f"bert-l{shape.layers}h{shape.hidden}-" + identity.digest(
        {"shape": asdict(shape), "schedule": asdict(sched), "corpus": corpus_id})[:8]


def bert(shape: Shape, tok):
    from transformers import BertConfig, BertForMaskedLM
    cfg = BertConfig(vocab_size=len(tok), hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                     num_attention_heads=shape.heads, intermediate_size=4 * shape.hidden,
                     max_position_embeddings=shape.max_positions, pad_token_id=tok.pad_token_id)
    return BertForMaskedLM(cfg)


def pack(tok, texts: list[str], seq_len: int) -> torch.Tensor:
    """[n, seq_len] blocks: ``[CLS]`` then the texts' tokens, each text ended by ``[SEP]``, cut every seq_len-1."""
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    stream = [t for x in ids for t in (*x, tok.sep_token_id)]
    n = len(stream) // (seq_len - 1)
    if n < 1:
        raise ValueError(f"{len(texts)} texts give {len(stream)} tokens, less than one block of {seq_len}")
    body = torch.tensor(stream[:n * (seq_len - 1)]).view(n, seq_len - 1)
    return torch.cat([torch.full((n, 1), tok.cls_token_id), body], 1)


def masker(tok):
    from transformers import DataCollatorForLanguageModeling
    return DataCollatorForLanguageModeling(tok, mlm_probability=0.15, mask_replace_prob=0.8, random_replace_prob=0.1)


def mask(collator, blocks: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of ``blocks`` with masks drawn from ``seed`` (labels -100 where not chosen)."""
    tok = collator.tokenizer
    special = (blocks == tok.cls_token_id) | (blocks == tok.sep_token_id) | (blocks == tok.pad_token_id)
    collator.generator = torch.Generator().manual_seed(seed)
    return collator.torch_mask_tokens(blocks.clone(), special)


def mlm_loss(model, inputs: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BertForMaskedLM's loss, its vocabulary projection computed on the chosen positions only (15%, not all)."""
    h = model.bert(input_ids=inputs).last_hidden_state
    chosen = labels != -100
    return F.cross_entropy(model.cls(h[chosen]), labels[chosen], reduction=reduction)


@torch.no_grad()
def held_out_loss(model, collator, blocks: torch.Tensor, batch: int = 64) -> float:
    """Mean MLM cross-entropy (nats per chosen token) on ``blocks`` with fixed masks (``MASK_SEED``), dropout off."""
    was = model.training
    model.eval()
    inputs, labels = mask(collator, blocks, MASK_SEED)
    total = sum(float(mlm_loss(model, inputs[i:i + batch], labels[i:i + batch], "sum"))
                for i in range(0, len(blocks), batch))
    model.train(was)
    return total / int((labels != -100).sum())


class Trainer:
    """One pre-training run (``shape``, ``sched``) over ``blocks``; ``checkpoint(step)`` is its folder in ``work``."""

    def __init__(self, shape: Shape, sched: Schedule, tok, blocks, held, work: Path, corpus_id: str):
        self.shape, self.sched, self.tok, self.blocks, self.held = shape, sched, tok, blocks, held
        self.name = run_name(shape, sched, corpus_id)
        self.work, self.collator, self._perms = Path(work), masker(tok), {}

    def checkpoint(self, step: int) -> Path:
        return self.work / f"{self.name}-step{step:06d}"

    def done(self, step: int) -> bool:
        return (self.checkpoint(step) / "pretrain.json").is_file()

    def batch(self, step: int) -> torch.Tensor:
        """The blocks of ``step``: consecutive slots of per-epoch permutations (seeded by seed and epoch)."""
        n, bs = len(self.blocks), self.sched.batch_size
        rows = []
        for k in range(step * bs, (step + 1) * bs):
            e = k // n
            if e not in self._perms:  # only the current epoch's permutation is kept
                g = torch.Generator().manual_seed(1000 * self.sched.seed + e)
                self._perms = {e: torch.randperm(n, generator=g)}
            rows.append(self._perms[e][k % n])
        return self.blocks[torch.stack(rows)]

    def start(self, upto: int | None = None):
        """(model, optimizer, scheduler, step): from the saved trainer state when it is at step ``upto`` or before
        (a checkpoint before it was removed: from scratch), else freshly initialised at step 0."""
        torch.manual_seed(self.sched.seed)
        model = bert(self.shape, self.tok)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.sched.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=self.sched.lr)
        total, warm = self.sched.steps[-1], max(1, round(self.sched.warmup * self.sched.steps[-1]))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: min((t + 1) / warm, max(0.0, (total - t) / max(1, total - warm))))
        step, state = 0, self.work / f"{self.name}-trainer.pt"
        s = torch.load(state, weights_only=False) if state.is_file() else None
        if s is not None and (upto is None or s["step"] <= upto):
            model.load_state_dict(s["model"])
            opt.load_state_dict(s["optimizer"])
            sched.load_state_dict(s["scheduler"])
            torch.set_rng_state(s["rng"])
            step = s["step"]
        return model, opt, sched, step

    def run(self, progress=None) -> list[dict]:
        """Train to every checkpoint not yet done (resuming from the trainer state) and return every checkpoint's
        ``pretrain.json``. ``progress(step, loss)`` is called every 50 steps."""
        todo = [s for s in self.sched.steps if not self.done(s)]
        if todo:
            model, opt, sched, step = self.start(todo[0])
            model.train()
            losses, t0, c0 = [], time.perf_counter(), _cpu()
            for target in todo:
                while step < target:
                    inputs, labels = mask(self.collator, self.batch(step), 1_000_003 * self.sched.seed + step)
                    loss = mlm_loss(model, inputs, labels)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    losses.append(loss.item())
                    if progress and step % 50 == 0:
                        progress(step, sum(losses[-50:]) / len(losses[-50:]))
                self.save(model, opt, sched, step, losses, time.perf_counter() - t0, _cpu() - c0)
                losses, t0, c0 = [], time.perf_counter(), _cpu()
        return [json.loads((self.checkpoint(s) / "pretrain.json").read_text()) for s in self.sched.steps]

    def save(self, model, opt, sched, step: int, losses: list[float], wall: float, cpu: float) -> None:
        """The trainer state (replacing the last), then the checkpoint folder, then its ``pretrain.json``."""
        state = self.work / f"{self.name}-trainer.pt"
        self.work.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "rng": torch.get_rng_state(), "step": step}, f"{state}.tmp")
        os.replace(f"{state}.tmp", state)
        out, tmp = self.checkpoint(step), Path(f"{self.checkpoint(step)}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)  # an unfinished one (no pretrain.json)
        from peftzoo.bench.models import _quiet_transformers
        with _quiet_transformers():  # no progress bar per save
            model.save_pretrained(tmp)
            self.tok.save_pretrained(tmp)
        os.replace(tmp, out)
        meta = {"step": step, "held_out_loss": held_out_loss(model, self.collator, self.held),
                "train_loss": sum(losses) / len(losses) if losses else None, "train_steps_here": len(losses),
                "wall_s": wall, "cpu_s": cpu, "name": self.name, "shape": asdict(self.shape),
                "schedule": asdict(self.sched), "blocks": len(self.blocks), "held_out_blocks": len(self.held),
                "tokens_seen": step * self.sched.batch_size * self.sched.seq_len}
        write_json(out / "pretrain.json", meta)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system
