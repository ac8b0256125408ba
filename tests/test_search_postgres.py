"""A real search whose study store is a PostgreSQL database (created and dropped per run)."""

from __future__ import annotations

import json

import optuna
import pytest
import sqlalchemy as sa

from allocator.cli import main
from allocator.search import SearchSettings, StudyStore, mask_url, run_search

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {"data_size": 600, "max_steps_per_epoch": 3, "batch_size": 32}


@pytest.mark.slow
def test_a_baselines_search_on_postgresql(postgres_url, capsys):
    # NSGA-II, and peak memory as a third objective: on CPU each trial gets a fresh worker
    summary = run_search(
        SearchSettings(study="pg", model="cnn1d", data="mnist1d", space="baselines",
                       sampler="nsga2", objective="peak_memory", trials=4, concurrency=2,
                       epochs=1, seed=1, storage=postgres_url, trial_options=TINY)
    )
    assert summary.complete + summary.failed == 4
    assert summary.storage == mask_url(postgres_url)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT trial_number, state, method, budget, val_accuracy, host, "
                        "worker_pid, peak_memory_bytes "
                        "FROM npas_results WHERE study = 'pg' ORDER BY trial_number")
            ).all()
    finally:
        engine.dispose()
    assert [r.trial_number for r in rows] == [0, 1, 2, 3]
    assert all(r.host for r in rows)
    assert len({r.worker_pid for r in rows}) == 4  # a fresh process per trial
    assert all(r.peak_memory_bytes is not None for r in rows if r.state == "complete")
    with StudyStore(postgres_url, must_exist=True) as store:
        study = store.load_study("pg")
        assert [t.state.name.lower() for t in study.trials] == [r.state for r in rows]
        assert study.metric_names == ["val_accuracy", "trainable_params", "peak_memory_bytes"]
        for t, r in zip(study.trials, rows, strict=True):
            assert r.method == t.params["method"]
            if r.method == "full":
                assert "budget" not in t.params
    assert main(["studies", "--storage", postgres_url]) == 0
    assert "pg" in capsys.readouterr().out
    assert main(["pareto", "pg", "--storage", postgres_url, "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(r["state"] == "complete" for r in front)
