"""Own training: AdamW, a fixed number of epochs, macro F1 on the validation split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from data import load


def macro_f1(pred: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        scores.append(2 * tp / max(2 * tp + fp + fn, 1))
    return sum(scores) / classes


def fit(model, config, report):
    """npas calls this with the model (its parameter method applied), the trial's config
    (npas's fields and the user dimensions) and ``report(epoch, **metrics)``."""
    (xt, yt), (xv, yv), _ = load()
    xt, yt, xv, yv = (torch.from_numpy(a) for a in (xt, yt, xv, yv))
    torch.manual_seed(config["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=config.get("step_size", 3e-3))
    metrics = {}
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        order = torch.randperm(len(yt))
        for i in range(0, len(yt), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(xv).argmax(dim=1)
        metrics = {"macro_f1": macro_f1(pred, yv, 3),
                   "val_accuracy": float((pred == yv).float().mean())}
        report(epoch, **metrics)
    return metrics


def fit_nan(model, config, report):
    """A trial function whose metric is NaN for wide models (the search goes on)."""
    return {"macro_f1": float("nan") if config.get("width", 0) > 16 else 0.5}
