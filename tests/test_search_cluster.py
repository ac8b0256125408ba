"""A search on a two-node Ray cluster started by the test: trials land on both nodes and
every result reaches the database through the controller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from allocator.search import StudyStore

NPAS = str(Path(sys.executable).with_name("npas"))


@pytest.mark.slow
def test_trials_run_on_both_nodes_and_reach_the_database(ray_two_nodes, tmp_path):
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    run = subprocess.run(
        [NPAS, "search", "--study", "two-nodes", "--model", "cnn1d", "--data", "mnist1d",
         "--storage", url, "--ray-address", ray_two_nodes.address, "--trials", "4",
         "--concurrency", "2", "--epochs", "1", "--data-size", "600",
         "--max-steps-per-epoch", "3", "--set", "pretrain_epochs=1"],
        env=ray_two_nodes.env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "4/4 done" in run.stderr
    with StudyStore(url, must_exist=True) as store:
        rows = store.results("two-nodes")
        study = store.load_study("two-nodes")
    assert len(rows) == 4 and len(study.trials) == 4
    assert all(r["state"] in ("complete", "failed") and r["finished_at"] for r in rows)
    nodes = set(ray_two_nodes.node_ids())
    assert {r["node_id"] for r in rows} == nodes  # each of the two nodes ran trials
    for t in study.trials:
        assert t.user_attrs["npas_node_id"] in nodes


@pytest.mark.slow
def test_a_driver_without_the_clusters_token_is_refused_in_one_line(ray_two_nodes, tmp_path):
    db = tmp_path / "npas.db"
    env = {**ray_two_nodes.env, "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run(
        [NPAS, "search", "--model", "mlp", "--data", "mnist1d", "--storage", f"sqlite:///{db}",
         "--ray-address", ray_two_nodes.address],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"npas: error: the Ray cluster at {ray_two_nodes.address} rejects this driver's "
        "authentication: set RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token, "
        "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), as for every `ray start`"
    ]
    assert not db.exists()
