"""The study store under stress, with real databases and real searches (`npas search` in
a process of its own): a SQLite file locked by another connection, a dashboard-like
reader looping over the file, a PostgreSQL database that refuses and cuts connections
for a while, and one that stays away past ``--db-timeout``."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from allocator import StorageError
from allocator.search import StudyStore
from tests.conftest import REPO, _pg_admin_url, kill_processes_under

NPAS = str(Path(sys.executable).with_name("npas"))
SPACE = "fixed: {method: full}\ndims: {lr: [0.03, 0.05, 0.1, 0.2]}\n"

pytestmark = pytest.mark.slow


@contextmanager
def _search(tmp_path: Path, url: str, study: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`npas search` of 4 short trials, one at a time, in its own process with its own Ray."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    ray_tmp = Path(f"/tmp/npas-s-{secrets.token_hex(4)}")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}
    command = [
        NPAS, "search", "--study", study, "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", str(space), "--sampler", "grid", "--trials", "4",
        "--concurrency", "1", "--epochs", "2", "--data-size", "2000",
        "--max-steps-per-epoch", "60", *extra,
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _complete_rows(engine: sa.Engine, study: str) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM npas_results WHERE study = :s AND state = 'complete'"
            ), {"s": study}).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0


def _wait_for_complete(engine: sa.Engine, study: str, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while _complete_rows(engine, study) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"the search did not finish {n} trial(s) in 120 s"
        time.sleep(0.05)


def _all_recorded(url: str, study: str, n: int) -> list[dict]:
    with StudyStore(url, must_exist=True) as store:
        trials = store.load_study(study).get_trials()
        rows = store.results(study)
    assert len(trials) == len(rows) == n
    assert all(t.state.is_finished() for t in trials)
    assert [r["state"] for r in rows] == [t.state.name.lower() for t in trials]
    return rows


def test_a_sqlite_file_locked_for_seconds_only_delays_the_search(tmp_path):
    db = tmp_path / "npas.db"
    url = f"sqlite:///{db}"
    engine = sa.create_engine(url)
    try:
        with _search(tmp_path, url, "locked") as proc:
            _wait_for_complete(engine, "locked", 1, proc)
            lock = sqlite3.connect(db, timeout=30, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # every other writer waits now
            time.sleep(4)
            assert proc.poll() is None
            lock.execute("COMMIT")
            lock.close()
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
    finally:
        engine.dispose()
    rows = _all_recorded(url, "locked", 4)
    assert [r["state"] for r in rows] == ["complete"] * 4


def test_a_dashboard_reading_the_sqlite_store_in_a_loop_never_fails_the_search(tmp_path):
    db = tmp_path / "npas.db"
    url = f"sqlite:///{db}"
    stop = threading.Event()
    reads: list[int] = []
    errors: list[str] = []

    def dashboard() -> None:  # what optuna-dashboard and `npas trials` do, in a tight loop
        while not stop.is_set():
            if not db.exists():
                time.sleep(0.05)
                continue
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
                    conn.execute("BEGIN")  # a read transaction held across several queries
                    for table in ("studies", "trials", "trial_values", "trial_user_attributes",
                                  "npas_results"):
                        conn.execute(f"SELECT * FROM {table}").fetchall()
                    time.sleep(0.05)
                    conn.execute("COMMIT")
                storage = optuna.storages.RDBStorage(url)
                for summary in optuna.get_all_study_summaries(storage):
                    study = optuna.load_study(study_name=summary.study_name, storage=storage)
                    assert all(t.number >= 0 for t in study.trials)
                storage.engine.dispose()
                reads.append(1)
            except (sqlite3.OperationalError, sa.exc.OperationalError, KeyError) as exc:
                if "no such table" not in str(exc):  # the search has not created it yet
                    errors.append(str(exc))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reader = threading.Thread(target=dashboard, daemon=True)
    reader.start()
    try:
        with _search(tmp_path, url, "read") as proc:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
    finally:
        stop.set()
        reader.join(timeout=60)
    assert len(reads) > 10 and not errors
    _all_recorded(url, "read", 4)


# --------------------------------------------------------------------------- PostgreSQL


@contextmanager
def _blocked(postgres_url: str) -> Iterator[int]:
    """No new connection to the study's database, and its open ones cut; then allowed again."""
    name = sa.engine.make_url(postgres_url).database
    admin = sa.create_engine(_pg_admin_url() or "", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            cut = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ), {"name": name}).scalar_one()
        yield int(cut)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_a_postgresql_outage_is_ridden_out_and_every_result_is_written(postgres_url, tmp_path):
    engine = sa.create_engine(postgres_url)
    try:
        with _search(tmp_path, postgres_url, "outage", "--db-timeout", "60") as proc:
            _wait_for_complete(engine, "outage", 1, proc)
            engine.dispose()
            with _blocked(postgres_url) as cut:
                assert cut >= 1  # the controller's connections were cut
                time.sleep(6)  # longer than a trial: results wait in memory
                assert proc.poll() is None
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
    finally:
        engine.dispose()
    assert "unreachable" in err and "answers again" in err
    rows = _all_recorded(postgres_url, "outage", 4)
    assert [r["state"] for r in rows] == ["complete"] * 4


