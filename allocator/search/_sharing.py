"""Several controllers on one study: who is alive, and one launch at a time.

Any number of ``npas search --resume`` (on one machine or several) may run one study
together. Each controller registers a row in ``npas_controllers`` and refreshes its
heartbeat from a background thread every :data:`HEARTBEAT_S` seconds; each trial it
starts carries its id (user attribute ``npas_controller``, column
``npas_results.controller``). A controller is **gone** when its row says it stopped,
when it ran on this machine (same kernel boot and process namespace) and its process no
longer exists, or else when its heartbeat is older than :data:`GRACE_S` seconds (both
times read from the database's clock, so the machines' clocks do not matter). Only the
running trials of gone controllers, and running trials that no controller claims, are
ever failed as interrupted.

Launching is serialised per study by a lease, a row of ``npas_launch_leases`` taken with
a compare-and-set ``UPDATE`` (no transaction is held across Optuna's own, so this works
on SQLite as well as on a server). Holding it, a controller takes over the trials of gone
controllers, recounts the study from the database, asks Optuna for a trial only while
the counted trials plus the running ones are fewer than ``--trials``, and tags the new
trial with its id before letting go. A lease held by a gone controller is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from allocator.search._table import CONTROLLERS, LAUNCH_LEASES

__all__ = ["ATTR_CONTROLLER", "GRACE_S", "HEARTBEAT_S", "Controller", "db_clock", "process_key"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between two heartbeats of a controller.
HEARTBEAT_S = 5.0
#: A controller on another machine whose heartbeat is older than this is presumed gone.
GRACE_S = 60.0
#: The user attribute naming the controller that started a trial.
ATTR_CONTROLLER = "npas_controller"

_POLL_S = (0.02, 0.1)  # wait between two tries for a lease someone else holds


def db_clock(dialect: str) -> Any:
    """Now, in Unix seconds, by the database's clock (a SQL expression)."""
    if dialect == "postgresql":
        return sa.extract("epoch", sa.func.now())
    if dialect == "sqlite":
        return (sa.func.julianday("now") - 2440587.5) * 86400.0
    if dialect in ("mysql", "mariadb"):
        return sa.func.unix_timestamp(sa.func.now(6))
    return sa.literal(time.time())  # another database: this machine's clock


def process_key(pid: int | None = None) -> str | None:
    """``boot id|pid namespace|pid|start time`` of a process here (``None`` off Linux).

    Two keys with the same first two parts name processes on the same machine, whose
    liveness can be checked directly rather than by heartbeat.
    """
    pid = os.getpid() if pid is None else pid
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        start = _start_time(pid)
    except OSError:
        return None
    return f"{boot}|{namespace}|{pid}|{start}"


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str:
    return _stat(pid)[19]


