"""The baselines every NPAS comparison needs: reduced width and HashedNets.

The third baseline, the full network, is simply the model as built.

- :func:`reduced_width` finds the largest width multiplier of a zoo architecture whose
  trainable count fits the budget.
- :func:`hashed` turns a model into a :class:`HashedNet` (Chen et al., 2015): every
  position of every shareable weight (the same set a Shapeshifter Network shares) reads
  one shared array through a fixed hash, times a hashed sign; the array's size makes
  the trainable count equal the budget exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from allocator._budget import resolve_budget
from allocator._errors import BudgetError
from allocator._layers import find_slots
from allocator._padding import ZeroRows, padding_rows
from trials.metrics import count_parameters

__all__ = ["HashedNet", "hashed", "materialize_hashed", "reduced_width"]

# Smallest width multiplier tried; the zoo rounds widths to ints of at least 1.
_MIN_WIDTH = 1e-4
_BISECT_STEPS = 40


# --- reduced width --------------------------------------------------------------------


def reduced_width(
    spec: str,
    budget: int,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    build: Callable[..., nn.Module] | None = None,
) -> float:
    """The largest width multiplier ``w`` in (0, 1] whose model fits ``budget`` params.

    Bisection over ``w`` keeps the invariant "``count(lo) <= budget < count(hi)``";
    counts are taken on models built on the ``meta`` device (no memory, no init cost).
    A budget at or above the full model gives ``1.0``; one below the narrowest model
    raises :class:`BudgetError` naming that model's count. ``build`` defaults to
    :func:`trials.zoo.build_model`.

    Example:
        >>> w = reduced_width("mlp", 5_000, input_shape=(40,), num_classes=10)
        >>> 0 < w < 1
        True
    """
    if build is None:
        from trials.zoo import build_model

        build = build_model
    builder: Callable[..., nn.Module] = build
    shape = tuple(input_shape)

    def count(width: float) -> int:
        return _count_at_width(builder, spec, width, shape, num_classes)

    if count(1.0) <= budget:
        return 1.0
    smallest = count(_MIN_WIDTH)
    if smallest > budget:
        raise BudgetError(
            f"budget must be >= {smallest} for reduced_width {spec!r} (its narrowest "
            f"model), got {budget}"
        )
    lo, hi = _MIN_WIDTH, 1.0
    for _ in range(_BISECT_STEPS):
        mid = math.sqrt(lo * hi)  # geometric: widths span orders of magnitude
        if count(mid) <= budget:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-6:
            break
    return lo


def _count_at_width(
    build: Callable[..., nn.Module],
    spec: str,
    width: float,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> int:
    kwargs: dict[str, Any] = {"input_shape": input_shape, "num_classes": num_classes}
    try:
        with torch.device("meta"):
            model = build(spec, width=width, **kwargs)
    except (RuntimeError, NotImplementedError):  # a model that cannot live on meta
        model = build(spec, width=width, **kwargs)
    return count_parameters(model)


# --- HashedNets -----------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SIGN_SALT = np.uint64(0xD6E8FEB86659FD93)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrap-around arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_positions(seed: int, layer: int, numel: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Index into a ``size``-array and sign (+1/-1) for each position of one layer.

    Deterministic in ``(seed, layer, position)``, independent of Python's ``hash()``.

    Example:
        >>> idx, sign = hash_positions(0, 0, 5, 3)
        >>> idx.tolist() == hash_positions(0, 0, 5, 3)[0].tolist(), set(sign.tolist()) <= {-1, 1}
        (True, True)
    """
    key = _mix64(np.array([seed * 2 + 1, layer + 1], dtype=np.uint64) * _GOLDEN)
    layer_key = _mix64(key[:1] ^ (key[1:] * _GOLDEN))
    positions = np.arange(numel, dtype=np.uint64)
    h = _mix64(positions * _GOLDEN + layer_key)
    index = (h % np.uint64(size)).astype(np.int64)
    sign = 1 - 2 * (_mix64(h ^ _SIGN_SALT) >> np.uint64(63)).astype(np.int8)
    return index, sign


