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
    """:class:`ConfigError` unless ``trials`` accepts ``config`` (fields, model, data); a
    user's model, data and trial function are imported, called once and given a batch
    (``trials.checks.check_config``)."""
    from trials.checks import check_config

    check_config(config)


def space_methods(space: SearchSpace) -> set[str]:
    """The parameter methods trials of ``space`` can have."""
    if "method" in space.fixed:
        return {str(space.fixed["method"])}
    if "method" in space.names:
        return {str(v) for v in space.dimension("method").grid_values()}
    return {"ssn"}


def fit_to_model(space: SearchSpace, base: Mapping[str, Any]) -> SearchSpace:
    """Check a user's model against every method the space has; cap ``groups`` at the
    model's count of shareable layers.

    More groups than layers leaves a group empty, which no mapping allows; the capped
    space is what the study records. Loads the dataset (for the input shape), so a
    dataset that cannot be read fails here, before the study exists.
    """
    from trials.user import is_import_path

    example = {**base, **space.to_config(space.example())}
    if is_import_path(str(base["model"])):
        from trials.checks import check_config

        check_config(example, methods=space_methods(space))
    if "groups" not in space.names and "groups" not in space.fixed:
        return space
    import allocator
    from trials.config import TrialConfig
    from trials.user import model_source
    from trials.user_data import load_data

    data = load_data(base)
    cfg = TrialConfig.from_dict(example)
    model = model_source(str(base["model"]), input_shape=tuple(data.input_shape),
                         num_classes=data.num_classes, hp=cfg.hp,
                         has_trial=cfg.trial is not None)()
    layers = len(allocator.find_slots(model)[0])
    capped = space.capped("groups", layers)
    if capped is not space:
        logger.info("groups capped at %d: %s has %d shareable layers", layers, base["model"],
                       layers)
    return capped
