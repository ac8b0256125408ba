"""`npas search --engine tune`: kept weights that `npas export` uses, a Tune trial whose
actor process is killed mid-trial going on from its last epoch's checkpoint, and a Tune
search interrupted by a signal and resumed to exactly the trials it was asked for. Real
Ray, real Tune, real SQLite."""

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

from allocator.search import SearchSettings, StudyStore, run_search
from tests.conftest import REPO, kill_processes_under, ray_processes

NPAS = str(Path(sys.executable).with_name("npas"))
TINY = {"data_size": 600, "max_steps_per_epoch": 3, "batch_size": 32}


def _query(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return list(conn.execute(sql))
    except sqlite3.Error:  # not created yet
        return []


def _own_ray() -> tuple[Path, dict[str, str]]:
    """A Ray temp dir of this test's own (its processes name it) and the CLI's env."""
    ray_tmp = Path(f"/tmp/npas-t-{secrets.token_hex(4)}")
    return ray_tmp, {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_tune_keeps_weights_and_export_uses_them(tmp_path) -> None:
    from allocator.search import export_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    art = tmp_path / "art"
    summary = run_search(SearchSettings(
        study="k", model="cnn1d", data="mnist1d", space="lowbudget", trials=2, concurrency=1,
        epochs=1, storage=url, trial_options=TINY, engine="tune", keep_models="all",
        artifacts=str(art),
    ))
    assert summary.complete == 2 and summary.artifacts == str(art)
    with StudyStore(url, must_exist=True) as store:
        trials = store.load_study("k").get_trials()
        from optuna.artifacts import get_all_artifact_meta

        kept = {t.number: get_all_artifact_meta(t, storage=store.optuna_storage) for t in trials}
        rows = store.results("k")
    assert {r["engine"] for r in rows} == {"tune"}
    assert all(len(metas) == 1 for metas in kept.values()), kept  # one weights file per trial
    out = tmp_path / "model.pt"
    done = export_model("k", 0, out, storage=url)
    assert done["source"] == "kept" and out.stat().st_size > 0
    # the kept weights are the trained ones: the exported module has the trial's parameters
    import torch

    state = torch.load(out, weights_only=True)
    assert sum(v.numel() for v in state.values()) > 0
    # the weights went to the artifacts, not into Tune's kept results
    tune_dir = tmp_path / "npas-tune"
    assert not [p for p in tune_dir.rglob("*.json") if b"npas_model" in p.read_bytes()]


def _trial_actors(marker: str) -> list[int]:
    return ray_processes(marker, 'ray::ImplicitFunc')


@pytest.mark.slow
def test_a_tune_trial_whose_actor_is_killed_goes_on_from_its_last_epoch(tmp_path) -> None:
    db = tmp_path / "npas.db"
    url = f"sqlite:///{db}"
    space = tmp_path / "space.yaml"
    space.write_text("fixed: {method: full}\ndims: {lr: [0.05, 0.1]}\n")
    ray_tmp, env = _own_ray()
    command = [
        NPAS, "search", "--study", "kill", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", str(space), "--sampler", "random", "--engine", "tune",
        "--trials", "1", "--concurrency", "1", "--epochs", "8", "--data-size", "1500",
        "--max-steps-per-epoch", "40", "--max-retries", "1",
    ]
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        # two epochs recorded (their checkpoints reported with them): kill the trial's actor
        while len(_query(db, "SELECT 1 FROM trial_intermediate_values")) < 2:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the trial never reached its second epoch"
            time.sleep(0.05)
        actors = _trial_actors(str(ray_tmp))
        assert len(actors) == 1, actors
        os.kill(actors[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    finally:
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    with StudyStore(url, must_exist=True) as store:
        (trial,) = store.load_study("kill").get_trials()
        (row,) = store.results("kill")
    assert trial.state.name == "COMPLETE" and row["state"] == "complete"
    assert row["worker_pid"] != actors[0]  # it ended on a new actor
    # it went on from the checkpoint of an epoch it had finished, not from scratch
    resumed = trial.user_attrs.get("npas_resumed_from")
    assert resumed is not None and 1 <= resumed < 8, trial.user_attrs
    history = trial.user_attrs["npas_result"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, 9))  # each epoch once
    assert sorted(trial.intermediate_values) == list(range(1, 9))


def _driver_log_tail(ray_tmp: Path, lines: int = 40) -> str:
    """The end of the driver's Ray core log (how the process left, where Python did not
    say), for a failure's message."""
    logs = sorted(ray_tmp.glob("ray/session_2*/logs/python-core-driver-*.log"))
    tail = [f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in logs]
    return "\n" + "\n".join(tail)


def _counted(url: str, study: str) -> tuple[list, list]:
    with StudyStore(url, must_exist=True) as store:
        trials = store.load_study(study).get_trials()
        rows = store.results(study)
    return trials, rows


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_tune_search_interrupted_by_a_signal_resumes_to_the_requested_trials(tmp_path, sig):
    """SIGINT: Tune saves its state and ``--resume`` restores the run (the trials in flight
    go on as the same trials); SIGTERM: they are failed as interrupted and run again once."""
    db = tmp_path / "npas.db"
    url = f"sqlite:///{db}"
    ray_tmp, env = _own_ray()
    # 10 epochs: trials long enough that the signal lands while some run (the pool's twin
    # test, at 2 epochs, saw a fast machine finish all 4 right after the first and exit 0)
    command = [
        NPAS, "search", "--study", "i", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", "lowbudget", "--trials", "4", "--concurrency", "2",
        "--epochs", "10", "--data-size", "1500", "--max-steps-per-epoch", "25",
        "--engine", "tune",
    ]
    try:
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while True:  # one trial done and one running
            states = [r[0] for r in _query(db, "SELECT state FROM npas_results")]
            if "complete" in states and "running" in states:
                break
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run never got a trial done"
            time.sleep(0.05)
        first.send_signal(sig)
        _, err = first.communicate(timeout=120)
        # SIGINT: 130; SIGTERM: 143 (npas's handler, kept over Ray's, whose SystemExit(15)
        # came out as status 1 where the signal fell inside a blocking Ray call)
        assert first.returncode == (130 if sig == signal.SIGINT else 143), (
            err[-3000:] + _driver_log_tail(ray_tmp))
        trials, rows = _counted(url, "i")
        with StudyStore(url, must_exist=True) as store:
            mark = store.load_study("i").user_attrs.get("npas_tune_restore")
        running = [t.number for t in trials if t.state.name == "RUNNING"]
        interrupted = [t.number for t in trials if t.user_attrs.get("npas_interrupted")]
        if sig == signal.SIGINT:  # left to Tune's restore, listed for --resume
            assert running and not interrupted, err[-3000:]
            assert sorted(mark["trials"]) == running and mark["target"] == 4
        else:  # failed as interrupted at once, queued again
            assert interrupted and not running and mark is None, err[-3000:]

        resumed = subprocess.run([NPAS, "search", "--study", "i", "--resume", "--storage", url],
                                 env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    trials, rows = _counted(url, "i")
    by_number = {t.number: t for t in trials}
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("npas_interrupted")]
    assert len(counted) == 4, resumed.stderr[-3000:]  # exactly the trials asked for
    assert not [t for t in trials if not t.state.is_finished()]
    # every trial recorded once: one row per Optuna trial, its state the trial's
    assert sorted(r["trial_number"] for r in rows) == sorted(by_number)
    for r in rows:
        state = by_number[r["trial_number"]].state.name
        assert r["state"] == {"FAIL": "failed", "COMPLETE": "complete", "PRUNED": "pruned"}[state]
    assert {r["engine"] for r in rows} == {"tune"}
    retries = [t.user_attrs.get("npas_retry_of") for t in trials]
    if sig == signal.SIGINT:  # the same trials went on: no retry, nothing failed
        assert len(trials) == 4 and retries == [None] * 4
        assert all(by_number[n].state.name == "COMPLETE" for n in running)
        with StudyStore(url, must_exist=True) as store:
            assert store.load_study("i").user_attrs.get("npas_tune_restore") is None
    else:
        # each interrupted trial that had started ran again once, as a retry; one the
        # searcher had asked for but Tune had not started yet is replaced by a new trial
        started = [n for n in interrupted if "npas_config" in by_number[n].user_attrs]
        assert started
        for n in interrupted:
            assert retries.count(n) == (1 if n in started else 0)


_SIGTERM_IN_RAY_GET = """
import os, signal, sys, threading, time
import ray
from allocator.cli import terminate
from allocator.search._cluster import connect

signal.signal(signal.SIGTERM, terminate)
cluster = connect(None, concurrency=1)
started = "{tmp}/started"

@ray.remote
def slow():
    open(started, "w").close()
    time.sleep(60)

def kill_when_started():
    while not os.path.exists(started):
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=kill_when_started, daemon=True).start()
try:
    ray.get(slow.remote())  # the signal lands inside this blocking call
except KeyboardInterrupt:
    cluster.shutdown()
    sys.exit(43)
"""


@pytest.mark.slow
def test_sigterm_inside_a_blocking_ray_call_reaches_npass_handler(tmp_path):
    """The handler npas's CLI installs before connecting is put back after ``ray.init``,
    and its KeyboardInterrupt comes through ``ray.get``. Ray's own driver handler, left
    in place, raises SystemExit(15) there, which Ray's signal check turns into status 1
    with no message, or the process aborts (-6) with Ray's C++ SIGTERM dump (both seen
    here, run by hand with the handler not put back)."""
    ray_tmp, env = _own_ray()
    script = _SIGTERM_IN_RAY_GET.replace("{tmp}", str(tmp_path))
    try:
        run = subprocess.run([sys.executable, "-c", script], env=env,
                             capture_output=True, text=True, timeout=180)
    finally:
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert run.returncode == 43, run.stderr[-3000:]  # the KeyboardInterrupt, caught
