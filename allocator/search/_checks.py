"""Checks of a search against the trial code, before anything is written.

The search's trial config must be one ``trials`` accepts (fields, model spec, dataset),
and the space must fit the model: no more groups than the model has shareable layers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from allocator._errors import ConfigError
from search_spaces import SearchSpace

__all__ = ["check_options", "check_trial_config", "fit_to_model"]

logger = logging.getLogger(__name__)


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
    """:class:`ConfigError` unless ``trials`` accepts ``config`` (fields, model, data)."""
    from trials.config import TrialConfig
    from trials.data import DATASETS
    from trials.zoo import parse_spec

    TrialConfig.from_dict(dict(config))
    parse_spec(str(config["model"]))
    if config["data"] not in DATASETS:
        raise ConfigError(f"data must be one of {', '.join(DATASETS)}, got {config['data']!r}")


def fit_to_model(space: SearchSpace, base: Mapping[str, Any]) -> SearchSpace:
    """Cap ``groups`` at the model's count of shareable layers.

    More groups than layers leaves a group empty, which no mapping allows; the capped
    space is what the study records. Loads the dataset (for the input shape), so a
    dataset that cannot be read fails here, before the study exists.
    """
    if "groups" not in space.names and "groups" not in space.fixed:
        return space
    import allocator
    from trials.data import load_dataset
    from trials.zoo import build_model

    data = load_dataset(
        base["data"], seed=base.get("seed", 0), root=base.get("data_root"),
        size=base.get("data_size"),
    )
    model = build_model(
        base["model"], input_shape=tuple(data.input_shape), num_classes=data.num_classes
    )
    layers = len(allocator.find_slots(model)[0])
    capped = space.capped("groups", layers)
    if capped is not space:
        logger.info("groups capped at %d: %s has %d shareable layers", layers, base["model"],
                       layers)
    return capped
