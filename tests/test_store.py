"""The study store: URLs, masking, reachability, WAL, npas_results on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import sqlite3

import optuna
import pytest
import sqlalchemy as sa

from allocator._errors import StorageError
from allocator.search import RESULTS, StudyStore, mask_url, resolve_url
from allocator.search._recovery import trial_id as storage_trial_id
from allocator.search._table import CONFIG_COLUMNS, METRIC_COLUMNS, row_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_mask_url_hides_the_password():
    assert mask_url("postgresql+psycopg://ann:s3cr3t@db:5432/npas") == (
        "postgresql+psycopg://ann:***@db:5432/npas"
    )
    assert "s3cr3t" not in mask_url("not a url s3cr3t")


def test_resolve_url_prefers_flag_then_env_then_default(monkeypatch):
    monkeypatch.delenv("NPAS_STORAGE", raising=False)
    assert resolve_url(None) == "sqlite:///npas.db"
    monkeypatch.setenv("NPAS_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "is not a SQLAlchemy URL"),
        ("oracle://u@h/db", "backend 'oracle' is not supported"),
        ("mysql://u:pw@127.0.0.1/db", "driver 'mysqldb' is not installed; use mysql+pymysql://"),
        ("sqlite://", "in-memory SQLite store"),
        ("sqlite:///:memory:", "in-memory SQLite store"),
        ("sqlite:////no/such/dir/x.db", "directory /no/such/dir does not exist"),
    ],
)
def test_bad_storage_urls_are_one_line_storage_errors(url, message):
    with pytest.raises(StorageError) as info:
        StudyStore(url)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://ann:topsecret@127.0.0.1:1/npas",
        "mysql+pymysql://ann:topsecret@127.0.0.1:1/npas",
    ],
)
def test_an_unreachable_server_fails_fast_without_showing_the_password(url):
    with pytest.raises(StorageError) as info:
        StudyStore(url)
    text = str(info.value)
    assert text.startswith("cannot reach storage")
    assert "topsecret" not in text and "***" in text


def test_opening_and_reading_a_store_writes_nothing(tmp_path):
    path = tmp_path / "npas.db"
    with StudyStore(f"sqlite:///{path}") as store:
        assert not store.exists()
        assert store.study_names() == []
        assert store.results("x") == []
        assert store.summaries() == []
        assert store.dataframe("x").empty
    assert not path.exists()
    with pytest.raises(StorageError, match="does not exist"):
        StudyStore(f"sqlite:///{path}", must_exist=True)
    assert not path.exists()


def test_sqlite_store_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    path = tmp_path / "npas.db"
    with StudyStore(f"sqlite:///{path}") as store:
        store.initialise()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_reader_is_not_blocked_by_an_open_write_transaction(tmp_path):
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    with StudyStore(url) as writer_store:
        writer_store.initialise()
        writer_store.write_result(row_for(study="s", trial_number=0, trial_id=1, state="complete"))
        with writer_store.engine.connect() as writer:
            writer.exec_driver_sql("BEGIN IMMEDIATE")
            writer.execute(sa.insert(RESULTS).values(study="s", trial_number=1, trial_id=2, state="running"))
            with StudyStore(url, must_exist=True) as reader:  # a dashboard, say
                assert [r["trial_number"] for r in reader.results("s")] == [0]
            writer.commit()
        assert [r["trial_number"] for r in writer_store.results("s")] == [0, 1]


def test_write_result_inserts_then_updates_and_decodes_json(tmp_path):
    with StudyStore(f"sqlite:///{tmp_path / 'npas.db'}") as store:
        store.initialise()
        store.initialise()  # idempotent
        config = {"model": "mlp", "budget": 0.5, "manual_map": None, "groups": 2, "unknown": 1}
        store.write_result(
            row_for(study="s", trial_number=0, trial_id=1, state="running", config=config)
        )
        result = {
            "val_accuracy": 0.75, "trainable_params": 1234.0, "params_by_kind": {"Linear": 1000},
            "val_loss": float("nan"), "history": [{"epoch": 1}],
        }
        store.write_result(
            row_for(study="s", trial_number=0, trial_id=1, state="complete", result=result,
                    host="h", node_id="n")
        )
        (row,) = store.results("s")
        assert row["state"] == "complete" and row["model"] == "mlp" and row["groups"] == 2
        assert row["val_accuracy"] == 0.75 and row["trainable_params"] == 1234
        assert row["params_by_kind"] == {"Linear": 1000}
        assert row["val_loss"] is None  # NaN is stored as NULL
        frame = store.dataframe("s")
        assert list(frame["trial_number"]) == [0] and frame.loc[0, "host"] == "h"


def test_results_sort_and_filter(tmp_path):
    with StudyStore(f"sqlite:///{tmp_path / 'npas.db'}") as store:
        store.initialise()
        for n, (state, acc) in enumerate([("complete", 0.5), ("failed", None), ("complete", 0.9)]):
            store.write_result(
                row_for(study="s", trial_number=n, trial_id=n + 1, state=state,
                        result={"val_accuracy": acc})
            )
        assert [r["trial_number"] for r in store.results("s", sort="val_accuracy")] == [2, 0, 1]
        assert [r["trial_number"] for r in store.results("s", state="complete")] == [0, 2]
        with pytest.raises(Exception, match="sort must be a column of npas_results"):
            store.results("s", sort="accuracy!")


def test_the_results_table_has_a_column_for_every_config_field_and_metric():
    from trials.config import TrialConfig
    from trials.runner import TrialResult

    config_fields = {f.name for f in dataclasses.fields(TrialConfig)}
    assert config_fields == set(CONFIG_COLUMNS)
    metrics = {
        "val_accuracy", "val_loss", "test_accuracy", "test_loss", "trainable_params",
        "params_by_kind", "flops", "train_time_s", "step_time_s", "peak_memory_bytes",
        "epochs_run", "steps", "method_info", "metrics",
    }
    result_fields = {f.name for f in dataclasses.fields(TrialResult)}
    assert metrics <= result_fields and set(METRIC_COLUMNS) == metrics
    for column in ("study", "trial_number", "state", "started_at", "finished_at", "host",
                   "node_id", "failure_reason"):
        assert column in RESULTS.c


def test_postgresql_store_holds_optuna_tables_and_npas_results(postgres_url):
    with StudyStore(postgres_url) as store:
        assert not store.exists()
        store.initialise()
        study = optuna.create_study(
            storage=store.optuna_storage, study_name="pg", directions=["maximize", "minimize"]
        )
        trial = study.ask()
        study.tell(trial, [0.5, 10])
        store.write_result(
            row_for(study="pg", trial_number=0, trial_id=storage_trial_id(store, "pg", trial.number), state="complete",
                    config={"budget": 0.25, "amp": True}, result={"val_accuracy": 0.5,
                    "trainable_params": 10, "params_by_kind": {"Conv1d": 10}})
        )
    with StudyStore(postgres_url, must_exist=True) as store:
        assert store.study_names() == ["pg"]
        (row,) = store.results("pg")
        assert row["amp"] is True and row["params_by_kind"] == {"Conv1d": 10}
        with store.engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM npas_results WHERE study = 'pg'"))
            assert n.scalar() == 1
