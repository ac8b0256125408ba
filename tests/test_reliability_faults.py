"""Faults inside and under a trial, with real processes: a trial that diverges, one whose
model cannot be allocated (out of memory, raised inside the trial), and a Ray worker
process SIGKILLed mid-trial. Each is a failed trial with its reason in both tables, or a
retried one; the search goes on and nothing is left running."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
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

#: full/hashed x a sane and an absurd learning rate; the hashed array of 2e7 x the
#: model's parameters (~416 GB) is refused by the allocator inside the trial.
FAULTY_SPACE = {
    "fixed": {"budget": 2e7, "grad_clip": 0.0},  # unclipped, so that 1e6 diverges
    "dims": {"method": ["full", "hashed"], "lr": {"type": "choice", "values": [0.05, 1e6]}},
}


def _both_tables(url: str, study: str) -> tuple[dict[int, optuna.trial.FrozenTrial], dict[int, dict]]:
    with StudyStore(url, must_exist=True) as store:
        trials = {t.number: t for t in store.load_study(study).get_trials()}
        rows = {r["trial_number"]: r for r in store.results(study)}
    return trials, rows


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pool", "tune"])
def test_diverging_and_out_of_memory_trials_are_failed_with_reasons_and_the_search_goes_on(
    tmp_path, engine
):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    summary = run_search(SearchSettings(
        study="faults", model="cnn1d", data="mnist1d", space=FAULTY_SPACE, sampler="grid",
        trials=4, concurrency=2, epochs=1, storage=url, trial_options=TINY, engine=engine,
    ))
    assert (summary.complete, summary.failed) == (1, 3)
    trials, rows = _both_tables(url, "faults")
    assert sorted(trials) == sorted(rows) == [0, 1, 2, 3]
    assert {r["engine"] for r in rows.values()} == {engine}
    by_kind = {(t.params["method"], t.params["lr"]): n for n, t in trials.items()}
    ok = by_kind[("full", 0.05)]
    assert trials[ok].state.name == "COMPLETE" and rows[ok]["state"] == "complete"
    diverged = by_kind[("full", 1e6)]
    memory = [by_kind[("hashed", 0.05)], by_kind[("hashed", 1e6)]]
    for n in [diverged, *memory]:
        assert trials[n].state.name == "FAIL" and rows[n]["state"] == "failed"
        assert rows[n]["failure_reason"] == trials[n].user_attrs["npas_failure_reason"]
        assert rows[n]["finished_at"] is not None and rows[n]["worker_pid"]
    assert "loss diverged (nan)" in rows[diverged]["failure_reason"]
    for n in memory:
        assert "can't allocate memory" in rows[n]["failure_reason"]
        assert rows[n]["failure_reason"].startswith("RuntimeError")


def _running_trial_pids(marker: str) -> list[int]:
    return ray_processes(marker, 'TrialWorker.run')


def _kill_next_trial_worker(marker: str, killed: list[int], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while True:
        fresh = [p for p in _running_trial_pids(marker) if p not in killed]
        if fresh:
            os.kill(fresh[0], signal.SIGKILL)
            killed.append(fresh[0])
            return
        assert proc.poll() is None, "the search ended before its worker could be killed"
        assert time.monotonic() < deadline, "no trial worker started within 120 s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_then_failed_and_nothing_stays_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    space = tmp_path / "space.yaml"  # plain models: every run trains for a few seconds
    space.write_text("fixed: {method: full}\ndims: {lr: [0.05, 0.1]}\n")
    ray_tmp = Path(f"/tmp/npas-w-{secrets.token_hex(4)}")  # this test's own Ray processes
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}
    command = [
        NPAS, "search", "--study", "kill", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", str(space), "--sampler", "random",
        "--trials", "2", "--concurrency", "1", "--epochs", "20", "--data-size", "3000",
        "--max-steps-per-epoch", "200", "--max-retries", "1",
    ]
    killed: list[int] = []
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # trial 0: killed on its first run and on its retry -> failed
        _kill_next_trial_worker(str(ray_tmp), killed, proc)
        _kill_next_trial_worker(str(ray_tmp), killed, proc)
        # trial 1: killed once, its retry completes
        _kill_next_trial_worker(str(ray_tmp), killed, proc)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    finally:
        kill_processes_under(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert len(set(killed)) == 3
    trials, rows = _both_tables(url, "kill")
    assert sorted(trials) == sorted(rows) == [0, 1]  # no extra trial for a retry
    assert trials[0].state.name == "FAIL" and rows[0]["state"] == "failed"
    assert trials[0].user_attrs["npas_attempts"] == 2
    assert rows[0]["failure_reason"].startswith("worker lost on each of 2 attempts")
    assert rows[0]["failure_reason"] == trials[0].user_attrs["npas_failure_reason"]
    assert trials[1].state.name == "COMPLETE" and rows[1]["state"] == "complete"
    assert trials[1].user_attrs["npas_attempts"] == 2
    assert rows[1]["worker_pid"] not in killed
    assert "2/2 done" in err and "1 failed" in err
