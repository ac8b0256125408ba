"""The trial workers: ``concurrency`` long-lived Ray actors, spread over the nodes.

An actor serves trial after trial (no process start, no re-import per trial). One that
dies, with its node or on its own, is replaced; with ``fresh`` every trial gets a new
process (for CPU peak memory, which a reused process cannot measure).

When a node is lost the pool shrinks to what the surviving nodes can hold: a replacement
that no node has room for would wait for resources forever, and the trial handed to it
with it. Instead the trial queues on a live worker (an actor runs its calls one after
the other) and the search goes on at the concurrency the cluster still holds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from typing import Any

from allocator._errors import ClusterError

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)

_READY_TIMEOUT_S = 300
#: How long a lost worker may stay ``ALIVE`` in Ray's actor table: a node that stopped
#: answering is declared dead only after Ray's health checks (about 15-30 s by default),
#: and only then does the cluster's size say whether a replacement fits.
_DEATH_NOTICE_TIMEOUT_S = 120.0
_POLL_S = 0.2
_ANSWER_TIMEOUT_S = 5.0


class WorkerPool:
    """Idle and busy trial actors; :meth:`start` checks they came up.

    ``busy`` holds a worker once per trial handed to it: twice when a trial waits behind
    another one on that worker (after a node was lost).

    Example:
        >>> pool = WorkerPool("trials:run", 2, cpus=1, gpus=0)  # doctest: +SKIP
        >>> pool.start(); worker = pool.take(); pool.give_back(worker); pool.stop()  # doctest: +SKIP
    """

    def __init__(self, runner: Any, size: int, *, cpus: float, gpus: float, fresh: bool = False,
                 prepare: dict[str, Any] | None = None):
        self.runner, self.size, self.cpus, self.gpus, self.fresh = runner, size, cpus, gpus, fresh
        #: A trial config each new worker prepares for as it starts (``None``: none).
        self.prepare = prepare
        self.idle: list[Any] = []
        self.busy: list[Any] = []

    def start(self) -> None:
        """Start the actors and wait until each has imported the trial code (and prepared
        for the first trial, with ``prepare``)."""
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
        """A worker for the next trial: an idle one, else the live one with the fewest
        trials queued (the pool shrank with a lost node), else a new one."""
        if not self.idle and not self.busy:
            self.idle.extend(self._spawn(1))
        if self.idle:
            worker = self.idle.pop()
        else:
            worker = min(dict.fromkeys(self.busy), key=self.busy.count)
        self.busy.append(worker)
        return worker

    def give_back(self, worker: Any) -> None:
        """A worker finished a trial: idle again once nothing waits on it (or replaced,
        with ``fresh``)."""
        if worker not in self.busy:  # replaced meanwhile
            return
        self.busy.remove(worker)
        if worker in self.busy:  # another trial waits on it
            return
        if self.fresh:
            self._kill(worker)
            self.idle.extend(self._spawn(1))
        else:
            self.idle.append(worker)

    def replace(self, worker: Any) -> None:
        """``worker`` died (or must go): kill what is left of it and start a new one,
        if the cluster still has room for it once Ray has noticed the death."""
        if worker not in self.busy and worker not in self.idle:
            return  # already replaced: a second trial that waited on it
        self.busy = [w for w in self.busy if w != worker]
        if worker in self.idle:
            self.idle.remove(worker)
        states = self._states_once_dead(worker)
        self._kill(worker)
        live = [w for w in dict.fromkeys([*self.idle, *self.busy]) if _live(w, states)]
        room = self._room()
        if live and room is not None and room <= len(live):
            logger.warning(
                "a trial worker was lost and the cluster has room for %d now: trials run "
                "%d at a time (asked: %d)", room, len(live), self.size,
            )
            return
        self.idle.extend(self._spawn(1))

    def stop(self) -> None:
        """Kill every actor; safe to call twice."""
        if not self.idle and not self.busy:
            return
        for worker in dict.fromkeys([*self.idle, *self.busy]):
            self._kill(worker)
        self.idle, self.busy = [], []

    def _spawn(self, n: int) -> list[Any]:
        import ray

        from allocator.search._worker import TrialWorker

        actor: Any = ray.remote(TrialWorker).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, scheduling_strategy="SPREAD"
        )
        return [actor.remote(self.runner, self.prepare) for _ in range(n)]

    @staticmethod
    def _kill(worker: Any) -> None:
        import ray

        with contextlib.suppress(Exception):  # already gone with its node
            ray.kill(worker, no_restart=True)

    def _states_once_dead(self, worker: Any) -> dict[str, str] | None:
        """The states of this job's actors (by id), once Ray's actor table has ``worker``
        dead, or at once if it still answers (a call failed, the actor did not);
        ``None`` where the table cannot be read (Ray Client)."""
        deadline = time.monotonic() + _DEATH_NOTICE_TIMEOUT_S
        answered: bool | None = None
        while True:
            states = _actor_states()
            if states is None or states.get(_actor_hex(worker)) in (None, "DEAD"):
                return states
            if answered is None:
                answered = _answers(worker)
                if answered:
                    return states
                continue
            if time.monotonic() > deadline:
                logger.warning("Ray has not noticed a lost trial worker after %g s",
                               _DEATH_NOTICE_TIMEOUT_S)
                return states
            time.sleep(_POLL_S)

    def _room(self) -> int | None:
        """How many trial workers the live nodes hold (``None``: cannot tell)."""
        import ray

        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
        except Exception:
            return None
        room = 0
        for node in nodes:
            have = node.get("Resources", {})
            fits = [_fits(float(have.get("CPU", 0.0)), self.cpus),
                    _fits(float(have.get("GPU", 0.0)), self.gpus)]
            room += min(fits)
        return room if room < 1 << 30 else None


def _answers(worker: Any) -> bool:
    """Whether the actor answers a call within a few seconds."""
    import ray

    try:
        ray.get(worker.where.remote(), timeout=_ANSWER_TIMEOUT_S)
    except Exception:
        return False
    return True


def _fits(have: float, need: float) -> int:
    return 1 << 30 if need <= 0 else math.floor(have / need + 1e-9)


def _actor_hex(worker: Any) -> str:
    return str(worker._actor_id.hex())


def _actor_states() -> dict[str, str] | None:
    """State (``ALIVE``, ``DEAD``, ...) of each actor of this job, from Ray's actor table."""
    import ray

    try:
        from ray._private import state

        job = ray.get_runtime_context().get_job_id()
        table = state.actors(job_id=ray.JobID.from_hex(job))
        return {key: str(info["State"]) for key, info in table.items()}
    except Exception:
        return None


def _live(worker: Any, states: dict[str, str] | None) -> bool:
    return states is None or states.get(_actor_hex(worker), "ALIVE") != "DEAD"


def last_line(exc: BaseException) -> str:
    """The line of a (remote) traceback that says what went wrong, without colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip() and "^^^" not in line]
    return (lines[-1] if lines else type(exc).__name__)[:300]
