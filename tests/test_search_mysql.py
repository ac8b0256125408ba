"""A real search whose study store is a MariaDB/MySQL database (created and dropped per run)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from allocator.cli import main
from allocator.search import SearchSettings, StudyStore, run_search
from tests.conftest import MARIADB_ROOT, mariadb_admin

MYSQL = MARIADB_ROOT
TINY = {"data_size": 600, "max_steps_per_epoch": 3, "batch_size": 32}


@pytest.fixture
def mysql_url() -> Iterator[str]:
    admin = mariadb_admin()
    name = f"npas_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    try:
        yield f"{MYSQL}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.mark.slow
def test_a_search_on_mysql_lands_in_optuna_and_npas_results(mysql_url, capsys) -> None:
    summary = run_search(
        SearchSettings(study="my", model="cnn1d", data="mnist1d", space="default", trials=4,
                       concurrency=2, epochs=1, seed=3, storage=mysql_url, trial_options=TINY)
    )
    assert summary.complete + summary.failed == 4
    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT trial_number, state, trainable_params FROM npas_results "
                "WHERE study = 'my' ORDER BY trial_number")).all()
    finally:
        engine.dispose()
    assert [r.trial_number for r in rows] == [0, 1, 2, 3]
    with StudyStore(mysql_url, must_exist=True) as store:
        study = store.load_study("my")
        assert [t.state.name.lower() for t in study.trials] == [r.state for r in rows]
        for t, r in zip(study.trials, rows, strict=True):
            if r.state == "complete":
                assert t.values[1] == r.trainable_params
    assert main(["pareto", "my", "--storage", mysql_url]) == 0
    assert "trial" in capsys.readouterr().out
