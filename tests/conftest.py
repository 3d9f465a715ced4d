import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# layers of two shapes (32->32 and 32->64) so shared-state methods are tested across shapes
TARGETS = ["query", "value", "intermediate.dense"]


def tiny_bert(seed: int = 0, num_labels: int = 3):
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=100, max_position_embeddings=64, num_labels=num_labels)
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def model():
    return tiny_bert()


@pytest.fixture
def ids():
    return torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(1))


def randomize(ad, seed: int = 0, std: float = 0.3):
    """Give every adapter tensor random values so that outputs depend on all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ad.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
