"""Tests for trials.zoo: every family builds, runs forward and backward, and counts right."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from allocator._errors import ConfigError
from trials.zoo import MODELS, ModelSpec, build_model, parse_spec

SEQUENCE_FAMILIES = ("mlp", "cnn1d", "resnet1d", "transformer", "lstm")
IMAGE_SPECS = ("resnet-20", "wrn-16-4", "mlp", "transformer", "lstm")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cifar_count(spec: str, width: float = 1.0) -> int:
    return _count(build_model(spec, input_shape=(3, 32, 32), num_classes=10, width=width))


def _mnist1d_count(spec: str, width: float | None = None) -> int:
    if width is None:  # the default, as a caller who never mentions width gets it
        return _count(build_model(spec, input_shape=(1, 40), num_classes=10))
    return _count(build_model(spec, input_shape=(1, 40), num_classes=10, width=width))


def _forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    logits = model(x)
    assert logits.shape == (len(x), num_classes)
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_model_families_are_the_documented_seven() -> None:
    assert set(MODELS) == {"mlp", "cnn1d", "resnet1d", "resnet", "wrn", "transformer", "lstm"}


@pytest.mark.parametrize("spec", SEQUENCE_FAMILIES)
def test_sequence_families_train_on_mnist1d_shape(spec: str) -> None:
    torch.manual_seed(0)
    model = build_model(spec, input_shape=(1, 40), num_classes=10)
    _forward_backward(model, torch.randn(4, 1, 40), 10)


@pytest.mark.parametrize("spec", IMAGE_SPECS)
def test_image_inputs_train_on_cifar_shape(spec: str) -> None:
    torch.manual_seed(0)
    model = build_model(spec, input_shape=(3, 32, 32), num_classes=10)
    batch = 2 if spec.startswith("wrn") else 4
    _forward_backward(model, torch.randn(batch, 3, 32, 32), 10)


@pytest.mark.parametrize("spec", ["resnet-20", "wrn-10-1"])
def test_image_families_accept_any_image_size(spec: str) -> None:
    model = build_model(spec, input_shape=(1, 8, 12), num_classes=3)
    _forward_backward(model, torch.randn(2, 1, 8, 12), 3)


@pytest.mark.parametrize("spec", SEQUENCE_FAMILIES)
def test_one_dimensional_inputs_without_channels_work(spec: str) -> None:
    model = build_model(spec, input_shape=(40,), num_classes=4)
    assert model(torch.randn(2, 40)).shape == (2, 4)


def test_parameter_counts_match_the_papers() -> None:
    assert 2_700_000 <= _cifar_count("wrn-16-4") <= 2_800_000
    assert 260_000 <= _cifar_count("resnet-20") <= 280_000
    assert 840_000 <= _cifar_count("resnet-56") <= 870_000
    assert _mnist1d_count("cnn1d") == 5210  # ConvBase of the MNIST-1D repository


def test_resnet1d_is_mostly_same_shape_convolutions() -> None:
    model = build_model("resnet1d", input_shape=(1, 40), num_classes=10)
    shapes = [m.weight.shape for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert shapes.count(torch.Size([32, 32, 3])) == 16
    assert 50_000 <= _count(model) <= 100_000


def test_transformer_uses_multihead_attention_with_d_model_over_32_heads() -> None:
    model = build_model("transformer", input_shape=(1, 40), num_classes=10)
    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attention) == 4
    assert all(m.embed_dim == 128 and m.num_heads == 4 for m in attention)


@pytest.mark.parametrize("width", [0.01, 0.1, 0.3, 0.55, 0.77, 1.3, 2.0])
def test_transformer_width_keeps_d_model_divisible_by_its_heads(width: float) -> None:
    model = build_model("transformer-1x128", input_shape=(2, 3), num_classes=2, width=width)
    attention = next(m for m in model.modules() if isinstance(m, nn.MultiheadAttention))
    assert attention.num_heads == max(1, attention.embed_dim // 32)
    assert attention.embed_dim % attention.num_heads == 0
    assert abs(attention.embed_dim - 128 * width) <= max(1, attention.num_heads)


@pytest.mark.parametrize("spec", ["mlp", "cnn1d", "resnet1d", "transformer", "lstm"])
def test_half_width_shrinks_and_unit_width_is_the_default(spec: str) -> None:
    default = _mnist1d_count(spec)
    assert _mnist1d_count(spec, width=1.0) == default
    assert _mnist1d_count(spec, width=0.5) < default


@pytest.mark.parametrize("spec", ["resnet-20", "wrn-16-4"])
def test_half_width_shrinks_image_families(spec: str) -> None:
    assert _cifar_count(spec, width=0.5) < _cifar_count(spec) / 3


def test_tiny_width_still_gives_at_least_one_unit() -> None:
    model = build_model("mlp-2x10", input_shape=(5,), num_classes=2, width=1e-6)
    assert model(torch.randn(3, 5)).shape == (3, 2)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mlp", ModelSpec("mlp", 3, 256)),
        ("mlp-2x64", ModelSpec("mlp", 2, 64)),
        ("cnn1d", ModelSpec("cnn1d", 3, 25)),
        ("resnet1d", ModelSpec("resnet1d", 8, 32)),
        ("resnet-56", ModelSpec("resnet", 56, 16)),
        ("resnet", ModelSpec("resnet", 20, 16)),
        ("wrn-16-4", ModelSpec("wrn", 16, 4)),
        ("WRN-28-10", ModelSpec("wrn", 28, 10)),
        ("transformer", ModelSpec("transformer", 4, 128)),
        ("lstm-1x32", ModelSpec("lstm", 1, 32)),
    ],
)
def test_parse_spec_fills_defaults_and_round_trips(spec: str, expected: ModelSpec) -> None:
    parsed = parse_spec(spec)
    assert parsed == expected
    assert parse_spec(str(parsed)) == parsed


@pytest.mark.parametrize(
    "spec",
    [
        "wrn-15-4",
        "resnet-21",
        "foo",
        "mlp-0x10",
        "wrn-16x4",
        "mlp-3",
        "cnn1d-3x25",
        "resnet-2",
        "lstm-2x0",
        "transformer-4x100",
        "",
    ],
)
def test_bad_specs_raise_config_error_naming_the_spec(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(spec, input_shape=(1, 40), num_classes=10)
    message = str(info.value)
    assert repr(spec) in message
    assert "\n" not in message


def test_unknown_spec_lists_the_allowed_forms() -> None:
    with pytest.raises(ConfigError, match=r"allowed forms: mlp\[-LxH\].*wrn\[-D-K\]"):
        parse_spec("foo")


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), float("inf")])
def test_width_must_be_positive_and_finite(width: float) -> None:
    with pytest.raises(ConfigError, match="width must be a finite number > 0"):
        build_model("mlp", input_shape=(1, 40), num_classes=10, width=width)


@pytest.mark.parametrize(
    ("spec", "shape"), [("wrn-16-4", (1, 40)), ("resnet-20", (40,)), ("cnn1d", (3, 8, 8, 8))]
)
def test_wrong_input_rank_is_a_config_error(spec: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="needs input_shape"):
        build_model(spec, input_shape=shape, num_classes=10)


def test_bad_num_classes_or_input_shape_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", input_shape=(1, 40), num_classes=0)
    with pytest.raises(ConfigError, match="input_shape"):
        build_model("mlp", input_shape=(1, 0), num_classes=10)


@pytest.mark.parametrize("spec", MODELS)
def test_every_family_builds_on_the_meta_device(spec: str) -> None:
    shape = (1, 40) if spec in ("cnn1d", "resnet1d") else (3, 32, 32)
    with torch.device("meta"):
        model = build_model(spec, input_shape=shape, num_classes=10, width=0.3)
    assert all(p.device.type == "meta" for p in model.parameters())
