"""The model zoo: small real models with example inputs and a loss, shared by tests, benchmarks and
the conformance suite.

    entry = ZOO["gpt2"]
    model = entry.build()
    inputs, target = entry.example(batch=2)
    loss = entry.loss(model(*inputs), target)

Transformer configs set dropout to 0 so eager and compiled runs are comparable step for step; the
``*_eager`` variants build attention by hand (attn_implementation="eager"), as many user models do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# transformers is only needed for the two transformer families; keep its warnings quiet.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 2048
SEQ = 64


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry. ``build`` and ``example`` are seeded, so two calls give equal models/inputs."""

    name: str
    _build: Callable[[], nn.Module]
    _example: Callable[[int, torch.Generator], tuple[tuple[torch.Tensor, ...], torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    default_batch: int = 4

    def build(self, seed: int = 0) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._build()

    def example(self, batch: int | None = None,
                seed: int = 0) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return self._example(batch or self.default_batch, gen)


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, hidden: int = 256, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.GELU(), nn.LayerNorm(hidden),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.SiLU(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h.mean(dim=(2, 3)))


class LogitsOnly(nn.Module):
    """A transformers model reduced to ``tokens -> logits`` (a plain tensor, as compilers like)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, return_dict=True).logits


def _gpt2(attn: str) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=4, n_embd=256, n_head=4, vocab_size=VOCAB, n_positions=SEQ * 2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        attn_implementation=attn,
    )
    return LogitsOnly(GPT2LMHeadModel(cfg))


def _bert(attn: str) -> nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    # BERT-tiny's shape (google/bert_uncased_L-2_H-128_A-2), random weights.
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512, max_position_embeddings=SEQ * 2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation=attn, pad_token_id=0,
    )
    return LogitsOnly(BertForMaskedLM(cfg))


def _tokens(batch: int, gen: torch.Generator):
    ids = torch.randint(0, VOCAB, (batch, SEQ), generator=gen)
    return (ids,), torch.randint(0, VOCAB, (batch, SEQ), generator=gen)


def _lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))


ZOO: dict[str, ZooModel] = {
    "mlp": ZooModel(
        "mlp", MLP,
        lambda b, g: ((torch.randn(b, 64, generator=g),), torch.randint(0, 10, (b,), generator=g)),
        F.cross_entropy, default_batch=32,
    ),
    "cnn": ZooModel(
        "cnn", SmallCNN,
        lambda b, g: ((torch.randn(b, 3, 32, 32, generator=g),), torch.randint(0, 10, (b,), generator=g)),
        F.cross_entropy, default_batch=8,
    ),
    "gpt2": ZooModel("gpt2", lambda: _gpt2("sdpa"), _tokens, _lm_loss),
    "gpt2_eager": ZooModel("gpt2_eager", lambda: _gpt2("eager"), _tokens, _lm_loss),
    "bert": ZooModel("bert", lambda: _bert("sdpa"), _tokens, _lm_loss),
    "bert_eager": ZooModel("bert_eager", lambda: _bert("eager"), _tokens, _lm_loss),
}


def get(name: str) -> ZooModel:
    """A zoo entry by name; raises with the list of names."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; expected one of: {', '.join(ZOO)}") from None
