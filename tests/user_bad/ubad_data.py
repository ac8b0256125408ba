"""Loaders that are wrong in every way a user's can be (for the bad-input tests)."""

import numpy as np
import torch


def _xy(n, features=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n)


def good():
    return _xy(60), _xy(20, seed=1)


def wrong_form():
    return {"train": _xy(60)}


def wrong_split():
    return _xy(60), "validation.csv"


def wrong_shape():
    return _xy(60, features=10), _xy(20, features=10, seed=1)


def too_many_labels():
    return _xy(60, classes=7), _xy(20, classes=7, seed=1)


def float_labels():
    x, y = _xy(60)
    return (x, y.astype(np.float32)), _xy(20, seed=1)


def raises():
    raise FileNotFoundError("/data/train.csv")


def tensors():
    x, y = _xy(60)
    return (torch.from_numpy(x), torch.from_numpy(y)), _xy(20, seed=1)
