"""What a search optimises and how it samples: objectives, directions, samplers.

By default two objectives: maximise validation accuracy, minimise trained parameters.
A third on request: training step time or peak memory. Or the user's own metrics
(``--objective f1:max``, repeatable) beside trained parameters. Samplers never see storage;
storage never sees samplers (Optuna's own separation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from allocator._errors import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = ["EXTRA_OBJECTIVES", "SAMPLERS", "Objective", "make_sampler", "objectives", "values_of"]


@dataclass(frozen=True)
class Objective:
    """One objective: its metric name (as the dashboard shows it) and direction."""

    name: str
    direction: str  # "maximize" | "minimize"


_BASE = (Objective("val_accuracy", "maximize"), Objective("trainable_params", "minimize"))

#: ``--objective`` choices and the result field each one reads.
EXTRA_OBJECTIVES: dict[str, Objective] = {
    "step_time": Objective("step_time_s", "minimize"),
    "peak_memory": Objective("peak_memory_bytes", "minimize"),
}

SAMPLERS = ("tpe", "nsga2", "random", "grid")


def objectives(chosen: str | Sequence[str] | None = None) -> list[Objective]:
    """The objectives of a search, from ``--objective`` (repeatable).

    Without any: maximise ``val_accuracy``, minimise ``trainable_params``. ``step_time``
    or ``peak_memory`` add a third, minimised. ``NAME:max`` or ``NAME:min`` chooses a
    metric the trial returns (a user's trial function's, or a field of the result such
    as ``val_loss``); trained parameters stay an objective beside them.

    Example:
        >>> [o.name for o in objectives("step_time")]
        ['val_accuracy', 'trainable_params', 'step_time_s']
        >>> [(o.name, o.direction) for o in objectives(["f1:max"])]
        [('f1', 'maximize'), ('trainable_params', 'minimize')]
    """
    items = [chosen] if isinstance(chosen, str) else list(chosen or ())
    own: list[Objective] = []
    extra: list[Objective] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"objective must be a string, got {item!r}")
        name, sep, way = item.rpartition(":")
        if not sep and item in EXTRA_OBJECTIVES:
            extra.append(EXTRA_OBJECTIVES[item])
            continue
        if not sep or not name or way not in _WAYS:
            raise ConfigError(
                f"objective must be NAME:max, NAME:min, {' or '.join(EXTRA_OBJECTIVES)}; "
                f"got {item!r}"
            )
        if not name.replace("_", "a").replace(".", "a").replace("-", "a").isalnum():
            raise ConfigError(f"objective name must be letters, digits and _ . -, got {name!r}")
        own.append(Objective(name, _WAYS[way]))
    chosen_list = (own or list(_BASE[:1])) + [o for o in _BASE[1:] if o.name not in {x.name for x in own}]
    out: list[Objective] = []
    for obj in [*chosen_list, *extra]:
        if obj.name in {o.name for o in out}:
            raise ConfigError(f"objective {obj.name!r} is given twice")
        out.append(obj)
    return out


_WAYS = {"max": "maximize", "min": "minimize"}


def values_of(result: Mapping[str, Any], objs: Sequence[Objective]) -> list[float] | str:
    """The objective values of a trial result, or why there are none.

    A name is looked up among the result's fields, then among the metrics a user's
    trial function returned (``result["metrics"]``).

    Example:
        >>> values_of({"val_accuracy": 0.9, "trainable_params": 1000}, objectives())
        [0.9, 1000.0]
        >>> values_of({"val_accuracy": None, "trainable_params": 10}, objectives())
        'the trial reported no val_accuracy'
        >>> values_of({"trainable_params": 10, "metrics": {"f1": 0.5}}, objectives(["f1:max"]))
        [0.5, 10.0]
    """
    values = []
    metrics = result.get("metrics") or {}
    for obj in objs:
        value = result.get(obj.name)
        if value is None:
            value = metrics.get(obj.name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            returned = ", ".join(sorted(metrics))
            also = f" (it returned: {returned})" if returned else ""
            return f"the trial reported no {obj.name}{also}"
        if not math.isfinite(value):
            return f"the trial reported {obj.name} = {value}"
        values.append(float(value))
    return values


def make_sampler(
    name: str, seed: int, *, trials: int = 24, n_objectives: int = 2
) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler: ``tpe`` (default), ``nsga2``, ``random`` or ``grid``.

    ``tpe`` is multivariate with group decomposition (the space is conditional) and a
    constant liar (trials run concurrently). ``grid`` is served by enqueuing the
    space's grid points (see the controller); its sampler only fills in beyond them.

    Example:
        >>> type(make_sampler("random", 0)).__name__
        'RandomSampler'
    """
    import optuna

    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                constant_liar=True,
                n_startup_trials=min(10, max(4, trials // 3)),
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=min(50, max(8, trials // 4))
        )
    if name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def pareto_indices(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (ties on every objective are all kept).

    Example:
        >>> pareto_indices([(0.9, 100), (0.8, 50), (0.7, 80)], ["maximize", "minimize"])
        [0, 1]
    """
    import numpy as np

    from allocator._pareto import pareto_mask

    return [int(i) for i in np.flatnonzero(pareto_mask(points, directions))]