def _alive_here(key: str | None, mine: str | None) -> bool | None:
    """Whether the process ``key`` still runs, if it is on this machine; else ``None``."""
    if not key or not mine:
        return None
    parts, here = key.split("|"), mine.split("|")
    if len(parts) != 4 or parts[:2] != here[:2]:
        return None  # another machine, or another process namespace
    try:
        fields = _stat(int(parts[2]))
        return fields[19] == parts[3] and fields[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False


class Controller:
    """This controller's registration for ``study``: heartbeat, liveness of all, lease.

    ``call(fn, what)`` runs each database operation (the search passes its retrying
    :class:`~allocator.search._retry.DatabaseRetry`); the heartbeat thread calls the
    database directly and only logs what fails.

    Example:
        >>> controller = Controller(store.engine, "demo")  # doctest: +SKIP
        >>> controller.register()  # doctest: +SKIP
        >>> with controller.lease():  # doctest: +SKIP
        ...     live = controller.live()
        >>> controller.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        engine: sa.Engine,
        study: str,
        *,
        call: Callable[[Callable[[], Any], str], Any] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        grace_s: float = GRACE_S,
    ) -> None:
        self.engine, self.study = engine, study
        self.id = uuid.uuid4().hex
        self.heartbeat_s, self.grace_s = heartbeat_s, grace_s
        self._call = call or (lambda fn, what: fn())
        self._clock = db_clock(engine.dialect.name)
        self._process = process_key()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ registration

    def register(self) -> None:
        """Insert this controller's row and start its heartbeat thread."""

        def insert() -> None:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(CONTROLLERS.c.id).where(CONTROLLERS.c.id == self.id)).first():
                    return  # a commit whose answer was lost
                conn.execute(sa.insert(CONTROLLERS).values(
                    id=self.id, study=self.study, host=socket.gethostname()[:256], pid=os.getpid(),
                    process=self._process, started_at=self._clock, heartbeat_at=self._clock,
                    state="running",
                ))

        self._call(insert, "register the controller")
        self._thread = threading.Thread(target=self._beat, name="npas-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.update(CONTROLLERS).where(CONTROLLERS.c.id == self.id)
                                 .values(heartbeat_at=self._clock))
            except Exception as exc:  # the database away: the search's own calls retry
                logger.debug("heartbeat not recorded: %s", exc)

    def stop(self) -> None:
        """Stop the heartbeat and mark this controller stopped (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.update(CONTROLLERS).where(CONTROLLERS.c.id == self.id)
                             .values(state="stopped", heartbeat_at=self._clock))
        except Exception as exc:  # gone with the database: others see the stale heartbeat
            logger.debug("could not mark controller %s stopped: %s", self.id, exc)

    # ------------------------------------------------------------ liveness

    def live(self) -> list[str]:
        """Ids of the study's live controllers (this one included), oldest first."""
        return list(self._call(self._read_live, "read the study's controllers"))

    def _read_live(self) -> list[str]:
        with self.engine.connect() as conn:
            now = float(conn.execute(sa.select(self._clock)).scalar_one())
            rows = conn.execute(
                sa.select(CONTROLLERS).where(CONTROLLERS.c.study == self.study)
                .order_by(CONTROLLERS.c.started_at, CONTROLLERS.c.id)
            ).all()
        return [r.id for r in rows if r.id == self.id or self._alive(r, now)]

    def _alive(self, row: Any, now: float) -> bool:
        if row.state != "running":
            return False
        here = _alive_here(row.process, self._process)
        if here is not None:
            return here
        return row.heartbeat_at is not None and now - float(row.heartbeat_at) <= self.grace_s

    # ------------------------------------------------------------ the lease

    @contextlib.contextmanager
    def lease(self, timeout_s: float | None = None, *, retry: bool = True) -> Iterator[None]:
        """Hold the study's launch lease (waiting for it); :class:`TimeoutError` after
        ``timeout_s`` seconds without it. Without ``retry`` a database error is raised at
        once rather than retried."""
        call = self._call if retry else (lambda fn, what: fn())
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not call(self._try_lease, "take the launch lease"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the launch lease of study {self.study!r} stayed taken")
            time.sleep(random.uniform(*_POLL_S))
        try:
            yield
        finally:
            call(self._release, "release the launch lease")

    def _try_lease(self) -> bool:
        table, key = LAUNCH_LEASES, LAUNCH_LEASES.c.study == self.study
        free = sa.or_(table.c.holder.is_(None), table.c.holder == self.id)
        with self.engine.begin() as conn:
            if conn.execute(sa.update(table).where(key, free)
                            .values(holder=self.id, since=self._clock)).rowcount:
                return True
            row = conn.execute(sa.select(table.c.holder).where(key)).first()
        if row is None:  # the study's first lease
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(table).values(study=self.study, holder=self.id,
                                                         since=self._clock))
                return True
            except sa.exc.IntegrityError:
                return False  # another controller inserted it first
        if row.holder in self._read_live():
            return False
        logger.info("taking over the launch lease of gone controller %s", row.holder)
        with self.engine.begin() as conn:  # only if nobody took it meanwhile
            return bool(conn.execute(sa.update(table).where(key, table.c.holder == row.holder)
                                     .values(holder=self.id, since=self._clock)).rowcount)

    def _release(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(LAUNCH_LEASES)
                         .where(LAUNCH_LEASES.c.study == self.study,
                                LAUNCH_LEASES.c.holder == self.id)
                         .values(holder=None))
