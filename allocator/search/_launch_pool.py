"""The pool engine: trials on ``concurrency`` long-lived Ray actors (cheapest per trial).

:class:`PoolLauncher` hands a trial's config to an idle actor of the
:class:`~allocator.search._pool.WorkerPool`, waits for answers, and runs a trial again
on a fresh actor when its worker died under it (``--max-retries``). Each epoch a trial
runs is reported to one :class:`~allocator.search._epochs.EpochBoard` actor, which
applies the early-stopping rule and holds the epochs until the controller collects them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from allocator.search._epochs import Epoch, EpochBoard
from allocator.search._objectives import Objective
from allocator.search._pool import WorkerPool
from allocator.search._recorder import Finished

__all__ = ["PoolLauncher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Run:
    number: int
    worker: Any
    config: dict[str, Any]
    keep: bool
    attempts: int = 1
    resume: tuple[int, bytes] | None = None  # the checkpoint (epoch, state) it goes on from


class PoolLauncher:
    """Runs trials on the worker pool; :meth:`wait` returns those that ended.

    Example:
        >>> launcher = PoolLauncher(pool, max_retries=1)  # doctest: +SKIP
        >>> launcher.start("pareto", epochs=9, objs=objectives())  # doctest: +SKIP
        >>> launcher.launch(0, config, keep=False)  # doctest: +SKIP
        >>> finished = launcher.wait(1.0)  # doctest: +SKIP
    """

    engine = "pool"

    def __init__(self, pool: WorkerPool, *, max_retries: int,
                 note: Callable[[str], None] | None = None) -> None:
        self.pool, self.max_retries = pool, max_retries
        self.note = note or (lambda text: None)
        self._inflight: dict[Any, _Run] = {}
        self._board: Any = None

    def start(self, early_stop: str, *, epochs: int, objs: list[Objective]) -> None:
        import ray
        self.pool.start()
        self._board = ray.remote(EpochBoard).options(num_cpus=0, **_on_head()).remote(
            early_stop, epochs, objs)

    def stop(self) -> None:
        import ray

        self.pool.stop()
        self._inflight.clear()
        if self._board is not None:
            try:
                ray.kill(self._board, no_restart=True)
            except Exception as exc:  # gone already (Ray shut down)
                logger.debug("epoch board not stopped: %s", exc)
            self._board = None

    @property
    def idle(self) -> bool:
        return bool(self.pool.idle)

    @property
    def running(self) -> list[int]:
        """Numbers of the trials in flight."""
        return [run.number for run in self._inflight.values()]

    def launch(self, number: int, config: dict[str, Any], keep: bool) -> None:
        self._submit(_Run(number, self.pool.take(), config, keep))

    def _submit(self, run: _Run) -> None:
        resume = run.resume[1] if run.resume else None
        ref = run.worker.run.remote(run.config, run.keep, self._board, run.number, resume)
        self._inflight[ref] = run

    def epochs(self) -> list[Epoch]:
        """Epochs reported since the last call (live learning curves)."""

        # the curves arrive whole with each result where the board cannot answer
        return list(self._call("drain") or []) if self._board is not None else []

    def wait(self, timeout_s: float) -> list[Finished]:
        """The trials that ended within ``timeout_s`` seconds (at least one, if any ends)."""
        import ray

        if not self._inflight:
            return []
        ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=timeout_s)
        done = []
        for ref in ready:
            run = self._inflight.pop(ref)
            try:
                out = ray.get(ref)
                self.pool.give_back(run.worker)
            except ray.exceptions.RayError as exc:  # the worker or its node died
                lost = f"worker lost: {' '.join(str(exc).split())[:300]}"
                if self._retry(run, lost):
                    continue
                if run.attempts > 1:
                    lost = f"worker lost on each of {run.attempts} attempts; last: {lost[13:]}"
                out = {"result": {"status": "failed", "failure_reason": lost}}
            done.append(Finished(run.number, run.config, out, attempts=run.attempts,
                                 resumed_from=run.resume[0] if run.resume else None))
            self._board.forget.remote(run.number)  # no need to wait for it
        return done

    def _retry(self, run: _Run, lost: str) -> bool:
        """The worker died under ``run``: run it again on a new worker if retries are left.

        The trial stays ``RUNNING`` and claimed by this controller meanwhile, so no other
        controller takes it over or counts it twice."""
        self.pool.replace(run.worker)
        if run.attempts > self.max_retries:
            return False
        resume = self._call("checkpoint", run.number) or run.resume
        again = "running it again" + (f" from epoch {resume[0] + 1}" if resume else "")
        logger.warning("trial %d: %s; %s (attempt %d of %d)", run.number, lost, again,
                       run.attempts + 1, self.max_retries + 1)
        self.note(f"trial {run.number} lost its worker; {again}")
        self._submit(dataclasses.replace(run, worker=self.pool.take(), attempts=run.attempts + 1,
                                         resume=resume))
        return True

    def _call(self, method: str, *args: Any) -> Any:
        """A call to the epoch board; ``None`` if it cannot answer."""
        import ray

        try:
            return ray.get(getattr(self._board, method).remote(*args), timeout=60)
        except Exception as exc:
            logger.debug("epoch board %s failed: %s", method, exc)
            return None


_HEAD = "node:__internal_head__"  # the resource Ray gives the head node


def _on_head() -> dict[str, Any]:
    """Actor options that place it on the cluster's head node (which the cluster cannot
    lose and stay up), else on the controller's own node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        if any(n.get("Alive") and _HEAD in n.get("Resources", {}) for n in ray.nodes()):
            return {"resources": {_HEAD: 0.001}}
    except Exception as exc:  # Ray Client: no node table
        logger.debug("no node table: %s", exc)
    here = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=True)}
