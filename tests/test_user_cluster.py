"""A user's project searched on a two-node Ray cluster: the code reaches the workers only
through Ray's runtime environment (--working-dir), the nodes are started from other
directories, and without the flag the search stops before its first trial, in one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from allocator.search import StudyStore
from tests.conftest import RayCluster, two_node_cluster
from tests.test_user_search import NPAS, copy_project


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """A head and a second node, each started from an empty directory of its own."""
    with two_node_cluster("npas-user", own_dirs=True) as found:
        yield found


def _search(cluster: RayCluster, project: Path, elsewhere: Path, url: str,
            *extra: str) -> subprocess.CompletedProcess[str]:
    """``npas search`` from ``elsewhere``; the project's modules import here through
    PYTHONPATH, which the cluster's workers never see."""
    env = {**cluster.env, "PYTHONPATH": f"{cluster.env['PYTHONPATH']}:{project}"}
    return subprocess.run(
        [NPAS, "search", "--study", "shipped", "--model", "models:build", "--data", "data:load",
         "--trial", "train:fit", "--space", str(project / "trial_space.toml"),
         "--objective", "macro_f1:max", "--storage", url, "--ray-address", cluster.address,
         "--trials", "4", "--concurrency", "2", "--epochs", "1", *extra],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=400,
    )


@pytest.mark.slow
def test_code_shipped_with_working_dir_runs_on_both_nodes(cluster, tmp_path) -> None:
    project = copy_project(tmp_path / "waves")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db = elsewhere / "npas.db"
    missing = _search(cluster, project, elsewhere, f"sqlite:///{db}")
    assert missing.returncode == 2, missing.stderr[-2000:]
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1, missing.stderr
    assert lines[0].startswith("npas: error: module 'models' imports here but not on the Ray "
                               "cluster node")
    assert "--working-dir DIR" in lines[0]
    assert not db.exists()  # stopped before anything was written

    shipped = _search(cluster, project, elsewhere, f"sqlite:///{db}", "--working-dir", str(project))
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    with StudyStore(f"sqlite:///{db}", must_exist=True) as store:
        rows = store.results("shipped")
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert {r["node_id"] for r in rows} == set(cluster.node_ids())  # both nodes trained
    assert all("macro_f1" in r["metrics"] for r in rows)
