"""`npas search --resume` after the controller was SIGKILLed: completed trials are kept
as they were, trials left running are failed and retried once, nothing is duplicated."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from allocator.search import StudyStore
from allocator.search._recovery import trial_id as storage_trial_id
from tests.conftest import REPO, kill_processes_under

NPAS = str(Path(sys.executable).with_name("npas"))
SPACE = """
fixed: {method: ssn, downsample: slice}
dims:
  budget: {type: float, low: 0.2, high: 1.0, log: true}
  mapping: [single, type, roundrobin]
  groups: {low: 2, high: 3, when: {mapping: [roundrobin]}}
  upsample: [repeat, inter]
"""


def _states(db: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT state FROM npas_results")]
    except sqlite3.Error:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pool", "tune"])
def test_resume_after_sigkill_loses_no_completed_trial_and_duplicates_none(tmp_path, engine):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path / "npas.db"
    url = f"sqlite:///{db}"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    ray_tmp = Path(f"/tmp/npas-k-{secrets.token_hex(4)}")  # this test's own Ray processes
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}
    command = [
        NPAS, "search", "--study", "r", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", str(space), "--trials", "6", "--concurrency", "2",
        "--epochs", "1", "--data-size", "1500", "--max-steps-per-epoch", "25", "--engine", engine,
    ]
    try:
        with open(tmp_path / "first.err", "w") as err:
            first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 180
            while _states(db).count("complete") < 2 or "running" not in _states(db):
                assert first.poll() is None, (tmp_path / "first.err").read_text()[-2000:]
                assert time.monotonic() < deadline, "the first run never got 2 trials done"
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        kill_processes_under(str(ray_tmp))  # the local Ray the killed controller started

        with StudyStore(url, must_exist=True) as store:
            before = store.load_study("r").get_trials()
            rows_before = {r["trial_number"]: r for r in store.results("r")}
        done_before = {t.number: t for t in before if t.state.name == "COMPLETE"}
        running_before = [t.number for t in before if t.state.name == "RUNNING"]
        assert len(done_before) >= 2 and running_before

        resumed = subprocess.run(
            [NPAS, "search", "--study", "r", "--resume", "--storage", url],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]

        with StudyStore(url, must_exist=True) as store:
            after = store.load_study("r").get_trials()
            rows = {r["trial_number"]: r for r in store.results("r")}
        by_number = {t.number: t for t in after}
        # every trial completed before the kill is still there, unchanged
        for number, trial in done_before.items():
            assert by_number[number].state.name == "COMPLETE"
            assert by_number[number].values == trial.values
            assert by_number[number].params == trial.params
            assert rows[number]["state"] == "complete"
            if rows_before[number]["state"] == "complete":
                assert rows[number]["val_accuracy"] == rows_before[number]["val_accuracy"]
            else:  # killed between telling Optuna and writing the row: resume repairs it
                assert rows_before[number]["state"] == "running"
                assert rows[number]["val_accuracy"] == trial.values[0]
        # every trial left running was failed as interrupted; one that had reached a
        # worker is retried exactly once (one killed before it did never ran: not retried)
        for number in running_before:
            assert by_number[number].state.name == "FAIL"
            assert by_number[number].user_attrs["npas_interrupted"] is True
            retries = [t for t in after if t.user_attrs.get("npas_retry_of") == number]
            assert len(retries) == (1 if "npas_config" in by_number[number].user_attrs else 0)
            for retry in retries:
                assert retry.params == by_number[number].params and retry.state.is_finished()
            if number in rows:  # a row exists once the trial was handed to a worker
                assert rows[number]["state"] == "failed"
                assert "interrupted" in rows[number]["failure_reason"]
        assert any("npas_config" in by_number[n].user_attrs for n in running_before)
        # the resumed sampler does not replay the first run's draws
        fresh = [t.params for t in after if t.number > max(before, key=lambda t: t.number).number
                 and "npas_retry_of" not in t.user_attrs]
        assert not [p for p in fresh if p in [t.params for t in before]]
        # six trials count, none twice: one row per Optuna trial, nothing left running
        counted = [t for t in after if t.state.is_finished()
                   and not t.user_attrs.get("npas_interrupted")]
        assert len(counted) == 6
        assert set(rows) <= set(by_number)
        assert set(by_number) - set(rows) <= set(running_before)  # asked, never handed out
        assert not [t for t in after if not t.state.is_finished()]
        assert {r["state"] for r in rows.values()} <= {"complete", "failed"}
        assert {r["engine"] for r in rows.values() if r["state"] == "complete"} == {engine}
    finally:
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_recover_retries_what_ran_once_and_owes_retries_that_never_ran(tmp_path):
    from allocator.search._recovery import counted, recover

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with StudyStore(f"sqlite:///{tmp_path / 'npas.db'}") as store:
        store.initialise()
        study = optuna.create_study(storage=store.optuna_storage, study_name="s",
                                    directions=["maximize", "minimize"])
        from allocator.search._table import row_for

        # killed between telling Optuna and writing the final row: the row says running
        done = study.ask({"budget": optuna.distributions.FloatDistribution(0.1, 1.0)})
        store.write_result(row_for(study="s", trial_number=done.number, trial_id=storage_trial_id(store, "s", done.number),
                                   state="running", config={"budget": 0.5}))
        done.set_user_attr("npas_result", {"status": "complete", "val_accuracy": 0.5,
                                           "trainable_params": 10, "config": {"budget": 0.5}})
        done.set_user_attr("npas_worker", {"pid": 7, "started_at": 100.0, "finished_at": 102.5})
        done.set_user_attr("npas_host", "h")
        study.tell(done, [0.5, 10])
        ran = study.ask({"budget": optuna.distributions.FloatDistribution(0.1, 1.0)})
        ran.set_user_attr("npas_config", {"budget": ran.params["budget"]})
        never = study.ask({"budget": optuna.distributions.FloatDistribution(0.1, 1.0)})
        study.enqueue_trial({"budget": 0.3}, user_attrs={"npas_retry_of": 99})
        owed = study.ask({"budget": optuna.distributions.FloatDistribution(0.1, 1.0)})
        study.enqueue_trial({"budget": 0.4}, user_attrs={"npas_retry_of": 98})
        spent = study.ask({"budget": optuna.distributions.FloatDistribution(0.1, 1.0)})
        spent.set_user_attr("npas_config", {"budget": 0.4})

        failed = recover(study, store, reason="stopped")

        assert failed == [ran.number, never.number, owed.number, spent.number]
        trials = study.get_trials()
        assert trials[done.number].state.name == "COMPLETE" and counted(trials[done.number])
        assert not any(counted(trials[n]) for n in failed)
        waiting = [t for t in trials if t.state.name == "WAITING"]
        assert sorted((t.user_attrs["npas_retry_of"], t.system_attrs["fixed_params"]["budget"])
                      for t in waiting) == sorted([(ran.number, ran.params["budget"]), (99, 0.3)])
        rows = {r["trial_number"]: r for r in store.results("s")}
        assert rows[done.number]["state"] == "complete"
        assert (rows[done.number]["val_accuracy"], rows[done.number]["duration_s"],
                rows[done.number]["worker_pid"], rows[done.number]["host"]) == (0.5, 2.5, 7, "h")
        assert rows[ran.number]["failure_reason"] == "interrupted: stopped; queued again"
        assert rows[spent.number]["failure_reason"] == "interrupted: stopped"


def test_a_read_left_open_by_a_signal_does_not_stop_the_trials_being_marked(tmp_path):
    """A signal raised inside a read can leave its statement open on a pooled SQLite
    connection, holding the read's snapshot: once another connection writes, that
    connection's next write fails at once (SQLITE_BUSY_SNAPSHOT). ``reconnect`` (which
    the controller calls before marking the trials in flight) lets it go."""
    from allocator.search._recovery import interrupt_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with StudyStore(f"sqlite:///{tmp_path / 'npas.db'}") as store:
        store.initialise()
        study = optuna.create_study(storage=store.optuna_storage, study_name="s")
        running = [study.ask().number for _ in range(3)]

        def leave_a_read_open() -> sqlite3.Cursor:
            conn = store.optuna_storage.engine.raw_connection()
            cursor = conn.driver_connection.execute("SELECT trial_id FROM trials")
            cursor.fetchone()  # the statement stays open, its snapshot with it
            conn.close()  # back to the pool, as the interrupted call's session did
            study.set_user_attr("written", len(running))  # another connection writes
            return cursor

        held = leave_a_read_open()
        with pytest.raises(optuna.exceptions.StorageInternalError, match="commit"):
            interrupt_trial(study, store, running[0], "stopped")  # the failure it fixes
        store.reconnect()
        assert interrupt_trial(study, store, running[1], "stopped")
        assert study.get_trials()[running[1]].user_attrs["npas_interrupted"] is True
        del held


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_pool_search_stopped_by_a_signal_marks_its_trials_and_resumes_to_the_requested_trials(
        tmp_path, sig):
    """Ctrl-C or SIGTERM on the actor pool: exit 130 / 143, the trials in flight failed as
    interrupted at once (none left running) and queued again once; ``--resume`` ends
    with exactly ``--trials`` counted trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path / "npas.db"
    url = f"sqlite:///{db}"
    ray_tmp = Path(f"/tmp/npas-s-{secrets.token_hex(4)}")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}
    # 40 epochs (about 2 s a trial on a fast machine): long enough that the signal lands
    # while trials run. At 2 and at 10 epochs a fast machine, loaded by the rest of the
    # suite, finished all 4 trials before the signal came, and the search exited 0.
    command = [
        NPAS, "search", "--study", "p", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", "lowbudget", "--trials", "4", "--concurrency", "2",
        "--epochs", "40", "--data-size", "1500", "--max-steps-per-epoch", "25",
    ]
    try:
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while "complete" not in _states(db) or "running" not in _states(db):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first run never got a trial done"
            time.sleep(0.05)
        first.send_signal(sig)
        _, err = first.communicate(timeout=120)
        assert first.returncode == (130 if sig == signal.SIGINT else 143), err[-3000:]
        assert ("npas: interrupted" if sig == signal.SIGINT else "npas: terminated") in err
        assert "could not mark" not in err, err[-3000:]
        with StudyStore(url, must_exist=True) as store:
            trials = store.load_study("p").get_trials()
        interrupted = [t for t in trials if t.user_attrs.get("npas_interrupted")]
        assert interrupted and not [t for t in trials if t.state.name == "RUNNING"], err[-3000:]
        assert all(t.state.name == "FAIL" for t in interrupted)

        resumed = subprocess.run([NPAS, "search", "--study", "p", "--resume", "--storage", url],
                                 env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    with StudyStore(url, must_exist=True) as store:
        trials = store.load_study("p").get_trials()
        rows = {r["trial_number"]: r for r in store.results("p")}
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("npas_interrupted")]
    assert len(counted) == 4 and not [t for t in trials if not t.state.is_finished()]
    for t in interrupted:  # each that reached a worker ran again once, with its params
        retries = [r for r in trials if r.user_attrs.get("npas_retry_of") == t.number]
        assert len(retries) == (1 if "npas_config" in t.user_attrs else 0)
        assert all(r.params == t.params for r in retries)
        if t.number in rows:
            assert rows[t.number]["state"] == "failed"
            assert "interrupted" in rows[t.number]["failure_reason"]
