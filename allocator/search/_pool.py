"""The trial workers: ``concurrency`` long-lived Ray actors, spread over the nodes.

An actor serves trial after trial (no process start, no re-import per trial). One that
dies, with its node or on its own, is replaced; with ``fresh`` every trial gets a new
process (for CPU peak memory, which a reused process cannot measure).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from allocator._errors import ClusterError

__all__ = ["WorkerPool"]

_READY_TIMEOUT_S = 300


class WorkerPool:
    """Idle and busy trial actors; :meth:`start` checks they came up.

    Example:
        >>> pool = WorkerPool("trials:run", 2, cpus=1, gpus=0)  # doctest: +SKIP
        >>> pool.start(); worker = pool.take(); pool.give_back(worker); pool.stop()  # doctest: +SKIP
    """

    def __init__(self, runner: str, size: int, *, cpus: float, gpus: float, fresh: bool = False):
        self.runner, self.size, self.cpus, self.gpus, self.fresh = runner, size, cpus, gpus, fresh
        self.idle: list[Any] = []
        self.busy: list[Any] = []

    def start(self) -> None:
        """Start the actors and wait until each has imported the trial code."""
        import ray

        workers = self._spawn(self.size)
        try:
            ray.get([w.where.remote() for w in workers], timeout=_READY_TIMEOUT_S)
        except Exception as exc:
            for w in workers:
                with contextlib.suppress(Exception):
                    ray.kill(w, no_restart=True)
            raise ClusterError(f"trial workers cannot start on the cluster: {last_line(exc)}") from None
        self.idle = workers

    def take(self) -> Any:
        worker = self.idle.pop()
        self.busy.append(worker)
        return worker

    def give_back(self, worker: Any) -> None:
        """A worker finished its trial: idle again (or replaced, with ``fresh``)."""
        if self.fresh:
            self.replace(worker)
        else:
            self.busy.remove(worker)
            self.idle.append(worker)

    def replace(self, worker: Any) -> None:
        """Kill ``worker`` (if it still lives) and put a new one in the idle list."""
        import ray

        self.busy.remove(worker)
        with contextlib.suppress(Exception):
            ray.kill(worker, no_restart=True)
        self.idle.extend(self._spawn(1))

    def stop(self) -> None:
        """Kill every actor; safe to call twice."""
        if not self.idle and not self.busy:
            return
        import ray

        for worker in [*self.idle, *self.busy]:
            with contextlib.suppress(Exception):  # already gone with its node
                ray.kill(worker, no_restart=True)
        self.idle, self.busy = [], []

    def _spawn(self, n: int) -> list[Any]:
        import ray

        from allocator.search._worker import TrialWorker

        actor: Any = ray.remote(TrialWorker).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, scheduling_strategy="SPREAD"
        )
        return [actor.remote(self.runner) for _ in range(n)]


def last_line(exc: BaseException) -> str:
    """The line of a (remote) traceback that says what went wrong, without colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip() and "^^^" not in line]
    return (lines[-1] if lines else type(exc).__name__)[:300]
