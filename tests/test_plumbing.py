"""Shared plumbing: adapter files through the one atomic writer, AdaLoRA's schedule kept on the adapter and its
watch hook removed when done, the merged forward and dropout answered once by AdapterLayer."""
from __future__ import annotations

import errno
import json
import os
import warnings

import pytest
import torch
from conftest import TARGETS, tiny_bert

import peftzoo
from peftzoo import _atomic
from peftzoo.adapters.adalora import AdaLora
from peftzoo.registry import make_config


def test_adapter_files_are_strict_json_written_atomically(tmp_path, monkeypatch):
    ad = peftzoo.attach(tiny_bert(), "lora", targets=TARGETS, r=2, train=["classifier"])
    ad.save(tmp_path)
    ad.save_peft(tmp_path / "peft")
    before = (tmp_path / "peftzoo.json").read_bytes()
    assert before.endswith(b"}") and json.loads(before)["method"] == "lora"
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["peft_type"] == "LORA"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(_atomic.OutputError, match=r"peftzoo\.json.*disk full.*the previous peftzoo\.json is intact"):
        peftzoo.attach(tiny_bert(1), "lora", targets=TARGETS, r=2, alpha=4.0).save(tmp_path)
    assert (tmp_path / "peftzoo.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def _adalora(**kw):
    cfg = make_config("adalora", targets=TARGETS, init_r=4, target_r=2, **kw)
    return AdaLora(tiny_bert(), cfg), cfg


def test_adalora_keeps_its_schedule_length_on_the_adapter():
    ad, cfg = _adalora()
    ad.set_total_steps(50)
    assert ad.config.total_steps == 50 and cfg.total_steps is None  # the caller's config is not changed
    with pytest.raises(ValueError, match="total_steps=0 leaves no budgeting phase"):
        ad.set_total_steps(0)
    assert ad.config.total_steps == 50  # a refused length leaves the adapter as it was


def _hooks(ad) -> int:
    return sum(len(layer._forward_pre_hooks) for layer in ad.layers.values())


def test_adalora_watch_hook_is_removed_once_on_step_runs():
    ad, _ = _adalora()
    ad.set_total_steps(5)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    ad.model.train()
    assert _hooks(ad) == 1
    loss = ad.model(input_ids=ids, labels=torch.tensor([0, 1])).loss + ad.extra_loss()
    loss.backward()
    ad.on_step(1)
    assert _hooks(ad) == 0


def test_adalora_watch_hook_is_removed_after_its_warning():
    ad, _ = _adalora(tinit=0, deltaT=1)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    ad.model.train()
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(12):
            ad.model(input_ids=ids)
    assert sum("on_step() was never called" in str(w.message) for w in got) == 1
    assert _hooks(ad) == 0


@pytest.mark.parametrize("method", ["lora", "dora", "vera", "adalora"])
def test_a_merged_layer_is_its_frozen_layer_and_dropout_is_built_once(method):
    ad = peftzoo.attach(tiny_bert(), method, targets=TARGETS, dropout=0.5)
    layer = next(iter(ad.layers.values()))
    assert isinstance(layer.dropout, torch.nn.Dropout) and layer.dropout.p == 0.5
    x = torch.randn(3, layer.in_features)
    layer.merge()
    layer.base.forward = lambda inp: torch.full((inp.shape[0], layer.out_features), 7.0)  # the frozen layer alone
    assert torch.equal(layer(x), torch.full((3, layer.out_features), 7.0))
    plain = peftzoo.attach(tiny_bert(), method, targets=TARGETS)
    assert next(iter(plain.layers.values())).dropout is None
