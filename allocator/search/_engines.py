"""What runs the trials (``--engine``) and which Tune loggers record them (``--log``).

``pool`` (the default) keeps ``concurrency`` Ray actors and reuses them, trial after
trial: the least overhead per trial, several controllers per study, recovery of lost
workers by the controller. ``tune`` runs ``ray.tune.Tuner`` with Tune's ``OptunaSearch``
on the same study: Tune's schedulers, checkpoints, ``ResultGrid``, logger callbacks and
fractional GPUs. Both record through the same recorder, so a study looks the same in the
store whichever ran it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from allocator._errors import ConfigError

__all__ = ["ENGINES", "LOGS", "check_engine", "tune_loggers"]

ENGINES = ("pool", "tune")
#: ``--log`` choices: Tune's logger callback and the package each one needs.
LOGS = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}


def check_engine(settings: Any) -> None:
    """:class:`ConfigError` (one line) for an engine, logger or combination that cannot run.

    Example:
        >>> from allocator.search import SearchSettings
        >>> check_engine(SearchSettings("s", engine="tune", log=("tensorboard",)))
        >>> check_engine(SearchSettings("s", engine="spark"))
        Traceback (most recent call last):
        ...
        allocator._errors.ConfigError: engine must be one of pool, tune, got 'spark'
    """
    if settings.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {settings.engine!r}")
    for name in settings.log:
        if name not in LOGS:
            raise ConfigError(f"log must be one of {', '.join(LOGS)}, got {name!r}")
        if importlib.util.find_spec(LOGS[name]) is None:
            raise ConfigError(
                f"--log {name} needs the {LOGS[name]} package, which is not installed "
                f"(pip install {LOGS[name]}); or drop --log {name}"
            )
    if settings.engine == "pool" and settings.log:
        raise ConfigError(
            f"--log {settings.log[0]} is a Ray Tune logger: add --engine tune, or drop --log"
        )


def tune_loggers(names: tuple[str, ...]) -> list[Any]:
    """Tune's logger callbacks for ``--log`` (checked by :func:`check_engine`)."""
    out: list[Any] = []
    for name in names:
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            out.append(TBXLoggerCallback())
        else:
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            out.append(MLflowLoggerCallback(experiment_name="npas"))
    return out
