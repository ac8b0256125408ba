"""A user's own data: ``--data MODULE:ATTR`` turned into the splits a trial trains on.

``ATTR()`` returns ``(train, val)`` or ``(train, val, test)``; each split is a
``torch.utils.data.Dataset`` of ``(input, label)`` pairs or an ``(X, y)`` pair of tensors
or numpy arrays. Inputs keep their kind (floats become float32, integers such as token
ids int64); labels must be integer class indices. Without a test split the validation
split stands in for it. The classes are ``0 .. max label``. The loaded data is kept per
process, so a worker calls the loader once for all its trials.

Example:
    >>> import torch
    >>> data = as_dataset("inline", ((torch.zeros(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])),
    ...                             (torch.zeros(3, 3), torch.tensor([0, 1, 2]))))
    >>> data.input_shape, data.num_classes, len(data.test)
    ((3,), 3, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from allocator._errors import DataError
from trials.data import Dataset, Split

__all__ = ["as_dataset", "load_data", "load_user_data"]

_FORMS = "(train, val) or (train, val, test)"
_SPLIT_FORMS = "a torch Dataset of (input, label) pairs or an (X, y) pair of tensors or arrays"


def load_data(config: Mapping[str, Any]) -> Dataset:
    """The dataset a trial config names: a built-in one, or a user's loader (``MODULE:ATTR``).

    Example:
        >>> load_data({"data": "digits"}).num_classes
        10
    """
    name = str(config.get("data", "mnist1d"))
    if ":" in name:
        return load_user_data(name)
    from trials.data import load_dataset

    return load_dataset(name, seed=config.get("seed", 0), root=config.get("data_root"),
                        size=config.get("data_size"))


@functools.lru_cache(maxsize=4)
def load_user_data(spec: str) -> Dataset:
    """Call the loader ``spec`` names once per process and normalise what it returns."""
    from trials.user import resolve

    loader = resolve(spec, "--data")
    try:
        returned = loader()
    except Exception as exc:
        raise DataError(f"--data {spec}() raised {type(exc).__name__}: {exc}") from None
    return as_dataset(spec, returned)


def as_dataset(name: str, returned: Any) -> Dataset:
    """The :class:`trials.data.Dataset` of a loader's return value (:class:`DataError` if
    it has the wrong form)."""
    if not isinstance(returned, (tuple, list)) or len(returned) not in (2, 3):
        raise DataError(f"--data {name} must return {_FORMS}, got {_kind(returned)}")
    names = ("train", "val", "test")
    splits = [_split(name, names[i], part) for i, part in enumerate(returned)]
    if len(splits) == 2:
        splits.append(splits[1])
    shapes = {tuple(s.x.shape[1:]) for s in splits}
    if len(shapes) > 1:
        raise DataError(f"--data {name}: the splits' inputs differ in shape: {sorted(shapes)}")
    labels = torch.cat([s.y for s in splits])
    return Dataset(
        name=name,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        input_shape=tuple(int(d) for d in splits[0].x.shape[1:]),
        num_classes=int(labels.max()) + 1,
    )


def _split(name: str, which: str, part: Any) -> Split:
    where = f"--data {name}: the {which} split"
    if isinstance(part, (tuple, list)) and len(part) == 2 and all(_is_array(p) for p in part):
        x, y = (torch.as_tensor(np.asarray(p)) if isinstance(p, np.ndarray) else p for p in part)
    elif (hasattr(part, "__getitem__") and hasattr(part, "__len__")
          and not isinstance(part, (str, bytes, Mapping)) and not _is_array(part)):
        x, y = _stack(where, part)
    else:
        raise DataError(f"{where} must be {_SPLIT_FORMS}, got {_kind(part)}")
    if len(x) != len(y):
        raise DataError(f"{where} has {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{where} is empty")
    x = x.float() if x.is_floating_point() else x.long()
    if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1:
        raise DataError(
            f"{where}'s labels must be integer class indices, one per example; got "
            f"{y.dtype} of shape {tuple(y.shape)}"
        )
    y = y.long()
    if int(y.min()) < 0:
        raise DataError(f"{where} has a negative label ({int(y.min())}); classes count from 0")
    return Split(x.contiguous(), y.contiguous())


def _stack(where: str, part: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = [], []
    for i in range(len(part)):
        item = part[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{where}: item {i} must be an (input, label) pair, got {_kind(item)}")
        inputs.append(torch.as_tensor(item[0]))
        labels.append(torch.as_tensor(item[1]))
    try:
        return torch.stack(inputs), torch.stack(labels).reshape(-1)
    except RuntimeError as exc:
        raise DataError(f"{where}: the items cannot be stacked into a batch: {exc}") from None


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
