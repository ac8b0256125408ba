"""Own data, generated: noisy sine, square and sawtooth waves of random frequency and phase."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

LENGTH = 64


@functools.lru_cache(maxsize=1)
def _waves(n: int = 900, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, LENGTH, dtype=np.float32)
    labels = rng.integers(0, 3, n)
    freq = rng.uniform(2.0, 6.0, (n, 1))
    phase = rng.uniform(0.0, 1.0, (n, 1))
    cycles = freq * t[None, :] + phase
    shapes = [np.sin(2 * np.pi * cycles), np.sign(np.sin(2 * np.pi * cycles)),
              2 * (cycles % 1.0) - 1]
    x = np.choose(labels[:, None], shapes) + rng.normal(0.0, 0.4, (n, LENGTH))
    return x[:, None, :].astype(np.float32), labels.astype(np.int64)


def load() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val, test) as (X, y) numpy arrays."""
    x, y = _waves()
    return (x[:600], y[:600]), (x[600:750], y[600:750]), (x[750:], y[750:])


class Pairs(Dataset):
    """The same waves as a torch Dataset of (input, label) pairs."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def load_pairs() -> tuple[Dataset, Dataset]:
    """(train, val) as torch Datasets of (input, label) pairs."""
    (xt, yt), (xv, yv), _ = load()
    return Pairs(xt, yt), Pairs(xv, yv)
