"""A training run's state after an epoch, as tensors and plain data: a checkpoint.

:func:`training_state` takes it (weights, optimiser, schedule, random states, history,
step counts); :func:`restore_state` puts it back into a run built the same way, which
then goes on from the next epoch and ends exactly as the uninterrupted run. The state
saves with ``torch.save`` and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["restore_state", "training_state"]


def training_state(epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
           shuffle: torch.Generator, history: list[dict[str, float]], steps: int,
           step_seconds: float) -> dict[str, Any]:
    """The run after ``epoch``, as tensors and plain data (a checkpoint)."""
    return {
        "epoch": epoch,
        "model": {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                  for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "shuffle": shuffle.get_state(),
        "rng": torch.get_rng_state(),
        "history": [dict(h) for h in history],
        "steps": steps,
        "step_seconds": step_seconds,
    }


def restore_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             schedule: Any, shuffle: torch.Generator,
             history: list[dict[str, float]]) -> tuple[int, tuple[float, float] | None]:
    """Load a checkpoint into the run; the epoch to go on from and the last evaluation."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["rng"])
    history.extend(dict(h) for h in state["history"])
    last = history[-1] if history else {}
    val = (last["val_accuracy"], last["val_loss"]) if "val_accuracy" in last else None
    return int(state["epoch"]) + 1, val
