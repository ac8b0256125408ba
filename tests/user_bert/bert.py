"""A transformers model built from a config (no weights downloaded), its data and training."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

VOCAB, LENGTH = 64, 16


def build(hidden: int = 32, layers: int = 2) -> torch.nn.Module:
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=LENGTH, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


@functools.lru_cache(maxsize=1)
def load() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Token sequences; the label says whether token 5 occurs at least as often as token 6."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, (600, LENGTH))
    y = ((x == 5).sum(1) >= (x == 6).sum(1)).astype(np.int64)
    return (x[:400], y[:400]), (x[400:], y[400:])


def fit(model, config, report, data):
    """Train on ``outputs.logits`` with AdamW; ``data`` is npas's view of ``load()``."""
    x, y = data.train.x, data.train.y
    opt = torch.optim.AdamW(model.parameters(), lr=config.get("lr_bert", 1e-3))
    torch.manual_seed(config["seed"])
    metrics = {}
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        for i in range(0, len(y), 50):
            logits = model(input_ids=x[i : i + 50]).logits
            loss = F.cross_entropy(logits, y[i : i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(input_ids=data.val.x).logits.argmax(-1)
        tp = int(((pred == 1) & (data.val.y == 1)).sum())
        wrong = int((pred != data.val.y).sum())
        metrics = {"val_f1": 2 * tp / max(2 * tp + wrong, 1),
                   "val_accuracy": float((pred == data.val.y).float().mean())}
        report(epoch, **metrics)
    return metrics
