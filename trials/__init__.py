"""Trials: train one model under one parameter method and measure it.

The public surface is small: :func:`run` a :class:`TrialConfig` and read the
:class:`TrialResult`; :func:`load_dataset` and :func:`build_model` give the data and
architectures trials use. Names are imported on first use, so ``import trials`` is cheap
and never imports a search or cluster library.

Example:
    >>> import trials
    >>> result = trials.run({"model": "mlp", "method": "full", "epochs": 1})  # doctest: +SKIP
    >>> result.status  # doctest: +SKIP
    'complete'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trials.config import TrialConfig
    from trials.data import DATASETS, load_dataset
    from trials.pruned import TrialPruned
    from trials.runner import TrialResult, prepare, run
    from trials.zoo import MODELS, build_model

__all__ = [
    "DATASETS", "MODELS", "TrialConfig", "TrialPruned", "TrialResult", "build_model", "load_dataset",
    "prepare", "run",
]

_WHERE = {
    "run": "trials.runner",
    "TrialResult": "trials.runner",
    "prepare": "trials.runner",
    "TrialConfig": "trials.config",
    "TrialPruned": "trials.pruned",
    "load_dataset": "trials.data",
    "DATASETS": "trials.data",
    "build_model": "trials.zoo",
    "MODELS": "trials.zoo",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trials' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
