"""A zoo of plain PyTorch classifiers named by short spec strings.

Nothing here shares parameters: these are the models a Shapeshifter Network is wrapped
around, and the full-size baselines it is compared with. Every model's ``forward`` takes
one tensor ``(batch, *input_shape)`` and returns logits ``(batch, num_classes)``.

=====================  ==========================================================
spec                   model
=====================  ==========================================================
``mlp[-LxH]``          L hidden layers of H units, ReLU (default ``mlp-3x256``)
``cnn1d``              the MNIST-1D paper's CNN (Greydanus 2020, ``ConvBase``)
``resnet1d[-BxC]``     B residual blocks of C channels, 1-D (default ``resnet1d-8x32``)
``resnet-D``           CIFAR ResNet, D = 6n+2 (He et al. 2016; default ``resnet-20``)
``wrn-D-K``            Wide ResNet, D = 6n+4, widen factor K (default ``wrn-16-4``)
``transformer[-LxD]``  L encoder layers of width D (default ``transformer-4x128``)
``lstm[-LxH]``         L LSTM layers of H units (default ``lstm-2x128``)
=====================  ==========================================================

``build_model(..., width=w)`` multiplies every channel and hidden width by ``w``, so a
reduced-width baseline can shrink any model continuously.

>>> from trials.zoo import build_model
>>> model = build_model("cnn1d", input_shape=(1, 40), num_classes=10)
>>> sum(p.numel() for p in model.parameters())
5210
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from allocator._errors import ConfigError

__all__ = ["MODELS", "ModelSpec", "build_model", "parse_spec"]

#: Model family names; each is also a valid spec with its default numbers.
MODELS: tuple[str, ...] = ("cnn1d", "lstm", "mlp", "resnet", "resnet1d", "transformer", "wrn")

_FORMS = (
    "mlp[-LxH], cnn1d, resnet1d[-BxC], resnet[-D] with D = 6n+2, wrn[-D-K] with D = 6n+4, "
    "transformer[-LxD], lstm[-LxH] (all numbers >= 1)"
)
_PATTERN = re.compile(
    r"(?P<family>mlp|cnn1d|resnet1d|resnet|wrn|transformer|lstm)"
    r"(?:-(?P<a>\d+)(?P<sep>[x-])(?P<b>\d+)|-(?P<depth>\d+))?"
)
# family: (separator of its two numbers, or None for one or none, default depth, size)
_FAMILIES: dict[str, tuple[str | None, int, int]] = {
    "mlp": ("x", 3, 256),
    "cnn1d": (None, 3, 25),
    "resnet1d": ("x", 8, 32),
    "resnet": (None, 20, 16),
    "wrn": ("-", 16, 4),
    "transformer": ("x", 4, 128),
    "lstm": ("x", 2, 128),
}

# Input ranks each family accepts; empty: any.
_RANKS: dict[str, tuple[int, ...]] = {
    "mlp": (),
    "cnn1d": (1, 2, 3),
    "resnet1d": (1, 2, 3),
    "resnet": (3,),
    "wrn": (3,),
    "transformer": (1, 2, 3),
    "lstm": (1, 2, 3),
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: the family and its two numbers, defaults filled in.

    ``depth`` is the number of hidden layers (mlp), blocks (resnet1d), layers
    (transformer, lstm) or the total depth (resnet, wrn; 3 for cnn1d). ``size`` is the
    hidden units, channels or ``d_model``; the widen factor K for wrn; the first-stage
    width (16) for resnet and the channel count (25) for cnn1d. ``str(spec)`` is the
    canonical spec string.

    >>> str(parse_spec("wrn")), parse_spec("mlp-2x64").size
    ('wrn-16-4', 64)
    """

    family: str
    depth: int
    size: int

    def __str__(self) -> str:
        if self.family == "cnn1d":
            return "cnn1d"
        if self.family == "resnet":
            return f"resnet-{self.depth}"
        if self.family == "wrn":
            return f"wrn-{self.depth}-{self.size}"
        return f"{self.family}-{self.depth}x{self.size}"


