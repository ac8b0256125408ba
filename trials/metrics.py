"""What a trial measures about a model besides accuracy: parameters and inference FLOPs."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import allocator

__all__ = ["count_parameters", "inference_flops", "parameter_breakdown"]


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``, each tensor counted once (tied weights once).

    This is the count every npas budget is checked against; it delegates to
    ``allocator.count_parameters``.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return int(allocator.count_parameters(module))


def inference_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on ``example_input`` (eval mode, no grad).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2
    FLOPs; matmuls and convolutions only, elementwise work is not counted). Pass a
    materialised model (plain weights) so that weight generation is not counted. The
    model's train/eval mode is restored afterwards.

    Example:
        >>> inference_flops(nn.Linear(3, 2), torch.zeros(1, 3))
        12
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def parameter_breakdown(module: nn.Module) -> dict[str, int]:
    """Trainable parameters by kind: an SSN's ``allocation().by_kind``, a module's own
    ``by_kind`` dict (e.g. :class:`trials.baselines.HashedNet`), else all unshared.

    Example:
        >>> parameter_breakdown(nn.Linear(3, 2))
        {'unshared': 8}
    """
    allocation = getattr(module, "allocation", None)
    if callable(allocation):
        return {str(k): int(v) for k, v in allocation().by_kind.items()}
    by_kind = getattr(module, "by_kind", None)
    if isinstance(by_kind, dict):
        return {str(k): int(v) for k, v in by_kind.items()}
    return {"unshared": count_parameters(module)}
