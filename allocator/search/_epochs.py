"""Epochs of running trials: live learning curves and the early-stopping rule.

A trial's report hook (``trials.train``'s ``report(epoch, metrics)``) sends each epoch's
metrics to one :class:`EpochBoard` (a Ray actor on the pool). The board answers whether
the trial stops there (the early-stopping rule, :data:`EARLY_STOP`) and keeps the epochs
until the controller collects them with :meth:`EpochBoard.drain` and writes them to the
store as intermediate values, so the dashboard draws a running trial's curve. On the
pool the controller's drain waits on the board (in a concurrency group of its own,
:data:`DRAIN_GROUP`) until an epoch comes, so the controller wakes for epochs as for
finished trials and never waits on the board itself. Workers never write to the database.

Example:
    >>> board = EpochBoard("pareto", 9, objectives())
    >>> board.report(0, 1, {"val_accuracy": 0.5, "trainable_params": 100})
    False
    >>> board.drain()
    [(0, 1, {'val_accuracy': 0.5, 'trainable_params': 100})]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from allocator._errors import ConfigError
from allocator.search._halving import ParetoHalving
from allocator.search._objectives import Objective, objectives

__all__ = ["DRAIN_GROUP", "EARLY_STOP", "EpochBoard", "checkpoint_hook", "make_rule", "report_hook"]

logger = logging.getLogger(__name__)

#: ``--early-stop`` choices: none; successive halving on every objective by
#: non-dominated rank and crowding (``pareto``); the same halving on validation accuracy
#: alone, i.e. ASHA (``asha``, for comparison).
EARLY_STOP = ("none", "pareto", "asha")

#: Successive halving keeps one trial in ``ETA`` at each rung; the first rung is epoch
#: ``GRACE``.
ETA, GRACE = 3, 1

Epoch = tuple[int, int, dict[str, float]]

#: The board actor's concurrency group for :meth:`EpochBoard.drain` (one thread), apart
#: from the default group (one thread: reports and checkpoints in order).
DRAIN_GROUP = "drain"


def make_rule(name: str, epochs: int, objs: Sequence[Objective]) -> ParetoHalving | None:
    """The early-stopping rule ``name`` for trials of ``epochs`` epochs (``None``: none).

    Example:
        >>> make_rule("pareto", 9, objectives()).rungs
        (1, 3)
        >>> make_rule("none", 9, objectives()) is None
        True
    """
    if name not in EARLY_STOP:
        raise ConfigError(f"early_stop must be one of {', '.join(EARLY_STOP)}, got {name!r}")
    if name == "none":
        return None
    judged = judged_objectives(name, objs)
    return ParetoHalving(epochs, [o.direction for o in judged], eta=ETA, grace=GRACE)


def judged_objectives(name: str, objs: Sequence[Objective]) -> list[Objective]:
    """The objectives a rule compares trials on: validation accuracy alone (``asha``), or
    every objective a trial reports per epoch (``pareto``: accuracy and trained
    parameters, step time, a user trial's own metrics; peak memory is known only at the
    end). A trial whose epoch lacks one of them is not judged at that epoch."""
    if name == "asha":
        return [objs[0]]
    return [o for o in objs if o.name != "peak_memory"]


class EpochBoard:
    """Collects the epochs trials report and applies the early-stopping rule.

    As a Ray actor, create it with ``ray.remote(concurrency_groups={DRAIN_GROUP: 1})`` and
    call ``drain`` in that group: a waiting drain then never holds up a report."""

    def __init__(self, early_stop: str = "none", epochs: int = 1,
                 objs: Sequence[Objective] | None = None) -> None:
        objs = list(objs or objectives())
        self.rule = make_rule(early_stop, epochs, objs)
        self.names = [o.name for o in judged_objectives(early_stop, objs)]
        self._epochs: list[Epoch] = []
        self._came = threading.Condition()  # guards _epochs: drain runs on its own thread
        self._checkpoints: dict[int, tuple[int, bytes]] = {}

    def report(self, number: int, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Record one epoch of trial ``number``; whether the trial stops here."""
        with self._came:
            self._epochs.append((number, int(epoch), dict(metrics)))
            self._came.notify_all()
        if self.rule is None:
            return False
        values = [metrics.get(n) for n in self.names]
        if any(not isinstance(v, (int, float)) for v in values):
            return False
        return self.rule.report(number, int(epoch), [float(v) for v in values])  # type: ignore[arg-type]

    def keep(self, number: int, epoch: int, data: bytes) -> None:
        """The latest checkpoint of trial ``number`` (the state after ``epoch``)."""
        self._checkpoints[number] = (int(epoch), data)

    def checkpoint(self, number: int) -> tuple[int, bytes] | None:
        """Trial ``number``'s latest checkpoint ``(epoch, state bytes)``, if any."""
        return self._checkpoints.get(number)

    def forget(self, number: int) -> None:
        self._checkpoints.pop(number, None)

    def drain(self, wait_s: float = 0.0) -> list[Epoch]:
        """The epochs reported since the last call, oldest first; with ``wait_s``, waits
        up to that long for one if there is none yet."""
        with self._came:
            if not self._epochs and wait_s > 0:
                self._came.wait(wait_s)
            out, self._epochs = self._epochs, []
        return out


def report_hook(board: Any, number: int, *,
                wait: bool = True) -> Callable[[int, dict[str, float]], bool]:
    """A trial's ``report(epoch, metrics)`` that asks ``board`` (a Ray actor handle, or
    the board itself): ``True`` stops the trial. A board that cannot be reached never
    stops a trial. With ``wait=False`` (no early-stopping rule) an actor is sent the
    epoch without waiting for its answer (Ray runs one caller's calls in order)."""

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        try:
            if hasattr(board, "report") and hasattr(board.report, "remote"):
                import ray

                ref = board.report.remote(number, epoch, metrics)
                return bool(ray.get(ref)) if wait else False
            return bool(board.report(number, epoch, metrics))
        except Exception as exc:  # the trial goes on; its curve arrives at the end
            logger.debug("epoch %d of trial %d not reported: %s", epoch, number, exc)
            return False

    return report


def checkpoint_hook(board: Any, number: int) -> Callable[[int, dict[str, Any]], None]:
    """A trial's ``checkpoint(epoch, state)`` that keeps the state on ``board`` (a Ray actor
    handle), waiting until it is there: the next epoch starts only once this one is safe."""
    import ray

    from allocator.search._worker import state_bytes

    def checkpoint(epoch: int, state: dict[str, Any]) -> None:
        try:
            ray.get(board.keep.remote(number, epoch, state_bytes(state)))
        except Exception as exc:  # the trial goes on; a retry would start from scratch
            logger.debug("checkpoint of trial %d not kept: %s", number, exc)

    return checkpoint