def test_the_stores_own_writes_and_reads_wait_out_an_outage_in_the_retry(postgres_url):
    """The store's calls (an ``npas_results`` row, its reads) raise the store's one-line
    StorageError; the search's retry still sees the lost connection under it and waits
    (before, such a write during an outage stopped the search with exit 2)."""
    from allocator.search._retry import DatabaseRetry
    from allocator.search._table import row_for

    store = StudyStore(postgres_url)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            db.call(lambda: store.write_result(row), "record a trial")
        except BaseException as exc:
            errors.append(exc)

    try:
        store.initialise()
        db = DatabaseRetry(60, store.masked_url)
        row = row_for(study="s", trial_number=0, trial_id=1, state="running")
        with _blocked(postgres_url) as cut:
            assert cut >= 1
            with pytest.raises(StorageError):  # what the retry gets
                store.write_result(row)
            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(2)
            assert writer.is_alive() and not errors  # waiting, not given up
        writer.join(timeout=30)
        assert not writer.is_alive() and not errors and db.outages == 1
        assert [r["state"] for r in db.call(lambda: store.results("s"), "read")] == ["running"]
    finally:
        store.close()


def test_a_connection_lost_inside_optunas_read_is_an_outage_not_an_error(postgres_url):
    """Optuna's trial read falls back to a second query on the same session when the first
    fails; after a lost connection that second query raises SQLAlchemy's "Can't reconnect
    until invalid transaction is rolled back" (wrapped in StorageInternalError). The retry
    waits it out like any lost connection (before, the search stopped with exit 2)."""
    from allocator.search._retry import DatabaseRetry

    admin = sa.create_engine(_pg_admin_url() or "", isolation_level="AUTOCOMMIT")
    store = StudyStore(postgres_url)
    cuts: list[int] = []

    def cut_once(conn, cursor, statement, *args) -> None:  # the trials' query, mid-session
        if not cuts and statement.lstrip().startswith("SELECT trials."):
            cuts.append(conn.connection.dbapi_connection.info.backend_pid)
            with admin.connect() as a:
                a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": cuts[0]})

    try:
        store.initialise()
        storage = store.optuna_storage
        study = optuna.create_study(storage=storage, study_name="lost")
        study.enqueue_trial({"x": 1})
        study_id = storage.get_study_id_from_name("lost")
        sa.event.listen(storage.engine, "before_cursor_execute", cut_once)
        with pytest.raises(optuna.exceptions.StorageInternalError) as raised:
            storage.get_all_trials(study_id)  # what the retry is handed
        assert cuts and raised.value.__cause__.code == "8s2b"
        cuts.clear()
        db = DatabaseRetry(30, store.masked_url, sleep=lambda s: None)
        trials = db.call(lambda: storage.get_all_trials(study_id), "read the trials")
        assert len(cuts) == 1 and db.outages == 1 and len(trials) == 1
    finally:
        store.close()
        admin.dispose()


def test_a_postgresql_outage_past_db_timeout_stops_in_one_line_and_loses_nothing(
    postgres_url, tmp_path
):
    engine = sa.create_engine(postgres_url)
    try:
        with _search(tmp_path, postgres_url, "gone", "--db-timeout", "3") as proc:
            _wait_for_complete(engine, "gone", 1, proc)
            before = _complete_rows(engine, "gone")
            engine.dispose()
            with _blocked(postgres_url):
                _, err = proc.communicate(timeout=120)
    finally:
        engine.dispose()
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("npas: error: storage ") and "unreachable for" in last
    assert "--db-timeout 3" in last and "Traceback" not in err
    with StudyStore(postgres_url, must_exist=True) as store:
        rows = store.results("gone")
    assert sum(r["state"] == "complete" for r in rows) >= before
