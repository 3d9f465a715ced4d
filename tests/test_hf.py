"""transformers.Trainer users get the adapter's hooks too (AdaLoRA actually reallocates)."""
import torch
from conftest import tiny_bert

import peftzoo


def test_adapter_trainer_runs_adalora_hooks(tmp_path):
    from transformers import TrainingArguments

    from peftzoo.hf import AdapterTrainer
    model = tiny_bert()
    ad = peftzoo.attach(model, "adalora", targets=["query", "value"], init_r=6, target_r=2, tinit=1, tfinal=1,
                        train=["classifier"])
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 100, (9,), generator=g), "labels": int(i % 3)} for i in range(32)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    AdapterTrainer(model=ad.model, adapter=ad, args=args, train_dataset=data).train()
    assert ad.config.total_steps == 8 and ad.steps_seen == 8 and ad.extra_loss_calls >= 8
    assert sum(ad.ranks().values()) == 2 * len(ad.layers)
