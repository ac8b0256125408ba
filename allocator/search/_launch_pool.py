"""The pool engine: trials on ``concurrency`` long-lived Ray actors (cheapest per trial).

:class:`PoolLauncher` hands a trial's config to an idle actor of the
:class:`~allocator.search._pool.WorkerPool`, waits for answers, and runs a trial again
on a fresh actor when its worker died under it (``--max-retries``). Each epoch a trial
runs is reported to one :class:`~allocator.search._epochs.EpochBoard` actor, which
applies the early-stopping rule and holds the epochs until the controller collects them:
:meth:`PoolLauncher.wait` waits on the trials and on one pending drain of the board
together, so epochs reach the store as they come and no trial's result or next launch
waits on the board.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from allocator.search._epochs import DRAIN_GROUP, Epoch, EpochBoard
from allocator.search._objectives import Objective
from allocator.search._pool import WorkerPool
from allocator.search._recorder import Finished

__all__ = ["PoolLauncher"]

logger = logging.getLogger(__name__)

_DRAIN_WAIT_S = 30.0  # how long one drain waits on the board for an epoch


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
        self._stops = False  # whether the board applies an early-stopping rule
        self._drain: Any = None  # the pending drain of the board
        self._drained: list[Epoch] = []  # epochs collected, not yet handed to the recorder
        self._draining = True  # False once the board failed a drain

    def start(self, early_stop: str, *, epochs: int, objs: list[Objective]) -> None:
        import ray

        self._stops = early_stop != "none"
        # (a documented option that the overloads of ray.remote do not list)
        board = ray.remote(concurrency_groups={DRAIN_GROUP: 1})(EpochBoard)  # type: ignore[call-overload]
        # first: the board's process starts while the workers start
        self._board = board.options(num_cpus=0, **_on_head()).remote(early_stop, epochs, objs)
        self.pool.start()

    def stop(self) -> None:
        import ray

        self.pool.stop()
        self._inflight.clear()
        self._drain, self._drained = None, []
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
        ref = run.worker.run.remote(run.config, run.keep, self._board, run.number, resume,
                                    self._stops)
        self._inflight[ref] = run

    def epochs(self) -> list[Epoch]:
        """Epochs of the trials in flight reported since the last call (live learning
        curves), as :meth:`wait` collected them. A trial's result carries all its epochs,
        so those of a trial that ended meanwhile are left to its result."""
        live = {run.number for run in self._inflight.values()}
        out, self._drained = [e for e in self._drained if e[0] in live], []
        return out

    def wait(self, timeout_s: float) -> list[Finished]:
        """The trials that ended within ``timeout_s`` seconds (at least one, if any ends);
        it returns early, with none, when epochs came (see :meth:`epochs`)."""
        import ray

        if not self._inflight:
            return []
        if self._drain is None and self._board is not None and self._draining:
            self._drain = self._board.drain.options(concurrency_group=DRAIN_GROUP).remote(
                _DRAIN_WAIT_S)
        waits = [*self._inflight, *([self._drain] if self._drain is not None else [])]
        ready, _ = ray.wait(waits, num_returns=1, timeout=timeout_s)
        done = []
        for ref in ready:
            if ref not in self._inflight:
                self._collect(ref)
                continue
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

    def _collect(self, ref: Any) -> None:
        """The board answered a drain: keep its epochs (the next wait drains again)."""
        import ray

        self._drain = None
        try:
            self._drained.extend(ray.get(ref))
        except Exception as exc:  # the board is gone: the curves arrive with the results
            logger.debug("epoch board drain failed: %s", exc)
            self._draining = False

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
