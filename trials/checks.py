"""Check a trial config against the code it names, before any trial runs.

For a user's model, data or trial function this imports the modules, calls the loader
and the factory once, counts the parameters and (for npas's own training loop) runs one
batch through the model, so that a wrong path, a factory that raises, data of the wrong
form, labels outside the model's classes or a user dimension the factory does not take
is one clear :class:`allocator.NPASError` instead of a search of failed trials.

Example:
    >>> check_config({"model": "mlp", "data": "digits"})
    >>> check_config({"model": "mlp", "data": "nowhere"})
    Traceback (most recent call last):
    ...
    allocator._errors.ConfigError: data must be one of cifar10, cifar100, digits, mnist, mnist1d, mnist5k, or MODULE:ATTR (your loader); got 'nowhere'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from allocator._errors import ConfigError, DataError
from trials.config import TrialConfig
from trials.metrics import count_parameters
from trials.user import is_import_path, model_source, resolve

__all__ = ["check_config"]


def check_config(config: Mapping[str, Any], *, methods: Iterable[str] = ()) -> None:
    """:class:`allocator.NPASError` unless ``config`` can run; ``methods`` are the other
    parameter methods the search may give it (``reduced_width`` needs a width)."""
    from trials.data import DATASETS
    from trials.zoo import parse_spec

    cfg = TrialConfig.from_dict(dict(config))
    user_model, user_data = is_import_path(cfg.model), is_import_path(cfg.data)
    if not user_model:
        parse_spec(cfg.model)
    if not user_data and cfg.data not in DATASETS:
        raise ConfigError(
            f"data must be one of {', '.join(DATASETS)}, or MODULE:ATTR (your loader); "
            f"got {cfg.data!r}"
        )
    if cfg.trial is not None:
        resolve(cfg.trial, "--trial")
    if not (user_model or user_data or cfg.trial):
        return  # the zoo on a built-in dataset: checked by the trial code itself
    from trials.user_data import load_data

    dataset = load_data(cfg.to_dict())
    source = model_source(cfg.model, input_shape=tuple(dataset.input_shape),
                          num_classes=dataset.num_classes, hp=cfg.hp,
                          has_trial=cfg.trial is not None)
    if "reduced_width" in {cfg.method, *methods} and source.width is None:
        raise ConfigError(
            f"method reduced_width needs a model with a width: --model {cfg.model} has no "
            "`width` argument with a number (default or searched); search full, ssn or hashed"
        )
    torch.manual_seed(cfg.seed)
    model = source()
    if count_parameters(model) == 0:
        raise ConfigError(f"--model {cfg.model} has no trainable parameters")
    if cfg.trial is None:
        _one_batch(model, dataset, cfg)


def _one_batch(model: torch.nn.Module, dataset: Any, cfg: TrialConfig) -> None:
    """npas's loop calls ``model(x)`` and reads logits ``(batch, classes)``: try it once."""
    x = dataset.train.x[:2]
    fits = f"--data {cfg.data} does not fit --model {cfg.model}"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"{fits}: a batch of inputs of shape {tuple(x.shape)} raised "
            f"{type(exc).__name__}: {first}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(
            f"{fits}: npas's training loop needs logits of shape (batch, classes), the model "
            f"returns {shape}; pass a --trial function to train other outputs"
        )
    if out.shape[1] < dataset.num_classes:
        raise DataError(
            f"{fits}: a label is outside the model's classes: labels go up to "
            f"{dataset.num_classes - 1}, the model outputs {out.shape[1]} classes"
        )
