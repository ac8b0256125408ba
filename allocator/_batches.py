"""The loss of one batch, whatever the model returns (used by ``learned``'s pretraining).

A batch is an ``(inputs, targets)`` pair, or a dict of keyword arguments for the model
(as transformers' data collators give, ``labels`` included). ``inputs`` is a tensor, a
tuple or list of positional arguments, or a dict of keyword arguments. The loss is:

* ``loss_fn(output, targets)`` when the user gives one (``targets`` is None for a dict
  batch);
* else, with targets, the cross-entropy of the output's logits: the output itself when
  it is a tensor, its ``logits`` (a key or an attribute, as in transformers'
  ``SequenceClassifierOutput``), or the first tensor of two or more dimensions of a
  tuple or list. Logits ``(batch, length, classes)`` against targets ``(batch, length)``
  are flattened (a language model);
* else the output's own ``loss`` (a key or an attribute).

Anything else raises :class:`~allocator.ConfigError` naming what is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from allocator._errors import ConfigError

__all__ = ["batch_loss"]

_NEEDS = (
    "a tensor of logits, a tuple or list holding one, or a dict or object with `logits` "
    "or `loss`; or pass pretrain_loss=fn(output, targets)"
)


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, Mapping):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ConfigError(
        f"a pretrain batch must be an (inputs, targets) pair or a dict of keyword arguments "
        f"for the model, got {type(batch).__name__}"
        + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
    )


def _call(net: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return net(**inputs)
    if isinstance(inputs, (tuple, list)):
        return net(*inputs)
    return net(inputs)


def _field(out: Any, name: str) -> Any:
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


def _logits(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = _field(out, "logits")
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, Tensor) and item.dim() >= 2:
                return item
    raise ConfigError(f"pretraining got a {type(out).__name__} from the model; it needs {_NEEDS}")


def _cross_entropy(logits: Tensor, targets: Any) -> Tensor:
    if not isinstance(targets, Tensor):
        raise ConfigError(
            f"pretrain targets must be a tensor of class indices for the cross-entropy, got "
            f"{type(targets).__name__}; or pass pretrain_loss=fn(output, targets)"
        )
    if logits.dim() > 2 and tuple(targets.shape) == tuple(logits.shape[:-1]):
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    try:
        return F.cross_entropy(logits, targets)
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cross-entropy of the model's logits {tuple(logits.shape)} against targets "
            f"{tuple(targets.shape)} failed ({first}); pass pretrain_loss=fn(output, targets)"
        ) from None


def batch_loss(net: nn.Module, batch: Any,
               loss_fn: Callable[[Any, Any], Any] | None = None) -> Tensor:
    """The scalar loss of ``net`` on one pretraining ``batch``.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 3)
        >>> batch_loss(net, (torch.randn(8, 4), torch.randint(0, 3, (8,)))).dim()
        0
        >>> batch_loss(net, {"input": torch.randn(8, 4)})
        Traceback (most recent call last):
        ...
        allocator._errors.ConfigError: pretraining got a Tensor from the model with no targets in the batch; it needs targets ((inputs, targets) batches), an output with a `loss`, or pretrain_loss=fn(output, targets)
    """
    inputs, targets = _split(batch)
    out = _call(net, inputs)
    if loss_fn is not None:
        loss = loss_fn(out, targets)
    elif targets is not None:
        loss = _cross_entropy(_logits(out), targets)
    else:
        loss = _field(out, "loss") if not isinstance(out, Tensor) else None
        if loss is None:
            raise ConfigError(
                f"pretraining got a {type(out).__name__} from the model with no targets in the "
                "batch; it needs targets ((inputs, targets) batches), an output with a `loss`, "
                "or pretrain_loss=fn(output, targets)"
            )
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else (
            f"a {type(loss).__name__}")
        raise ConfigError(f"the pretraining loss must be a scalar float tensor, got {what}")
    return loss
