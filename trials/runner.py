"""One trial, end to end: a plain function of a config that returns a result.

:func:`run` loads the data, builds the model, applies the parameter method (the full
network, an SSN, reduced width or HashedNets), trains, and returns a frozen
:class:`TrialResult` that round-trips through JSON. It keeps no global state, so the
same call works in-process, in a Ray worker or on a remote node.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import platform
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import allocator
from allocator._errors import ConfigError, NPASError
from trials import methods
from trials.config import TrialConfig
from trials.metrics import count_parameters, inference_flops, parameter_breakdown
from trials.train import (
    Checkpoint,
    Report,
    TrainOutcome,
    make_pretrain,
    train,
    trial_environment,
)
from trials.user import ModelSource, call_trial, model_source
from trials.user_data import load_data

__all__ = ["TrialResult", "prepare", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialResult:
    """What one trial measured. ``to_dict()`` / ``from_dict()`` round-trip through JSON.

    ``status`` is ``"complete"``, ``"failed"`` (``failure_reason`` says why) or
    ``"pruned"``. ``metrics`` holds what a user's trial function returned (empty for
    npas's own loop). ``trainable_params`` is the count actually trained
    (``allocator.count_parameters``); ``flops`` the inference FLOPs of one example
    through the deployed (materialised) network; ``method_info`` what the method chose
    (the width multiplier of ``reduced_width``, the array size of ``hashed``). ``model``
    is the trained module when ``run(..., keep_model=True)``; it is not serialised.
    """

    status: str
    failure_reason: str | None
    val_accuracy: float | None
    val_loss: float | None
    test_accuracy: float | None
    test_loss: float | None
    trainable_params: int | None
    params_by_kind: dict[str, int]
    flops: int | None
    train_time_s: float
    step_time_s: float | None
    peak_memory_bytes: int | None
    epochs_run: int
    steps: int
    allocation: dict[str, Any] | None
    method_info: dict[str, Any]
    config: dict[str, Any]
    versions: dict[str, str]
    seed: int
    host: str
    history: list[dict[str, float]]
    metrics: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field but ``model``, as JSON-able data.

        Example:
            >>> import json
            >>> result = run({"model": "mlp", "method": "full", "epochs": 1})  # doctest: +SKIP
            >>> TrialResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result  # doctest: +SKIP
            True
        """
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "model"
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """Rebuild a result from :meth:`to_dict` output (``model`` is ``None``).

        Example:
            >>> TrialResult.from_dict({"status": "complete"})
            Traceback (most recent call last):
            ...
            allocator._errors.ConfigError: trial result fields must be exactly ...
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"model"}
        optional = {"metrics"}  # newer than some stored results
        missing = sorted(names - optional - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ConfigError(
                f"trial result fields must be exactly {', '.join(sorted(names))}; "
                f"missing {missing}, unknown {unknown}"
            )
        return cls(**data)


def run(
    config: TrialConfig | dict[str, Any],
    *,
    report: Report | None = None,
    keep_model: bool = False,
    checkpoint: Checkpoint | None = None,
    resume: dict[str, Any] | None = None,
) -> TrialResult:
    """Run one trial and return its :class:`TrialResult`.

    ``report(epoch, metrics)`` is called after every epoch; returning ``True`` prunes
    the trial. Configuration errors (:class:`allocator.NPASError`: a bad budget, an
    unknown model or dataset) are raised; anything else that goes wrong inside the
    trial (divergence, out of memory, an exception while training) makes the result
    ``failed`` with the reason. ``keep_model=True`` keeps the trained module in
    ``result.model`` (for saving or exporting). ``checkpoint`` and ``resume`` are
    :func:`trials.train.train`'s: the run's state after each epoch, and a state to go on
    from (a trial whose worker was lost resumes from its last epoch).

    Example:
        >>> result = run({"model": "mlp", "data": "mnist1d", "method": "ssn",
        ...               "budget": 0.25, "epochs": 1, "data_size": 500})
        >>> result.status
        'complete'
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    model: nn.Module | None = None
    flops: int | None = None
    info: dict[str, Any] = {}
    outcome = TrainOutcome(status="failed")
    metrics: dict[str, float] = {}
    with trial_environment(cfg):
        try:
            dataset = load_data(cfg.to_dict())
            model, flops, info = _build(cfg, dataset)
            if cfg.trial is not None:
                outcome, metrics = _user_trial(cfg, model, dataset, report, checkpoint, resume)
            else:
                outcome = train(model, dataset, cfg, report=report, checkpoint=checkpoint,
                                resume=resume)
        except NPASError:
            raise
        except Exception as exc:  # the trial fails, the search goes on
            reason = f"{type(exc).__name__}: {exc}".strip()
            logger.warning("trial failed: %s", reason)
            logger.debug("trial failure traceback", exc_info=True)
            outcome = dataclasses.replace(outcome, failure_reason=reason)
    allocation = None
    if isinstance(model, allocator.SSN):
        allocation = json.loads(json.dumps(model.allocation().to_dict()))
    return TrialResult(
        status=outcome.status,
        failure_reason=outcome.failure_reason,
        val_accuracy=outcome.val_accuracy,
        val_loss=outcome.val_loss,
        test_accuracy=outcome.test_accuracy,
        test_loss=outcome.test_loss,
        trainable_params=count_parameters(model) if model is not None else None,
        params_by_kind=parameter_breakdown(model) if model is not None else {},
        flops=flops,
        train_time_s=outcome.train_time_s,
        step_time_s=outcome.step_time_s,
        peak_memory_bytes=outcome.peak_memory_bytes,
        epochs_run=outcome.epochs_run,
        steps=outcome.steps,
        allocation=allocation,
        method_info=info,
        config=cfg.to_dict(),
        versions=_versions(),
        seed=cfg.seed,
        host=socket.gethostname(),
        history=outcome.history,
        metrics=metrics,
        model=model if keep_model else None,
    )


