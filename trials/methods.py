"""The parameter methods, in one registry: how each is applied, reloaded and deployed.

A method turns a model (built by a :class:`trials.user.ModelSource`, from the zoo or a
user's factory) into the module a trial trains: ``full`` keeps it, ``reduced_width``
rebuilds it at the largest width that fits the budget, ``ssn`` wraps it with
``allocator.shapeshift``, ``hashed`` makes a HashedNet. The trial runner, ``npas train``
and ``npas export`` all go through :func:`build`, :func:`rebuild` and :func:`deploy`;
none chooses a method by itself.

Example:
    >>> from trials.config import TrialConfig
    >>> from trials.user import model_source
    >>> source = model_source("mlp-1x32", input_shape=(40,), num_classes=10)
    >>> model, info = build(source, TrialConfig(model="mlp-1x32", method="hashed", budget=500))
    >>> info["budget"]
    500
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import allocator
from allocator._budget import resolve_budget
from allocator._errors import BudgetError, CheckpointError, ConfigError
from allocator._vocab import METHODS
from trials.baselines import HashedNet, hashed, materialize_hashed, reduced_width
from trials.config import TrialConfig
from trials.metrics import count_parameters
from trials.user import ModelSource

__all__ = ["REGISTRY", "Method", "build", "deploy", "rebuild"]

Pretrain = Callable[[nn.Module], None]


@dataclass(frozen=True)
class Method:
    """One parameter method.

    ``architecture(source, cfg)`` builds the plain network the method trains (its FLOPs
    are the deployed model's) and what it chose; ``wrap(model, cfg, pretrain)`` puts the
    method's parametrization on it; ``load(model, stream, cfg)`` puts kept weights into
    a freshly built architecture.
    """

    name: str
    architecture: Callable[[ModelSource, TrialConfig], tuple[nn.Module, dict[str, Any]]]
    wrap: Callable[[nn.Module, TrialConfig, Pretrain | None], tuple[nn.Module, dict[str, Any]]]
    load: Callable[[nn.Module, io.BytesIO, TrialConfig], nn.Module]


def _as_built(source: ModelSource, cfg: TrialConfig) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    return source(), {}


def _narrowed(source: ModelSource, cfg: TrialConfig) -> tuple[nn.Module, dict[str, Any]]:
    full = source.width
    if full is None:
        raise ConfigError(
            f"method reduced_width needs a model with a width: --model {source.name} has no "
            "`width` argument with a number (default or searched); use full, ssn or hashed"
        )
    torch.manual_seed(cfg.seed)
    budget = resolve_budget(cfg.budget, count_parameters(source()))
    if isinstance(full, int):
        width: int | float = _largest_int_width(source, full, budget)
    else:
        multiplier = reduced_width(source.name, budget, input_shape=(), num_classes=0,
                                   build=lambda _spec, width, **_: source(full * width))
        width = full * multiplier
    torch.manual_seed(cfg.seed)
    return source(width), {"width": width, "budget": budget}


def _largest_int_width(source: ModelSource, full: int, budget: int) -> int:
    """The largest integer width in ``1..full`` whose model fits ``budget``."""
    def count(w: int) -> int:
        try:
            with torch.device("meta"):
                return count_parameters(source(w))
        except (RuntimeError, NotImplementedError):
            return count_parameters(source(w))

    if count(1) > budget:
        raise BudgetError(
            f"budget must be >= {count(1)} for reduced_width {source.name!r} (its narrowest "
            f"model, width 1), got {budget}"
        )
    lo, hi = 1, full
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid - 1)
    return lo


def _unchanged(model: nn.Module, cfg: TrialConfig, pretrain: Pretrain | None) -> tuple[nn.Module, dict[str, Any]]:
    return model, {}


def _shapeshifted(model: nn.Module, cfg: TrialConfig, pretrain: Pretrain | None) -> tuple[nn.Module, dict[str, Any]]:
    ssn = allocator.shapeshift(
        model, cfg.budget, groups=cfg.groups, templates=cfg.templates,
        downsample=cfg.downsample, upsample=cfg.upsample, mapping=cfg.mapping,
        manual_map=cfg.manual_map, pretrain=pretrain if cfg.mapping == "learned" else None,
        seed=cfg.seed, inplace=True,
    )
    # the generator the default (downsample None) chose for this budget, beside the budget
    return ssn, {"budget": ssn.allocation().budget, "downsample": ssn.plan.options["downsample"]}


def _hashed(model: nn.Module, cfg: TrialConfig, pretrain: Pretrain | None) -> tuple[nn.Module, dict[str, Any]]:
    net = hashed(model, cfg.budget, seed=cfg.seed)
    return net, {"hashed_size": net.shared.numel(), "budget": count_parameters(net)}


def _load_state(model: nn.Module, stream: io.BytesIO, cfg: TrialConfig) -> nn.Module:
    where = getattr(stream, "name", "(kept weights)")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            saved = torch.load(stream, weights_only=True)
        state = saved["state_dict"]
    except Exception as exc:
        raise CheckpointError(
            f"{where} is not an npas module checkpoint (a dictionary with a state_dict of "
            f"tensors, read with weights_only=True): {_first(exc)}"
        ) from None
    if cfg.method == "hashed":
        model = hashed(model, cfg.budget, seed=cfg.seed)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(f"{where} does not fit the trial's model: {_first(exc)}") from None
    return model


def _load_ssn(model: nn.Module, stream: io.BytesIO, cfg: TrialConfig) -> nn.Module:
    return allocator.load(stream, model)


#: Every method by name; the names are ``allocator._vocab.METHODS``.
REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", _as_built, _unchanged, _load_state),
        Method("ssn", _as_built, _shapeshifted, _load_ssn),
        Method("reduced_width", _narrowed, _unchanged, _load_state),
        Method("hashed", _as_built, _hashed, _load_state),
    )
}
assert tuple(REGISTRY) == METHODS


def build(
    source: ModelSource,
    cfg: TrialConfig,
    *,
    example: Any = None,
    pretrain: Pretrain | None = None,
    strict: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The module a trial trains under ``cfg.method``, and what the method chose.

    With ``example`` (one input batch) ``info["flops"]`` holds the inference FLOPs of
    the plain architecture, which an SSN or a HashedNet computes exactly once deployed;
    with ``strict=False`` a model that cannot take ``example`` gets ``None``.
    """
    method = REGISTRY[cfg.method]
    model, info = method.architecture(source, cfg)
    if example is not None:
        from trials.metrics import inference_flops

        try:
            info["flops"] = inference_flops(model, example)
        except Exception:
            if strict:
                raise
            info["flops"] = None
    model, more = method.wrap(model, cfg, pretrain)
    return model, {**info, **more}


def rebuild(source: ModelSource, cfg: TrialConfig, info: dict[str, Any], data: bytes,
            where: str = "(kept weights)") -> nn.Module:
    """The trained module from kept weights: the architecture the trial trained (at its
    recorded width), the method's structure, the weights loaded."""
    width = info.get("width") if cfg.method == "reduced_width" else None
    model = source(width)
    stream = io.BytesIO(data)
    stream.name = where  # named in error messages
    return REGISTRY[cfg.method].load(model, stream, cfg)


def deploy(module: nn.Module) -> nn.Module:
    """The deployable plain module: an SSN or a HashedNet materialised, anything else as is.

    Example:
        >>> type(deploy(hashed(nn.Linear(4, 3), 10))).__name__
        'Linear'
    """
    if isinstance(module, allocator.SSN):
        return allocator.materialize(module)
    if isinstance(module, HashedNet):
        return materialize_hashed(module)
    return module


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
