"""The retry of database calls, against a real SQLite file locked by another connection:
it rides out a short lock, gives up in one line after ``db_timeout``, does not repeat a
call that took effect, and lets errors that are not about reaching the database through."""

from __future__ import annotations

import doctest
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

import allocator.search._retry as retry_module
from allocator import StorageError
from allocator.search._retry import DatabaseRetry, transient


def _engine(path: str) -> sa.Engine:
    # a busy timeout of 50 ms: a locked file is an OperationalError almost at once
    return sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})


@pytest.fixture
def locked_db(tmp_path):
    path = str(tmp_path / "x.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    yield path, lock
    lock.close()


def _insert(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))


def test_a_write_waits_out_a_short_lock_and_lands_once(locked_db):
    path, lock = locked_db
    engine = _engine(path)
    threading.Timer(0.6, lambda: lock.execute("COMMIT")).start()
    retry = DatabaseRetry(10.0, "sqlite:///x.db")
    started = time.monotonic()
    retry.call(lambda: _insert(engine), "write")
    assert time.monotonic() - started >= 0.5 and retry.outages == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    engine.dispose()


def test_a_lock_held_past_the_timeout_is_one_storage_error_line(locked_db):
    path, _lock = locked_db
    engine = _engine(path)
    with pytest.raises(StorageError) as info:
        DatabaseRetry(1.0, "sqlite:///x.db").call(lambda: _insert(engine), "record a trial")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("storage 'sqlite:///x.db' unreachable for 1 s (--db-timeout 1)")
    assert "record a trial" in message and "database is locked" in message
    engine.dispose()


def test_a_call_that_took_effect_is_not_repeated():
    calls = []

    def lost_answer() -> None:  # the commit landed, the answer did not
        calls.append(1)
        raise sa.exc.OperationalError("COMMIT", {}, Exception("connection reset"))

    DatabaseRetry(5.0, "u").call(lost_answer, "tell", already=lambda: bool(calls))
    assert calls == [1]


def test_only_errors_about_reaching_the_database_are_retried():
    calls = []

    def bad() -> None:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(sa.exc.IntegrityError):
        DatabaseRetry(5.0, "u").call(bad, "write")
    assert calls == [1]
    import optuna

    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = sa.exc.OperationalError("COMMIT", {}, Exception("server closed"))
    assert transient(wrapped) and not transient(ValueError("x"))


def test_the_stores_one_line_error_is_retried_by_what_it_wraps(tmp_path, locked_db):
    from allocator.search import StudyStore

    store = StudyStore(f"sqlite:///{tmp_path / 's.db'}")
    try:
        for cause, expected in ((sa.exc.OperationalError("COMMIT", {}, Exception("gone")), True),
                                (sa.exc.IntegrityError("INSERT", {}, Exception("dup")), False)):
            with pytest.raises(StorageError) as info, store._errors("write to"):
                raise cause
            assert info.value.__cause__ is None and transient(info.value) is expected
    finally:
        store.close()
    path, _lock = locked_db  # a give-up is final, even inside another retry's call
    engine = _engine(path)
    with pytest.raises(StorageError) as info:
        DatabaseRetry(0.3, "u").call(lambda: _insert(engine), "write")
    assert not transient(info.value)
    engine.dispose()


def test_the_retry_modules_examples_run():
    assert doctest.testmod(retry_module).failed == 0