def prepare(config: TrialConfig | dict[str, Any]) -> None:
    """Do in this process, ahead of time, the one-off work of the first trial like ``config``.

    It loads the config's dataset into the process's cache (MNIST-1D is generated:
    about a second for 3,000 examples; a user's loader is called once) and counts the
    FLOPs of its plain model, which loads the parts of torch a trial needs on first use
    (about a second more, once per process). Nothing is trained. A trial is a pure
    function of its config, so its result is the same with or without this call.
    ``npas search`` calls it in every trial worker as the worker starts, so that a
    worker's first trial costs what its others do.

    Example:
        >>> prepare({"model": "mlp", "data": "mnist1d", "data_size": 500})
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    with trial_environment(cfg):  # its threads and determinism; the RNG state is restored
        dataset = load_data(cfg.to_dict())
        model = _source(cfg, dataset)()
        if cfg.trial is None:
            inference_flops(model, dataset.train.x[:1])


def _source(cfg: TrialConfig, dataset: Any) -> ModelSource:
    return model_source(cfg.model, input_shape=tuple(dataset.input_shape),
                        num_classes=dataset.num_classes, hp=cfg.hp,
                        has_trial=cfg.trial is not None)


def _build(cfg: TrialConfig, dataset: Any) -> tuple[nn.Module, int | None, dict[str, Any]]:
    """The model to train, its inference FLOPs for one example, and what was chosen.

    FLOPs are counted on the plain architecture before any parameter method: an SSN
    and a HashedNet compute exactly that network (their materialised forms are it).
    A model that a user's trial function calls its own way may not take a batch of the
    data as is: its FLOPs are then unknown (``None``).
    """
    pretrain = make_pretrain(dataset, cfg) if cfg.method == "ssn" and cfg.mapping == "learned" else None
    model, info = methods.build(_source(cfg, dataset), cfg, example=dataset.train.x[:1],
                                pretrain=pretrain, strict=cfg.trial is None)
    flops = info.pop("flops", None)
    return model, flops, info


def _user_trial(
    cfg: TrialConfig, model: nn.Module, dataset: Any, report: Report | None,
    checkpoint: Checkpoint | None = None, resume: Any = None,
) -> tuple[TrainOutcome, dict[str, float]]:
    """Train with the user's trial function; its metrics fill the outcome's accuracy and
    loss fields when it returns them under npas's names."""
    start = time.perf_counter()
    if report is not None:  # early stopping weighs each epoch against trained parameters too
        search_report, trainable = report, count_parameters(model)

        def report(epoch: int, metrics: dict[str, float]) -> bool | None:
            return search_report(epoch, {"trainable_params": trainable, **metrics})

    with trial_environment(cfg) as device:
        model.to(device)
        config = {**cfg.to_dict(), **(cfg.hp or {}), "device": device.type}
        assert cfg.trial is not None
        status, metrics, history, reason = call_trial(
            cfg.trial, model, config, data=dataset, report=report,
            checkpoint=checkpoint, resume=resume,
        )
    outcome = TrainOutcome(
        status="failed" if reason else status,
        failure_reason=reason,
        val_accuracy=metrics.get("val_accuracy"),
        val_loss=metrics.get("val_loss"),
        test_accuracy=metrics.get("test_accuracy"),
        test_loss=metrics.get("test_loss"),
        history=history,
        train_time_s=time.perf_counter() - start,
        epochs_run=len(history),
    )
    return outcome, metrics


def _versions() -> dict[str, str]:
    try:
        npas = importlib.metadata.version("npas")
    except importlib.metadata.PackageNotFoundError:
        npas = "unknown"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "npas": npas,
        "numpy": np.__version__,
    }


def _plain(value: Any) -> Any:
    """A fresh JSON-able copy (dicts and lists copied, so results stay immutable)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