class _HashedWeight(nn.Module):
    """Parametrization: ``weight = shared[index] * sign``, reshaped to the layer's shape.

    The shared array belongs to the :class:`HashedNet`; this module reaches it through a
    plain (unregistered) reference to its owner, so it is counted and saved once.
    """

    index: torch.Tensor
    sign: torch.Tensor

    def __init__(
        self, owner: HashedNet, index: np.ndarray, sign: np.ndarray, shape: tuple[int, ...]
    ):
        super().__init__()
        self.__dict__["_owner"] = owner  # not a submodule: the HashedNet owns the array
        self.shape = shape
        device = owner.shared.device
        self.register_buffer("index", torch.from_numpy(index).to(device), persistent=False)
        sign_t = torch.from_numpy(sign).to(device=device, dtype=owner.shared.dtype)
        self.register_buffer("sign", sign_t, persistent=False)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        shared: torch.Tensor = self.__dict__["_owner"].shared
        # index_select: its backward (index_add_) is several times faster on CPU than
        # that of indexing with a tensor (index_put_ with accumulation)
        return (shared.index_select(0, self.index) * self.sign).view(self.shape)


class HashedNet(nn.Module):
    """A model whose shareable weights all read one shared array through a hash.

    ``self.model`` is the user's model (same classes, same forward) with each shareable
    weight parametrized; ``self.shared`` is the only trainable weight storage. Built by
    :func:`hashed`.

    Example:
        >>> net = hashed(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)), 30)
        >>> count_parameters(net), net(torch.zeros(1, 8)).shape
        (30, torch.Size([1, 2]))
    """

    def __init__(self, model: nn.Module, shared: torch.Tensor):
        super().__init__()
        self.model = model
        self.shared = nn.Parameter(shared)
        #: Qualified names of the hashed weights, one tuple per weight (tied: several).
        self.hashed_weights: list[tuple[str, ...]] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Each hashed weight is gathered once per call, however often it is read.
        with parametrize.cached():
            return self.model(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # RNNs cache their last computed (non-leaf) weights, which cannot be copied or
        # pickled; recompute the caches without autograd first (forward refreshes them).
        with torch.no_grad():
            for module in self.model.modules():
                if isinstance(module, nn.RNNBase):
                    module._init_flat_weights()
        return super().__getstate__()

    @property
    def by_kind(self) -> dict[str, int]:
        """Trainable parameters by kind: the hashed array and everything unshared."""
        total = count_parameters(self)
        return {"hashed": self.shared.numel(), "unshared": total - self.shared.numel()}


def hashed(model: nn.Module, budget: int | float, *, seed: int = 0) -> HashedNet:
    """Wrap ``model`` (modified in place) as a :class:`HashedNet` of exactly ``budget`` params.

    ``budget`` is an int count or a float fraction of the model's trainable count. The
    shared array gets ``budget - unshared`` entries (unshared: biases, norms, every
    parameter not in a shareable weight) and is initialised from a normal distribution
    with the root mean square of the layers' own initial weights, so activations start
    at the usual scale. Hashes depend on ``seed``, the layer's index and the position.

    Example:
        >>> net = hashed(nn.Linear(10, 10), 0.5)
        >>> count_parameters(net)
        55
    """
    slots, unshared = find_slots(model)
    target = resolve_budget(budget, count_parameters(model))
    size = target - unshared
    if size < 1:
        raise BudgetError(
            f"budget must be >= {unshared + 1} for a hashed model ({unshared} unshared "
            f"parameters + 1 hashed), got {target}"
        )
    weights = [model.get_parameter(slot.name) for slot in slots]
    count = sum(w.numel() for w in weights)
    square_sum = sum(float(w.detach().float().pow(2).sum()) for w in weights)
    std = math.sqrt(square_sum / count) if count else 1.0
    like = weights[0] if weights else torch.empty(0)
    generator = torch.Generator().manual_seed(seed)
    init = torch.randn(size, generator=generator) * std
    net = HashedNet(model, init.to(device=like.device, dtype=like.dtype))
    rnns: list[nn.RNNBase] = []
    for layer, slot in enumerate(slots):
        index, sign = hash_positions(seed, layer, slot.numel, size)
        fn = _HashedWeight(net, index, sign, slot.shape)
        owners = [model.get_submodule(owner.rpartition(".")[0]) for owner in slot.owners]
        pad = padding_rows(owners)  # an embedding's padding row stays zero, as in an SSN
        for owner, module in zip(slot.owners, owners, strict=True):
            pname = owner.rpartition(".")[2]
            _parametrize(module, pname, fn)
            if pad:
                zero = ZeroRows(pad, device=like.device)
                parametrize.register_parametrization(module, pname, zero, unsafe=True)
            if isinstance(module, nn.RNNBase) and module not in rnns:
                rnns.append(module)
        net.hashed_weights.append(slot.owners)
    for rnn in rnns:  # drop the cached dense weights, see them through the hash
        rnn._init_flat_weights()
    return net


def _parametrize(module: nn.Module, name: str, fn: nn.Module) -> None:
    """Replace ``module.<name>`` by ``fn``'s output; the dense weight stops existing."""
    weight = module._parameters.pop(name)
    assert weight is not None
    # An empty buffer becomes parametrize's ``original``: nothing dense stays trainable.
    module.register_buffer(name, weight.new_empty(0))
    parametrize.register_parametrization(module, name, fn, unsafe=True)
    if isinstance(module, nn.RNNBase) and not hasattr(module, "_update_flat_weights"):
        # torch before 2.1 caches RNN weights in _flat_weights; refresh them every call.
        module.register_forward_pre_hook(_refresh_flat_weights)


def _refresh_flat_weights(module: nn.Module, args: Any) -> None:
    module._init_flat_weights()  # type: ignore[operator]


def materialize_hashed(net: HashedNet) -> nn.Module:
    """A plain copy of the wrapped model with every hashed weight computed once.

    The result has the original classes, ordinary ``Parameter`` weights (tied weights
    stay tied), and a ``state_dict`` that loads into a freshly built model.

    Example:
        >>> net = hashed(nn.Linear(4, 3), 10)
        >>> plain = materialize_hashed(net)
        >>> torch.equal(plain(torch.ones(1, 4)), net(torch.ones(1, 4)))
        True
    """
    # parametrize's injected classes are shared by deep copies, so undo the
    # parametrization by hand on the copy (remove_parametrizations would edit the class
    # and break ``net``).
    copied = copy.deepcopy(net)
    model = copied.model
    dense: dict[str, nn.Parameter] = {}
    for owners in copied.hashed_weights:
        first, _, first_name = owners[0].rpartition(".")
        with torch.no_grad():
            weight = getattr(model.get_submodule(first), first_name).detach().clone()
        dense.update(dict.fromkeys(owners, nn.Parameter(weight)))  # tied stay tied
    by_module: dict[str, dict[str, nn.Parameter]] = {}
    for owner, weight in dense.items():
        module_name, _, pname = owner.rpartition(".")
        by_module.setdefault(module_name, {})[pname] = weight
    for module_name, weights in by_module.items():
        module = model.get_submodule(module_name)
        parametrizations = module._modules.pop("parametrizations")
        if set(parametrizations._modules) != set(weights):  # type: ignore[union-attr]
            raise NotImplementedError(
                f"{module_name or 'the model'} has parametrizations besides the hashed weights"
            )
        module.__class__ = module.__class__.__bases__[0]
        for pname, weight in weights.items():
            module.register_parameter(pname, weight)
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _refresh_flat_weights:
                del module._forward_pre_hooks[key]
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()
    return model
