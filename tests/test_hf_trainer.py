"""peftzoo.hf.AdapterTrainer (issue 20 item 4): the adapter's optimizer groups (LoRA+ trains unlike LoRA), the same
result as peftzoo's own loop, extra_loss once per optimizer step under gradient accumulation, adapter-only
checkpoints and a resume equal to the uninterrupted run."""
import json

import pytest
import torch
from conftest import tiny_bert
from safetensors.torch import load_file
from torch import nn
from transformers import TrainingArguments, default_data_collator

import peftzoo
from peftzoo.bench.train import fit
from peftzoo.hf import AdapterTrainer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning:transformers")


def data(n=32, seq=9, labels=3):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 100, (seq,), generator=g), "labels": int(i % labels)} for i in range(n)]


def args(out, **kw):
    base = dict(output_dir=str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
                save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, optim="adamw_torch")
    return TrainingArguments(**{**base, **kw})


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def attach(method, model=None, **kw):
    hp = {"adalora": dict(init_r=4, target_r=2), "full": {}}.get(method, dict(r=4))
    return peftzoo.attach(model if model is not None else no_dropout(tiny_bert()), method, train=["classifier"],
                          **hp, **kw)


def trained(ad):
    return {n: p.detach().clone() for n, p in ad.model.named_parameters() if p.requires_grad}


def test_loraplus_puts_b_at_lr_times_ratio_and_trains_unlike_lora(tmp_path):
    losses, finals = {}, {}
    for method in ("lora", "loraplus"):
        ad = attach(method)
        tr = AdapterTrainer(adapter=ad, args=args(tmp_path / method, logging_strategy="steps", logging_steps=1,
                                                  adam_beta1=0.8, adam_epsilon=1e-6), train_dataset=data())
        tr.train()
        losses[method] = [h["loss"] for h in tr.state.log_history if "loss" in h]
        finals[method] = trained(ad)
        groups = {g["lr_scale"]: g for g in tr.optimizer.param_groups}
        assert tr.optimizer.defaults["betas"] == (0.8, 0.999) and tr.optimizer.defaults["eps"] == 1e-6
        if method == "loraplus":
            ratio = ad.config.lr_ratio
            assert set(groups) == {1.0, ratio} and groups[ratio]["initial_lr"] == pytest.approx(1e-2 * ratio)
            assert {id(p) for p in groups[ratio]["params"]} == {id(p) for p in ad.roles()["B"]}
        else:
            assert set(groups) == {1.0}
    assert len(losses["lora"]) == 8 and losses["lora"][0] == pytest.approx(losses["loraplus"][0])  # B = 0 at start
    assert max(abs(a - b) for a, b in zip(losses["lora"], losses["loraplus"])) > 1e-3
    assert any(not torch.allclose(finals["lora"][n], finals["loraplus"][n]) for n in finals["lora"])


@pytest.mark.parametrize("method", ["loraplus", "adalora", "galore"])  # galore: its own optimizer, make_optimizer
def test_adapter_trainer_equals_peftzoos_own_loop(tmp_path, method):
    rows = data()
    ours = attach(method)
    batches = [default_data_collator(rows[i:i + 4]) for i in range(0, 32, 4)]
    fit(ours, lambda epoch: batches, epochs=1, lr=1e-2, warmup=0.0, weight_decay=0.01, clip=1.0)
    ad = attach(method)
    AdapterTrainer(adapter=ad, args=args(tmp_path, weight_decay=0.01, train_sampling_strategy="sequential"),
                   train_dataset=rows).train()
    want, got = trained(ours), trained(ad)
    assert set(want) == set(got)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=2e-6, rtol=1e-5, msg=n)
    if method == "adalora":
        assert ad.ranks() == ours.ranks() and ad.steps_seen == ours.steps_seen == 8


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=64, vocab_size=100)).eval()


def test_extra_loss_counts_once_per_step_under_gradient_accumulation(tmp_path):
    """Llama's loss is normalised over the whole accumulated batch (Trainer then does not divide it): 2 x 2 rows
    must train exactly as 1 x 4 rows, AdaLoRA's orthogonality term included."""
    rows = [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in data(16)]
    out = {}
    for bs, ga in ((4, 1), (2, 2)):
        ad = peftzoo.attach(tiny_llama(), "adalora", init_r=4, target_r=2, orth_reg_weight=5.0)
        AdapterTrainer(adapter=ad, args=args(tmp_path / str(ga), max_steps=4, per_device_train_batch_size=bs,
                                             gradient_accumulation_steps=ga), train_dataset=rows).train()
        assert ad.steps_seen == 4
        out[ga] = trained(ad)
    for n in out[1]:
        torch.testing.assert_close(out[2][n], out[1][n], atol=2e-6, rtol=1e-5, msg=n)


