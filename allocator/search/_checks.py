"""Checks of a search against the trial code, before anything is written.

The search's trial config must be one ``trials`` accepts (fields, model spec, dataset),
every text field must fit its column of ``npas_results`` (on every database), the model
must fit this machine's memory (counted on PyTorch's ``meta`` device, nothing
allocated), and the space must fit the model: no more groups than the model has
shareable layers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from allocator._errors import ConfigError
from search_spaces import SearchSpace

__all__ = [
    "available_memory", "check_model_memory", "check_options", "check_trial_config",
    "fit_to_model",
]

logger = logging.getLogger(__name__)

#: Bytes one trained parameter costs: float32 weight, gradient and two optimizer moments.
BYTES_PER_PARAM = 16


def check_options(space: SearchSpace, options: Mapping[str, Any]) -> None:
    """:class:`ConfigError` for a trial option the space searches or fixes (the space's
    value would silently win)."""
    for key in options:
        if key in space.names:
            raise ConfigError(
                f"trial option {key!r} is searched by space {space.name!r}; drop --set "
                f"{key}=..., or use a space file that fixes it (fixed.{key}) or searches "
                "another range"
            )
        if key in space.fixed:
            raise ConfigError(
                f"trial option {key!r} is fixed to {space.fixed[key]!r} by space "
                f"{space.name!r}; drop --set {key}=..., or use a space file that fixes "
                "another value"
            )


def check_trial_config(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` unless ``trials`` accepts ``config`` (fields, model, data) and
    every text field fits its column of ``npas_results``; a user's model, data and trial
    function are imported, called once and given a batch (``trials.checks.check_config``)."""
    from allocator.search._table import CONFIG_COLUMNS
    from trials.checks import check_config

    for name, kind in CONFIG_COLUMNS.items():
        value, length = config.get(name), getattr(kind, "length", None)
        if length and isinstance(value, str) and len(value) > length:
            raise ConfigError(
                f"{name} {value[:40]!r}... is {len(value)} characters long; the study store "
                f"holds at most {length}"
            )
    check_config(config)


def space_methods(space: SearchSpace) -> set[str]:
    """The parameter methods trials of ``space`` can have."""
    if "method" in space.fixed:
        return {str(space.fixed["method"])}
    if "method" in space.names:
        return {str(v) for v in space.dimension("method").grid_values()}
    return {"ssn"}


def fit_to_model(space: SearchSpace, base: Mapping[str, Any]) -> SearchSpace:
    """Check a user's model against every method the space has, check that a zoo model
    fits in memory, and cap ``groups`` at the model's count of shareable layers.

    More groups than layers leaves a group empty, which no mapping allows; the capped
    space is what the study records. Loads the dataset (for the input shape), so a
    dataset that cannot be read fails here, before the study exists.
    """
    from trials.user import is_import_path

    example = {**base, **space.to_config(space.example())}
    user_model = is_import_path(str(base["model"]))
    if user_model:
        from trials.checks import check_config

        check_config(example, methods=space_methods(space))
    import allocator
    from trials.config import TrialConfig
    from trials.user import model_source
    from trials.user_data import load_data

    data = load_data(base)
    shape = tuple(data.input_shape)
    if not user_model:
        check_model_memory(str(base["model"]), shape, data.num_classes,
                           int(base.get("batch_size") or 128))
    if "groups" not in space.names and "groups" not in space.fixed:
        return space
    cfg = TrialConfig.from_dict(example)
    model = model_source(str(base["model"]), input_shape=shape,
                         num_classes=data.num_classes, hp=cfg.hp,
                         has_trial=cfg.trial is not None)()
    layers = len(allocator.find_slots(model)[0])
    capped = space.capped("groups", layers)
    if capped is not space:
        logger.info("groups capped at %d: %s has %d shareable layers", layers, base["model"],
                       layers)
    return capped


def available_memory() -> int:
    """Bytes of memory this machine can still give (``MemAvailable``, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_model_memory(
    spec: str, input_shape: tuple[int, ...], num_classes: int, batch_size: int = 1
) -> int:
    """:class:`ConfigError` unless model ``spec`` can be trained in this machine's memory:
    its parameters (16 bytes each: weight, gradient, optimizer state) and one batch of
    inputs. Counted on the ``meta`` device, so nothing is allocated. Returns the count.

    Example:
        >>> check_model_memory("mlp-1x8", (40,), 10)
        418
    """
    import math

    import torch

    from trials.zoo import build_model

    inputs = math.prod(input_shape) * max(1, batch_size) * 4
    try:
        with torch.device("meta"):
            model = build_model(spec, input_shape=input_shape, num_classes=num_classes)
    except (RuntimeError, ValueError, OverflowError, MemoryError) as exc:
        raise ConfigError(f"model {spec!r} cannot be built for inputs {input_shape}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    params = sum(p.numel() for p in model.parameters())
    need, have = params * BYTES_PER_PARAM + inputs, available_memory()
    if need > have:
        raise ConfigError(
            f"model {spec!r} with inputs {input_shape} has {params:,} parameters and needs "
            f"about {need / 2**30:,.1f} GiB to train (16 bytes a parameter, plus a batch of "
            f"inputs); this machine has {have / 2**30:,.1f} GiB available"
        )
    return params