def parse_spec(spec: str) -> ModelSpec:
    """Parse a spec string such as ``"mlp-3x256"``, ``"resnet-56"`` or ``"wrn-16-4"``.

    Raises :class:`ConfigError` naming the spec and the allowed forms when it is invalid.

    >>> parse_spec("resnet-56")
    ModelSpec(family='resnet', depth=56, size=16)
    """
    match = _PATTERN.fullmatch(spec.strip().lower()) if isinstance(spec, str) else None
    if match is None:
        raise ConfigError(f"unknown model spec {spec!r}; allowed forms: {_FORMS}")
    family = match["family"]
    sep, depth, size = _FAMILIES[family]
    if match["depth"] is not None:
        if family != "resnet":
            raise ConfigError(f"unknown model spec {spec!r}; allowed forms: {_FORMS}")
        depth = int(match["depth"])
    elif match["a"] is not None:
        if match["sep"] != sep:
            raise ConfigError(f"unknown model spec {spec!r}; allowed forms: {_FORMS}")
        depth, size = int(match["a"]), int(match["b"])
    if depth < 1 or size < 1:
        raise ConfigError(f"invalid model spec {spec!r}: numbers must be >= 1; forms: {_FORMS}")
    if family == "resnet" and (depth < 8 or (depth - 2) % 6):
        raise ConfigError(
            f"invalid model spec {spec!r}: resnet depth must be 6n+2 (8, 14, 20, 32, 56, ...), "
            f"got {depth}"
        )
    if family == "wrn" and (depth < 10 or (depth - 4) % 6):
        raise ConfigError(
            f"invalid model spec {spec!r}: wrn depth must be 6n+4 (10, 16, 22, 28, 40, ...), "
            f"got {depth}"
        )
    if family == "transformer" and size % _heads(size):
        raise ConfigError(
            f"invalid model spec {spec!r}: d_model must be divisible by its head count "
            f"d_model // 32 = {_heads(size)}, got {size}"
        )
    return ModelSpec(family, depth, size)


def build_model(
    spec: str, *, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0
) -> nn.Module:
    """Build the model ``spec`` for inputs of ``input_shape`` (no batch dimension).

    ``width`` multiplies every channel and hidden width (rounded, at least 1); depth is
    unchanged. 1-D families (``cnn1d``, ``resnet1d``) take ``(C, L)`` or ``(L,)``, and
    read an image ``(C, H, W)`` row by row as ``(C, H * W)``;
    image families (``resnet``, ``wrn``) take ``(C, H, W)`` of any size; ``mlp`` takes
    anything; ``transformer`` and ``lstm`` read ``(C, L)`` as L positions of C features
    and ``(C, H, W)`` as H positions (rows) of C*W features.

    >>> import torch
    >>> model = build_model("resnet-20", input_shape=(3, 32, 32), num_classes=10, width=0.5)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    parsed = parse_spec(spec)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width < math.inf:
        raise ConfigError(f"width must be a finite number > 0, got {width!r}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ConfigError(
            f"input_shape must be a non-empty tuple of ints >= 1, got {input_shape!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    family, depth = parsed.family, parsed.depth
    allowed = _RANKS[family]
    if allowed and len(shape) not in allowed:
        forms = {1: "(L,)", 2: "(C, L)", 3: "(C, H, W)"}
        raise ConfigError(
            f"model {spec!r} needs input_shape {' or '.join(forms[r] for r in allowed)}, "
            f"got {shape}"
        )

    def scaled(n: int) -> int:
        return max(1, math.floor(n * width + 0.5))

    if family == "mlp":
        return MLP(math.prod(shape), scaled(parsed.size), depth, num_classes)
    if family == "cnn1d":
        return ConvBase1d(_as_1d(shape), scaled(parsed.size), num_classes)
    if family == "resnet1d":
        return ResNet1d(_as_1d(shape)[0], scaled(parsed.size), depth, num_classes)
    if family == "resnet":
        return CifarResNet(
            shape[0], [scaled(w) for w in (16, 32, 64)], (depth - 2) // 6, num_classes
        )
    if family == "wrn":
        k = parsed.size
        widths = [scaled(w) for w in (16, 16 * k, 32 * k, 64 * k)]
        return WideResNet(shape[0], widths, (depth - 4) // 6, num_classes)
    positions, features = _sequence_shape(shape)
    if family == "transformer":
        d_model = scaled(parsed.size)
        heads = _heads(d_model)
        d_model -= d_model % heads  # keeps d_model // 32 == heads
        return TransformerClassifier(positions, features, d_model, heads, depth, num_classes)
    return LSTMClassifier(features, scaled(parsed.size), depth, num_classes)


def _heads(d_model: int) -> int:
    return max(1, d_model // 32)


def _as_1d(shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, length): an image ``(C, H, W)`` is read row by row, ``(C, H * W)``."""
    return (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))


def _sequence_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(positions, features per position) of the sequence view of an input."""
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return shape[1], shape[0]
    return shape[1], shape[0] * shape[2]


def _to_sequence(x: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` / ``(B, C, L)`` / ``(B, C, H, W)`` to ``(B, positions, features)``."""
    if x.dim() == 2:
        return x.unsqueeze(-1)
    if x.dim() == 3:
        return x.transpose(1, 2)
    return x.permute(0, 2, 1, 3).flatten(2)


