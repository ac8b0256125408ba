"""A real search on a local Ray against SQLite: every trial in Optuna and in npas_results,
the Pareto front, kept weights and their export, the query commands."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from allocator.cli import main
from allocator.search import SearchSettings, StudyStore, run_search

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: A trial that trains for a few steps only: the search machinery is under test here.
TINY = {"data_size": 600, "max_steps_per_epoch": 3, "batch_size": 32, "pretrain_epochs": 1}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sqlite-search")
    url = f"sqlite:///{root / 'npas.db'}"
    settings = SearchSettings(
        study="s", model="cnn1d", data="mnist1d", space="default", trials=6, concurrency=2,
        epochs=1, seed=0, storage=url, keep_models="pareto", trial_options=TINY,
    )
    seen: list[Any] = []
    summary = run_search(settings, on_progress=seen.append)
    return {"url": url, "summary": summary, "progress": seen, "root": root}


def _npas(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_every_trial_is_in_optuna_and_in_npas_results(searched):
    with StudyStore(searched["url"], must_exist=True) as store:
        study = store.load_study("s")
        rows = {r["trial_number"]: r for r in store.results("s")}
    trials = study.get_trials()
    assert len(trials) == 6 and sorted(rows) == [t.number for t in trials]
    for t in trials:
        row = rows[t.number]
        assert row["state"] == t.state.name.lower()
        assert row["model"] == "cnn1d" and row["data_size"] == 600 and row["method"] == "ssn"
        assert row["budget"] == pytest.approx(t.params["budget"])
        assert row["mapping"] == t.params["mapping"]
        assert row["host"] and row["node_id"] and row["worker_pid"]
        assert row["started_at"] <= row["finished_at"]
        if row["state"] == "complete":
            assert t.values == [row["val_accuracy"], row["trainable_params"]]
            assert row["trainable_params"] <= row["budget"] * 5_210 + 1  # cnn1d has 5,210
        else:
            assert row["failure_reason"] and t.user_attrs["npas_failure_reason"]
    assert searched["summary"].complete + searched["summary"].failed == 6


def test_groups_are_capped_at_the_models_shareable_layers(searched):
    with StudyStore(searched["url"], must_exist=True) as store:
        record = store.load_study("s").user_attrs["npas_settings"]
    assert record["space"]["dims"]["groups"]["high"] == 4  # cnn1d: 4 shareable layers


def test_each_trial_carries_its_full_trial_result(searched):
    from trials import TrialResult

    with StudyStore(searched["url"], must_exist=True) as store:
        study = store.load_study("s")
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        result = TrialResult.from_dict(t.user_attrs["npas_result"])
        assert result.status == "complete"
        assert result.val_accuracy == t.values[0] and result.trainable_params == t.values[1]
        given = t.user_attrs["npas_config"]  # what the search set; the rest are defaults
        assert {k: result.config[k] for k in given} == given


def test_the_dashboard_sees_named_objectives(searched):
    with StudyStore(searched["url"], must_exist=True) as store:
        study = store.load_study("s")
    assert study.metric_names == ["val_accuracy", "trainable_params"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_progress_reports_counts_and_the_pareto_front(searched):
    last = searched["progress"][-1]
    assert last.finished and last.done == 6 and last.running == 0
    assert last.pareto_size == len(searched["summary"].pareto) >= 1
    assert max(s.running for s in searched["progress"]) == 2


def test_pareto_command_is_optunas_front(searched, capsys):
    out = _npas(capsys, "pareto", "s", "--storage", searched["url"], "--format", "json")
    numbers = {r["trial_number"] for r in json.loads(out)}
    with StudyStore(searched["url"], must_exist=True) as store:
        assert numbers == {t.number for t in store.load_study("s").best_trials}
    table = _npas(capsys, "pareto", "s", "--storage", searched["url"])
    assert table.splitlines()[0].split()[:3] == ["trial", "params", "val_acc"]


def test_trials_command_filters_sorts_and_writes_csv(searched, capsys):
    out = _npas(capsys, "trials", "s", "--storage", searched["url"], "--state", "complete",
                "--sort", "accuracy", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    accuracies = [float(r["val_accuracy"]) for r in rows]
    assert rows and accuracies == sorted(accuracies, reverse=True)
    assert {r["state"] for r in rows} == {"complete"}


def test_npas_results_is_plain_sql(searched):
    path = searched["url"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        n, best = conn.execute(
            "SELECT count(*), max(val_accuracy) FROM npas_results WHERE study = 's'"
        ).fetchone()
    assert n == 6 and best is not None
    frame = StudyStore(searched["url"], must_exist=True).dataframe("s")
    assert len(frame) == 6 and {"budget", "val_accuracy", "trainable_params"} <= set(frame)


def _kept_trials(url: str) -> list[int]:
    from optuna.artifacts import get_all_artifact_meta

    with StudyStore(url, must_exist=True) as store:
        study = store.load_study("s")
        return [t.number for t in study.get_trials()
                if get_all_artifact_meta(t, storage=store.optuna_storage)]


def test_pareto_weights_are_kept_and_export_to_the_plain_model(searched, capsys, tmp_path):
    from trials import build_model

    kept = _kept_trials(searched["url"])
    assert kept, "the first complete trial is always on the front, so something is kept"
    assert len(list((Path(searched["root"]) / "npas-artifacts").iterdir())) == len(kept)
    out = tmp_path / "model.pt"
    text = _npas(capsys, "export", "s", str(kept[0]), "--storage", searched["url"], "--out", str(out))
    assert "weights kept" in text
    model = build_model("cnn1d", input_shape=(1, 40), num_classes=10)
    model.load_state_dict(torch.load(out, weights_only=True))  # strict: every weight fits
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)


def test_export_retrains_when_no_weights_were_kept(searched, capsys, tmp_path):
    from trials import build_model

    kept = set(_kept_trials(searched["url"]))
    with StudyStore(searched["url"], must_exist=True) as store:
        complete = [r["trial_number"] for r in store.results("s", state="complete")]
    others = [n for n in complete if n not in kept]
    if not others:
        pytest.skip("every complete trial of this run was on the front when it finished")
    out = tmp_path / "retrained.pt"
    text = _npas(capsys, "export", "s", str(others[0]), "--storage", searched["url"],
                 "--out", str(out))
    assert "weights retrained" in text
    model = build_model("cnn1d", input_shape=(1, 40), num_classes=10)
    model.load_state_dict(torch.load(out, weights_only=True))


def test_a_grid_over_methods_keeps_all_weights_and_exports_each(tmp_path):
    from allocator.search import export_model
    from trials import build_model

    space = {
        "fixed": {"mapping": "single", "downsample": "wavg", "upsample": "inter", "budget": 0.3},
        "dims": {"method": ["full", "ssn", "reduced_width", "hashed"]},
    }
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    summary = run_search(
        SearchSettings(study="g", space=space, sampler="grid", objective="step_time",
                       trials=10, concurrency=2, epochs=1, storage=url, trial_options=TINY,
                       keep_models="all")
    )
    assert summary.complete == 4  # the grid has 4 points; --trials 10 is capped
    with StudyStore(url, must_exist=True) as store:
        study = store.load_study("g")
        assert sorted(t.params["method"] for t in study.trials) == [
            "full", "hashed", "reduced_width", "ssn"]
        assert study.metric_names == ["val_accuracy", "trainable_params", "step_time_s"]
        rows = store.results("g")
    for row in rows:
        out = tmp_path / f"{row['method']}.pt"
        info = export_model("g", row["trial_number"], out, storage=url)
        assert info["source"] == "kept"
        width = row["method_info"]["width"] if row["method"] == "reduced_width" else 1.0
        model = build_model("cnn1d", input_shape=(1, 40), num_classes=10, width=width)
        model.load_state_dict(torch.load(out, weights_only=True))
