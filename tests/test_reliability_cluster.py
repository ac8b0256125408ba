"""A Ray node lost mid-search, with real processes: a two-node cluster (token auth, on
loopback) started by the test; once a trial runs on the second node, every process of
that node (its raylet, agents and workers) is SIGKILLed. The trial it ran is retried on
the surviving node (same Optuna trial) from its last epoch's checkpoint; the search
finishes with every trial recorded and nothing left running."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from allocator.search import StudyStore
from tests.conftest import (
    RayCluster,
    _alive,
    _pids_under,
    cluster_root,
    descendants,
    kill_processes_under,
    two_node_commands,
)

NPAS = str(Path(sys.executable).with_name("npas"))

#: Ray notices a node that stopped answering after about period x threshold; its
#: defaults (3 s x 5) would add ~15 s to the test. Only this test's cluster gets these.
FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


@dataclass
class BreakableCluster(RayCluster):
    """A head node (resource ``node_a``) and a second node (``node_b``) that the test
    can kill: ``ray start --block`` in its own process group, ``worker`` its pid."""

    worker: subprocess.Popen[bytes]

    def worker_pids(self) -> list[int]:
        """The second node's processes: its ``ray start --block`` and all descendants."""
        return sorted(p for p in descendants({self.worker.pid}) if _alive(p))

    def kill_worker_node(self) -> list[int]:
        """SIGKILL every process of the second node at once (a machine that vanished)."""
        pids = self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.worker.wait(timeout=30)
        return pids


@pytest.fixture
def breakable_cluster() -> Iterator[BreakableCluster]:
    """This test's own two nodes (1 CPU each), stopped by their process ids."""
    root, env = cluster_root("npas-rk", **FAST_NODE_DEATH)
    address, head, worker_cmd = two_node_commands(root, block=True)
    worker: subprocess.Popen[bytes] | None = None
    try:
        run = subprocess.run(head, env=env, capture_output=True, text=True, timeout=180)
        if run.returncode != 0:
            raise RuntimeError(f"ray start --head failed:\n{run.stdout}\n{run.stderr}")
        worker = subprocess.Popen(
            worker_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        cluster = BreakableCluster(address=address, env=env, temp_dir=root, worker=worker)
        deadline = time.monotonic() + 60
        while len(cluster.node_ids()) < 2:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the second Ray node did not join within 60 s")
            time.sleep(0.5)
        yield cluster
    finally:
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        kill_processes_under(str(root))
        shutil.rmtree(root, ignore_errors=True)


def _trial_pids(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are Ray workers running a trial right now."""
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if "TrialWorker.run" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                out.append(pid)
    return out


def _epochs_of_running(url: str) -> list[int]:
    """Epochs recorded so far (live learning curves) of each running trial of the study."""
    with StudyStore(url) as store:
        if "node-lost" not in store.study_names():
            return []
        trials = store.load_study("node-lost").get_trials(deepcopy=False)
    return [len(t.intermediate_values) for t in trials if t.state.name == "RUNNING"]


def _trial_workers_left(marker: str) -> list[int]:
    """Processes of the cluster (under ``marker``) that still hold a trial actor."""
    out = []
    for pid in _pids_under(marker):
        with contextlib.suppress(OSError):
            if "TrialWorker" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                out.append(pid)
    return out


@pytest.mark.slow
def test_a_node_lost_mid_search_moves_its_trial_to_the_surviving_node(breakable_cluster, tmp_path):
    cluster = breakable_cluster
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    space = tmp_path / "space.yaml"  # plain models: every run trains for a few seconds
    space.write_text("fixed: {method: full}\ndims: {lr: [0.05, 0.1, 0.2]}\n")
    command = [
        NPAS, "search", "--study", "node-lost", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", url, "--space", str(space), "--sampler", "random",
        "--ray-address", cluster.address, "--trials", "4", "--concurrency", "2",
        "--epochs", "30", "--data-size", "3000", "--max-steps-per-epoch", "200",
        "--max-retries", "1",
    ]
    nodes_before = set(cluster.node_ids())
    proc = subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _trial_pids(cluster.worker_pids()):  # a trial runs on the second node
            assert proc.poll() is None, "the search ended before a trial ran on the second node"
            assert time.monotonic() < deadline, "no trial started on the second node within 120 s"
            time.sleep(0.05)
        while min(_epochs_of_running(url), default=0) < 2:  # every running trial is 2 epochs in
            assert proc.poll() is None, "the search ended before its trials ran 2 epochs"
            assert time.monotonic() < deadline + 120, "trials did not run 2 epochs within 240 s"
            time.sleep(0.2)
        node_pids = cluster.kill_worker_node()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert not [p for p in node_pids if _alive(p)]  # the whole node is gone, raylet included
    survivors = set(cluster.node_ids())
    assert len(survivors) == 1 and survivors < nodes_before, err[-4000:]
    (lost_node,) = nodes_before - survivors
    assert "4/4 done" in err and "0 failed" in err

    with StudyStore(url, must_exist=True) as store:
        trials = {t.number: t for t in store.load_study("node-lost").get_trials()}
        rows = {r["trial_number"]: r for r in store.results("node-lost")}
    assert sorted(trials) == sorted(rows) == [0, 1, 2, 3]  # no extra trial for the retry
    assert all(t.state.name == "COMPLETE" for t in trials.values())  # no trial lost
    assert all(r["state"] == "complete" and r["finished_at"] for r in rows.values())
    retried = [n for n, t in trials.items() if t.user_attrs.get("npas_attempts")]
    assert len(retried) == 1, err[-3000:]  # the trial that ran on the lost node
    (n,) = retried
    assert trials[n].user_attrs["npas_attempts"] == 2
    # it went on from its last checkpoint (the board kept it on the controller's node), not
    # from scratch: its first epochs did not run again, and the result is whole
    resumed = trials[n].user_attrs.get("npas_resumed_from", -1)
    assert resumed >= 0, err[-3000:]
    assert 2 <= resumed < 30 and f"running it again from epoch {resumed + 1}" in err
    assert rows[n]["epochs_run"] == 30 and sorted(trials[n].intermediate_values) == list(range(1, 31))
    # Ray says the actor died with its node, or was unavailable (before the node was
    # declared dead): either way the same trial runs again
    assert f"trial {n}: worker lost" in err
    # it finished on the surviving node
    assert rows[n]["node_id"] in survivors and rows[n]["node_id"] != lost_node
    assert trials[n].user_attrs["npas_node_id"] == rows[n]["node_id"]
    assert all(r["node_id"] in nodes_before for r in rows.values())

    deadline = time.monotonic() + 15  # the search's actors go with it
    while _trial_workers_left(str(cluster.temp_dir)):
        assert time.monotonic() < deadline, "trial actors still alive after the search ended"
        time.sleep(0.2)