class MLP(nn.Module):
    """Flatten, then ``layers`` hidden ``Linear`` + ReLU of ``hidden`` units, then a head."""

    def __init__(self, in_features: int, hidden: int, layers: int, num_classes: int) -> None:
        super().__init__()
        body: list[nn.Module] = [nn.Flatten()]
        for i in range(layers):
            body += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ConvBase1d(nn.Module):
    """The MNIST-1D CNN (``ConvBase`` in github.com/greydanus/mnist1d): three ReLU
    ``Conv1d`` of ``channels`` (kernels 5, 3, 3; stride 2; padding 1), then a linear
    head on the flattened features (25 x 5 = 125 for length 40: 5,210 parameters)."""

    def __init__(self, shape: tuple[int, int], channels: int, num_classes: int) -> None:
        super().__init__()
        in_channels, length = shape
        self.conv1 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        for kernel in (5, 3, 3):
            length = (length + 2 - kernel) // 2 + 1
        if length < 1:
            raise ConfigError(f"model 'cnn1d' needs inputs of length >= 3, got {shape[1]}")
        self.linear = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], self.conv1.in_channels, -1)
        for conv in (self.conv1, self.conv2, self.conv3):
            h = torch.relu(conv(h))
        return self.linear(h.flatten(1))


class _Block1d(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU; shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResNet1d(nn.Module):
    """A residual 1-D CNN: a conv stem, ``blocks`` identical residual blocks of
    ``channels`` (two kernel-3 convs each, so 2 x ``blocks`` same-shape ``Conv1d``),
    global average pooling and a linear head."""

    def __init__(self, in_channels: int, channels: int, blocks: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*(_Block1d(channels) for _ in range(blocks)))
        self.head = nn.Linear(channels, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x.reshape(x.shape[0], self.in_channels, -1)))
        return self.head(h.mean(dim=-1))


class _BasicBlock(nn.Module):
    """CIFAR ResNet block; option-A shortcut (subsample, zero-pad channels; no weights)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.pad = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = nn.functional.pad(
                shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)
            )
        return torch.relu(h + shortcut)


class CifarResNet(nn.Module):
    """ResNet for CIFAR (He et al. 2016, sec. 4.2): depth 6n+2, three stages of n basic
    blocks with widths 16/32/64 (stride 2 between stages), option-A shortcuts (strided
    identity, zero-padded channels: parameter-free, as in the paper's CIFAR runs),
    adaptive average pooling, linear head; Kaiming-normal init. ResNet-20 has 0.27M
    parameters on CIFAR-10."""

    def __init__(self, in_channels: int, widths: list[int], n: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        previous = widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                blocks.append(_BasicBlock(previous, w, 2 if stage > 0 and i == 0 else 1))
                previous = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


class _WideBlock(nn.Module):
    """Pre-activation WRN block: BN-ReLU-conv3x3-BN-ReLU-conv3x3; a 1x1 conv on the
    activated input is the shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        h = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        return h + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko & Komodakis 2016): WRN-D-K has depth D = 6n+4, a 3x3 stem
    of 16 channels and three stages of n pre-activation blocks of 16K, 32K, 64K channels
    (stride 2 between stages), 1x1 conv shortcuts when the shape changes, BN-ReLU,
    adaptive average pooling and a linear head; no dropout; Kaiming-normal init as in
    the paper's code. WRN-16-4 has 2.75M parameters on CIFAR-10."""

    def __init__(self, in_channels: int, widths: list[int], n: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        previous = widths[0]
        for stage, w in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(_WideBlock(previous, w, 2 if stage > 0 and i == 0 else 1))
                previous = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(previous)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(previous, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(self.pool(h).flatten(1))


class TransformerClassifier(nn.Module):
    """A pre-norm Transformer encoder over the sequence view of the input: a linear
    embedding to ``d_model``, a learned positional embedding, ``layers`` encoder layers
    (``heads`` heads, feed-forward 2 x ``d_model``, no dropout), mean pooling, a head."""

    def __init__(
        self, positions: int, features: int, d_model: int, heads: int, layers: int, num_classes: int
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        self.position = nn.Parameter(torch.randn(1, positions, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(_to_sequence(x)) + self.position)
        return self.head(h.mean(dim=1))


class LSTMClassifier(nn.Module):
    """``layers`` stacked LSTM layers over the sequence view of the input; the last
    layer's final hidden state feeds a linear head."""

    def __init__(self, features: int, hidden: int, layers: int, num_classes: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(_to_sequence(x))
        return self.head(h[-1])


def _kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions, unit BatchNorm, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