def test_checkpoints_hold_the_adapter_only_and_resume_exactly(tmp_path):
    rows = data()
    ad = attach("loraplus", tiny_bert())  # dropout on: Trainer restores the RNG state too
    AdapterTrainer(adapter=ad, args=args(tmp_path / "a", max_steps=6, save_strategy="steps", save_steps=3),
                   train_dataset=rows).train()
    ckpt = tmp_path / "a/checkpoint-3"
    files = {p.name for p in ckpt.iterdir()}
    assert {"peftzoo.json", "adapter.safetensors", "optimizer.pt", "trainer_state.json"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin"}
    keys = set(load_file(str(ckpt / "adapter.safetensors")))
    assert keys and not any(".base." in k for k in keys)
    assert json.loads((ckpt / "peftzoo.json").read_text())["method"] == "loraplus"
    peftzoo.load(tiny_bert(), ckpt)  # a plain peftzoo adapter folder

    again = attach("loraplus", tiny_bert())
    AdapterTrainer(adapter=again, args=args(tmp_path / "b", max_steps=6, save_strategy="steps", save_steps=3),
                   train_dataset=rows).train(resume_from_checkpoint=str(ckpt))
    want, got = trained(ad), trained(again)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=0, rtol=0, msg=n)


def test_resuming_adalora_says_its_importance_state_restarts(tmp_path):
    rows = data(16)
    ad = attach("adalora")
    AdapterTrainer(adapter=ad, args=args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2),
                   train_dataset=rows).train()
    again = attach("adalora")
    with pytest.warns(UserWarning, match=r"adalora: on_step\(\) keeps training state .* can differ"):
        AdapterTrainer(adapter=again, args=args(tmp_path, max_steps=4), train_dataset=rows).train(
            resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert again.steps_seen == 2


def test_full_finetuning_is_checkpointed_as_trainer_does(tmp_path):
    ad = attach("full")
    AdapterTrainer(adapter=ad, args=args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
                   train_dataset=data(8)).train()
    files = {p.name for p in (tmp_path / "checkpoint-2").iterdir()}
    assert "model.safetensors" in files and "peftzoo.json" not in files


def test_unsupported_optimizers_and_foreign_models_are_refused(tmp_path):
    ad = attach("loraplus")
    with pytest.raises(ValueError, match=r"optim='lomo' is not supported .* adamw_torch, adamw_torch_fused.*"
                                         r"optimizers=\(MyOptimizer\(ad.param_groups\(lr\)\), None\)"):
        AdapterTrainer(adapter=ad, args=args(tmp_path, optim="lomo"), train_dataset=data(8))
    with pytest.raises(ValueError, match="pass model=ad.model"):
        AdapterTrainer(model=tiny_bert(), adapter=ad, args=args(tmp_path), train_dataset=data(8))
    for optim in ("adamw_torch_fused", "sgd", "adafactor"):
        tr = AdapterTrainer(adapter=ad, args=args(tmp_path, optim=optim), train_dataset=data(8))
        scales = sorted(g["lr"] / 1e-2 for g in tr.create_optimizer().param_groups)
        assert scales == pytest.approx([1.0, ad.config.lr_ratio]), optim


def test_load_best_model_at_end_loads_the_best_adapter_checkpoint(tmp_path):
    rows = data(16)
    ad = attach("lora")
    tr = AdapterTrainer(adapter=ad, args=args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2,
                                              eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
                                              metric_for_best_model="loss", greater_is_better=False),
                        train_dataset=rows, eval_dataset=rows[:8])
    tr.train()
    assert tr.state.best_model_checkpoint is not None
    for ckpt in ("checkpoint-2", "checkpoint-4"):  # whichever was best: what loading it gives, head included
        with torch.no_grad():
            for p in ad.trainable_parameters():
                p.add_(1.0)
        tr.state.best_model_checkpoint = str(tmp_path / ckpt)
        tr._load_best_model()
        want = trained(peftzoo.load(tiny_bert(), tmp_path / ckpt))
        assert all(torch.equal(v, trained(ad)[n]) for n, v in want.items()) and len(want) == len(trained(ad))
