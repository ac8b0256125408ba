"""Database calls that outlive a database that goes away for a while.

The controller is the only writer. When the study store stops answering (a server
restarted, connections refused or cut, a SQLite file locked past its busy timeout), each
write is retried with exponential backoff until the database answers again or
``db_timeout`` seconds have passed since the first failure; only then does the search
stop, with one :class:`~allocator.StorageError` line. Meanwhile results of finished
trials wait in memory (in Ray's object store) and are written, in order, when the
database returns. Errors that are not about reaching the database (an integrity error,
a bad value) are raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from allocator._errors import StorageError

__all__ = ["DatabaseRetry", "transient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_DELAY_S, _MAX_DELAY_S = 0.25, 5.0
# SQLAlchemy's error code for "Can't reconnect until invalid transaction is rolled back"
# (https://sqlalche.me/e/20/8s2b): a statement on a connection that went away mid-transaction
_LOST_IN_TRANSACTION = "8s2b"


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (worth retrying).

    Example:
        >>> import sqlalchemy as sa
        >>> transient(sa.exc.OperationalError("SELECT 1", {}, Exception("locked")))
        True
        >>> transient(ValueError("bad value"))
        False
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa.exc.IntegrityError):
            return False
        if isinstance(current, (sa.exc.OperationalError, sa.exc.InterfaceError,
                                sa.exc.TimeoutError, sa.exc.DisconnectionError)):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.exc.PendingRollbackError) and current.code == _LOST_IN_TRANSACTION:
            return True  # the connection was lost inside a transaction and reused (Optuna's
            # fallback query after a failed one); the session is rolled back on the way out
        if isinstance(current, StorageError):  # npas's own one-line wrapper (the store's
            # ``_errors``) raises ``from None``: what it wrapped is still its context
            current = current.__cause__ or current.__context__
            continue
        current = current.__cause__  # optuna's StorageInternalError wraps it as the cause
    return False


class DatabaseRetry:
    """Call database operations, retrying with backoff for up to ``timeout_s`` seconds.

    Example:
        >>> retry = DatabaseRetry(5.0, "sqlite:///npas.db")
        >>> retry.call(lambda: 42, "read")
        42
    """

    def __init__(
        self,
        timeout_s: float,
        masked_url: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout_s, self.masked_url, self._sleep = timeout_s, masked_url, sleep
        self.outages = 0  # how many times the database went away (for logs and tests)

    def call(
        self, fn: Callable[[], T], what: str, *, already: Callable[[], bool] | None = None
    ) -> T:
        """``fn()``, retried while the database is unreachable.

        ``already`` (checked before each retry) says whether an earlier attempt did take
        effect although it raised (a commit whose answer was lost): then ``fn`` is not
        repeated and ``None`` is returned.
        """
        first: float | None = None
        delay = _FIRST_DELAY_S
        gave_up = ""
        while True:
            try:
                if first is not None and already is not None and already():
                    return None  # type: ignore[return-value]
                result = fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.monotonic()
                if first is None:
                    first = now
                    self.outages += 1
                    logger.warning(
                        "storage %r unreachable (%s); retrying for up to %g s",
                        self.masked_url, _one_line(exc), self.timeout_s,
                    )
                waited = now - first
                if waited >= self.timeout_s:
                    gave_up = (
                        f"storage {self.masked_url!r} unreachable for {waited:.0f} s "
                        f"(--db-timeout {self.timeout_s:g}) while trying to {what}; "
                        f"last error: {_one_line(exc)}"
                    )
                    break
                self._sleep(min(delay, self.timeout_s - waited))
                delay = min(delay * 2, _MAX_DELAY_S)
                continue
            if first is not None:
                logger.warning(
                    "storage %r answers again after %.1f s", self.masked_url,
                    time.monotonic() - first,
                )
            return result
        # raised outside the handler: no context, so that an enclosing retry (a nested
        # call) does not take the give-up itself for an outage to wait out
        raise StorageError(gave_up)


def _one_line(exc: BaseException) -> str:
    cause: BaseException = exc
    while type(cause).__name__ == "StorageInternalError" and cause.__cause__ is not None:
        cause = cause.__cause__
    orig = getattr(cause, "orig", None) or cause
    text = " ".join(str(orig).split())
    return (text or type(orig).__name__)[:200]
