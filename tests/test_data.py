"""Tests for trials.data: shapes, disjoint splits, determinism, the file formats, errors."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from allocator._errors import ConfigError, DataError
from trials.data import DATASETS, Dataset, Split, load_dataset


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _row_hashes(split: Split) -> list[bytes]:
    rows = split.x.reshape(len(split), -1).numpy()
    return [hashlib.sha1(row.tobytes()).digest() for row in rows]


def _assert_disjoint(data: Dataset) -> None:
    hashes = [set(_row_hashes(s)) for s in (data.train, data.val, data.test)]
    assert sum(map(len, hashes)) == len(data.train) + len(data.val) + len(data.test)
    assert not hashes[0] & hashes[1]
    assert not hashes[0] & hashes[2]
    assert not hashes[1] & hashes[2]


def _assert_well_formed(data: Dataset) -> None:
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert tuple(split.x.shape[1:]) == data.input_shape
        assert len(split.x) == len(split.y) > 0
        assert int(split.y.min()) >= 0 and int(split.y.max()) < data.num_classes
        assert torch.isfinite(split.x).all()
    channel_axes = (0, *range(2, data.train.x.dim()))
    assert torch.allclose(data.train.x.mean(dim=channel_axes), torch.tensor(0.0), atol=1e-3)
    assert torch.allclose(data.train.x.std(dim=channel_axes), torch.tensor(1.0), atol=1e-2)


def test_dataset_names_are_the_documented_six() -> None:
    assert DATASETS == ("cifar10", "cifar100", "digits", "mnist", "mnist1d", "mnist5k")


@pytest.mark.parametrize(
    ("name", "shape", "sizes"),
    [
        ("mnist1d", (1, 40), (3500, 500, 1000)),
        ("mnist5k", (1, 28, 28), (3500, 500, 1000)),
        ("digits", (1, 8, 8), (1258, 180, 359)),
    ],
)
def test_bundled_datasets_load_with_standard_splits(
    name: str, shape: tuple[int, ...], sizes: tuple[int, int, int]
) -> None:
    data = load_dataset(name, seed=0)
    assert data.name == name
    assert data.input_shape == shape
    assert data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    _assert_well_formed(data)
    _assert_disjoint(data)


def test_validation_split_is_class_balanced() -> None:
    data = load_dataset("mnist5k", seed=3)
    assert torch.bincount(data.val.y, minlength=10).tolist() == [50] * 10
    assert torch.bincount(data.test.y, minlength=10).tolist() == [100] * 10


@pytest.mark.parametrize("name", ["mnist1d", "digits"])
def test_same_seed_gives_identical_tensors_and_another_seed_a_different_split(name: str) -> None:
    first, again = load_dataset(name, seed=5, size=200), load_dataset(name, seed=5, size=200)
    other = load_dataset(name, seed=6, size=200)
    for a, b in ((first.train, again.train), (first.val, again.val), (first.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert set(_row_hashes(first.val)) != set(_row_hashes(other.val))


def test_size_sets_the_number_of_examples_over_all_splits() -> None:
    data = load_dataset("digits", seed=0, size=100)
    assert (len(data.train), len(data.val), len(data.test)) == (70, 10, 20)
    tiny = load_dataset("mnist1d", seed=0, size=10)
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (7, 1, 2)
    _assert_disjoint(data)


def test_mnist1d_generation_leaves_the_global_random_state_alone() -> None:
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    load_dataset("mnist1d", seed=77, size=50)  # a seed no other test uses: not cached
    assert (np.random.random(), random.random()) == expected


def test_modifying_a_loaded_dataset_does_not_change_the_next_load() -> None:
    data = load_dataset("digits", seed=0, size=50)
    before = data.train.x.clone()
    data.train.x.fill_(42.0)
    assert torch.equal(load_dataset("digits", seed=0, size=50).train.x, before)


# --- file datasets written in the real formats -----------------------------------------


def _images(ids: np.ndarray, labels: np.ndarray, channels: int, side: int) -> np.ndarray:
    """Channel 0 encodes the label, channel 1 (or pixel 0) a unique id."""
    x = np.empty((len(ids), channels, side, side), dtype=np.uint8)
    x[:, 0] = (labels * 2)[:, None, None]
    if channels > 1:
        x[:, 1:] = ids[:, None, None, None]
    else:
        x[:, 0, 0, 0] = ids
    return x


def _write_cifar(folder: Path, fine: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key = b"fine_labels" if fine else b"labels"
    classes = 100 if fine else 10
    names = ["train", "test"] if fine else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    rows = [40, 10] if fine else [6] * 5 + [10]
    start = 0
    for name, n in zip(names, rows, strict=True):
        ids = np.arange(start, start + n) + (100 if name.startswith("test") else 0)
        start += n
        labels = ids % classes
        batch = {b"data": _images(ids, labels, 3, 32).reshape(n, 3072), key: labels.tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, ids in (("train", np.arange(30)), ("t10k", np.arange(100, 110))):
        labels = ids % 10
        images = _images(ids, labels, 1, 28)[:, 0]
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 2051, prefix == "train")
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, 2049, False)


def _assert_labels_follow_images(data: Dataset, id_channel: int) -> None:
    """Labels stay with their images and test examples come from the test file."""
    splits = (data.train, data.val, data.test)
    label_pixel = torch.cat([s.x[:, 0, 1, 1] for s in splits])
    labels = torch.cat([s.y for s in splits])
    for label in labels.unique():
        assert label_pixel[labels == label].unique().numel() == 1
    assert label_pixel.unique().numel() == labels.unique().numel()
    ids = [s.x[:, id_channel, 0, 0] for s in splits]
    assert torch.cat(ids).unique().numel() == len(torch.cat(ids))
    assert ids[2].min() > torch.cat(ids[:2]).max()


@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_python_batches_load(tmp_path: Path, point_at: str) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py", fine=False)
    root = tmp_path / "cifar-10-batches-py" if point_at == "folder" else tmp_path
    data = load_dataset("cifar10", seed=0, root=root)
    assert data.input_shape == (3, 32, 32)
    assert data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 10)
    _assert_well_formed(data)
    _assert_disjoint(data)
    _assert_labels_follow_images(data, id_channel=1)


def test_cifar100_fine_labels_load(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-100-python", fine=True)
    data = load_dataset("cifar100", seed=1, root=str(tmp_path))
    assert data.input_shape == (3, 32, 32)
    assert data.num_classes == 100
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 10)
    _assert_disjoint(data)
    _assert_labels_follow_images(data, id_channel=1)


@pytest.mark.parametrize("layout", ["", "MNIST/raw"])
def test_mnist_idx_files_load_plain_or_gzipped(tmp_path: Path, layout: str) -> None:
    _write_mnist(tmp_path / layout)
    data = load_dataset("mnist", seed=0, root=tmp_path)
    assert data.input_shape == (1, 28, 28)
    assert data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (28, 2, 10)
    _assert_well_formed(data)
    _assert_disjoint(data)
    _assert_labels_follow_images(data, id_channel=0)


def test_file_dataset_size_subsamples_both_pools(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    data = load_dataset("mnist", seed=2, root=tmp_path, size=20)
    assert len(data.train) + len(data.val) + len(data.test) == 20
    assert len(data.test) == 5
    _assert_labels_follow_images(data, id_channel=0)
    with pytest.raises(ConfigError, match="size must be <= 40"):
        load_dataset("mnist", root=tmp_path, size=41)


# --- errors -----------------------------------------------------------------------------


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("foo")
    message = str(info.value)
    assert "'foo'" in message
    assert "cifar10, cifar100, digits, mnist, mnist1d, mnist5k" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", ["data_batch_1", "data_batch_5", "test_batch", "cifar-10-batches-py"]),
        ("cifar100", ["train", "test", "cifar-100-python"]),
        ("mnist", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", ".gz"]),
    ],
)
def test_missing_files_name_the_directory_and_the_expected_files(
    tmp_path: Path, name: str, expected: list[str]
) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert all(part in message for part in expected)
    assert "\n" not in message
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset(name, root=tmp_path / "absent")


def test_file_dataset_without_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="root is required.*data_batch_1"):
        load_dataset("cifar10")


def test_corrupt_cifar_file_is_a_data_error(tmp_path: Path) -> None:
    _write_cifar(tmp_path, fine=False)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", root=tmp_path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    _write_cifar(tmp_path, fine=False)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DataError, match="not allowed"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_idx_file_with_a_wrong_magic_number_is_a_data_error(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes((2051).to_bytes(4, "big") + path.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number 2049"):
        load_dataset("mnist", root=tmp_path)


def test_truncated_idx_file_is_a_data_error(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="header says"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"size": 9}, "size must be an integer >= 10"),
        ({"size": 1798}, "size must be <= 1797"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_size_or_seed_is_a_config_error(kwargs: dict[str, int], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_dataset("digits", **kwargs)  # type: ignore[arg-type]
