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
#: How long a lost worker may go undeclared dead by Ray: a node that stopped
#: answering is declared dead only after Ray's health checks (about 15-30 s by default),
#: and only then does the cluster's size say whether a replacement fits.
_DEATH_NOTICE_TIMEOUT_S = 120.0
_POLL_S = 0.2
_ANSWER_TIMEOUT_S = 1.0


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
        self._await_death_notice(worker)
        self._kill(worker)
        live = _not_dead(list(dict.fromkeys([*self.idle, *self.busy])))
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

    def _await_death_notice(self, worker: Any) -> None:
        """Wait until Ray says ``worker`` died (a node that stopped answering is declared
        dead only after Ray's health checks), or until it answers (a call failed, the
        actor did not): asked through the actor handle itself."""
        deadline = time.monotonic() + _DEATH_NOTICE_TIMEOUT_S
        while _fate(worker, max(0.0, deadline - time.monotonic())) == "unknown":
            if time.monotonic() > deadline:
                logger.warning("Ray has not noticed a lost trial worker after %g s",
                               _DEATH_NOTICE_TIMEOUT_S)
                return
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


def _fate(worker: Any, timeout_s: float) -> str:
    """``dead`` (Ray declared the actor dead), ``alive`` (it answered) or ``unknown``
    (no answer within ``timeout_s``, or its node is unreachable and not yet declared dead)."""
    import ray

    ref = worker.where.remote()
    ready, _ = ray.wait([ref], num_returns=1, timeout=timeout_s)
    if not ready:
        return "unknown"
    try:
        ray.get(ready[0])
    except ray.exceptions.ActorUnavailableError:
        return "unknown"
    except ray.exceptions.RayActorError:
        return "dead"
    except Exception:
        return "unknown"
    return "alive"


def _not_dead(workers: list[Any]) -> list[Any]:
    """The workers Ray has not declared dead: each is asked where it runs; a live busy
    one answers only after its trial (its calls run one after the other), so only an
    answer that it died within a second counts."""
    import ray

    refs = [w.where.remote() for w in workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=_ANSWER_TIMEOUT_S) if refs else ([], [])
    dead = set()
    for ref in ready:
        try:
            ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            pass
        except ray.exceptions.RayActorError:
            dead.add(ref)
        except Exception:  # any other failure: not a death notice
            pass
    return [w for w, ref in zip(workers, refs, strict=True) if ref not in dead]


def _fits(have: float, need: float) -> int:
    return 1 << 30 if need <= 0 else math.floor(have / need + 1e-9)


def last_line(exc: BaseException) -> str:
    """The line of a (remote) traceback that says what went wrong, without colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip() and "^^^" not in line]
    return (lines[-1] if lines else type(exc).__name__)[:300]
