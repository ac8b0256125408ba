"""Early stopping across the Pareto front: the pure rule (property-tested) and a real
search on the pool that stops trials at their rungs and records them as pruned, with
learning curves that reach the store while trials run."""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.cli import main
from allocator.search import SearchSettings, StudyStore, run_search
from allocator.search._epochs import EpochBoard, make_rule
from allocator.search._halving import (
    ParetoHalving,
    ahead_of,
    crowding,
    nondominated_ranks,
    rungs_for,
)
from allocator.search._objectives import objectives, pareto_indices

optuna.logging.set_verbosity(optuna.logging.WARNING)

points = st.lists(
    st.tuples(st.floats(0, 1, allow_nan=False), st.integers(1, 10_000).map(float)),
    min_size=1, max_size=25,
)


@given(points)
def test_rank_zero_is_the_pareto_front(pts: list[tuple[float, float]]) -> None:
    ranks = nondominated_ranks(pts)
    assert [i for i, r in enumerate(ranks) if r == 0] == pareto_indices(pts, ["minimize"] * 2)
    # every point of rank r > 0 is dominated by some point of rank r - 1
    for i, r in enumerate(ranks):
        if r:
            assert any(ranks[j] == r - 1 and all(a <= b for a, b in zip(pts[j], pts[i], strict=True))
                       for j in range(len(pts)))


@given(points)
def test_the_extremes_of_a_front_are_never_crowded(pts: list[tuple[float, float]]) -> None:
    distance = crowding(pts)
    for k in range(2):  # of points tied at an extreme, one at least
        for end in (min, max):
            value = end(p[k] for p in pts)
            assert any(distance[i] == math.inf for i, p in enumerate(pts) if p[k] == value)
    assert all(d >= 0 for d in distance)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.integers(1, 10_000)),
                min_size=1, max_size=30))
def test_halving_keeps_a_third_and_never_stops_a_front_extreme(trials: list[tuple[float, int]]) -> None:
    rule = ParetoHalving(epochs=4, directions=["maximize", "minimize"], eta=3)
    kept = 0
    for n, (acc, params) in enumerate(trials):
        seen = [(-a, float(p)) for a, p in trials[: n + 1]]
        stopped = rule.report(n, 1, [acc, float(params)])
        kept += not stopped
        if ahead_of(seen, n) == 0:  # best-placed so far (e.g. the smallest, or most accurate)
            assert not stopped
        assert rule.report(n, 1, [0.0, 1e9]) == stopped  # asked again: the same answer
    assert kept >= 1
    assert rule.report(99, 2, [0.0, 1e9]) is False  # not a rung: never judged


def test_rungs_and_the_rules() -> None:
    assert rungs_for(9) == (1, 3) and rungs_for(28) == (1, 3, 9, 27) and rungs_for(1) == ()
    assert make_rule("none", 1, objectives()) is None
    with pytest.raises(Exception, match="early stopping needs more epochs"):
        make_rule("pareto", 1, objectives())
    with pytest.raises(Exception, match="early_stop must be one of none, pareto, asha"):
        make_rule("hyperband", 9, objectives())
    board = EpochBoard("asha", 9, objectives())  # accuracy alone: a small model is no excuse
    assert board.report(0, 1, {"val_accuracy": 0.9, "trainable_params": 1e6}) is False
    assert board.report(1, 1, {"val_accuracy": 0.1, "trainable_params": 10}) is True
    board = EpochBoard("pareto", 9, objectives())  # both: the small model continues
    assert board.report(0, 1, {"val_accuracy": 0.9, "trainable_params": 1e6}) is False
    assert board.report(1, 1, {"val_accuracy": 0.1, "trainable_params": 10}) is False
    assert board.report(2, 1, {"val_accuracy": 0.05, "trainable_params": 1e7}) is True
    assert [e[:2] for e in board.drain()] == [(0, 1), (1, 1), (2, 1)] and board.drain() == []


#: Real training, long enough per epoch that a trial spans several controller ticks.
OPTIONS = {"data_size": 1500, "batch_size": 32, "max_steps_per_epoch": 12}


def _live_curves(url: str, study: str) -> tuple[list[int], Any, StudyStore]:
    """A progress callback that reads, while trials run, how many epochs each running
    trial of ``study`` has in the store; the counts, the callback and its store."""
    live: list[int] = []
    watcher = StudyStore(url)

    def watch(status: Any) -> None:
        if status.running and watcher.exists():
            trials = watcher.load_study(study).get_trials(deepcopy=False)
            live.extend(len(t.intermediate_values) for t in trials if t.state.name == "RUNNING")

    return live, watch, watcher


@pytest.fixture(scope="module", params=["pool", "tune"])
def stopped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    engine = request.param
    root = tmp_path_factory.mktemp(f"early-stop-{engine}")
    url = f"sqlite:///{root / 'npas.db'}"
    live, watch, watcher = _live_curves(url, "s")

    settings = SearchSettings(
        study="s", model="cnn1d", data="mnist1d", space="lowbudget", trials=10, concurrency=2,
        epochs=9, seed=0, storage=url, early_stop="pareto", trial_options=OPTIONS, engine=engine,
        log=("tensorboard",) if engine == "tune" else (),
    )
    summary = run_search(settings, on_progress=watch)
    watcher.close()
    return {"url": url, "summary": summary, "live": live, "engine": engine, "root": root}


@pytest.mark.slow
def test_trials_behind_the_front_at_a_rung_are_pruned_with_their_rung(stopped) -> None:
    summary = stopped["summary"]
    assert summary.pruned >= 1
    assert summary.complete + summary.pruned + summary.failed == 10
    with StudyStore(stopped["url"], must_exist=True) as store:
        trials = store.load_study("s").get_trials()
        rows = {r["trial_number"]: r for r in store.results("s")}
    # No trial fails for its budget or a lost worker. One may diverge: a `learned` mapping
    # at the smallest budgets diverges at lr 0.1 (run alone, in a fresh process, too), and
    # which configurations the sampler reaches depends on the order trials end in.
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == summary.failed <= 3
    assert all(rows[t.number]["failure_reason"].startswith("loss diverged") for t in failed)
    for t in trials:
        row = rows[t.number]
        assert row["engine"] == stopped["engine"]
        if t.state.name == "FAIL":
            assert row["state"] == "failed"
            continue
        assert row["state"] == t.state.name.lower()
        if t.state.name == "PRUNED":
            rung = t.user_attrs["npas_rung"]
            assert rung in (1, 3) and row["rung"] == rung and row["epochs_run"] == rung
            curve = t.intermediate_values  # its epochs, and NaN at the last it never reached
            assert sorted(curve) == [*range(1, rung + 1), 9] and math.isnan(curve[9])
            assert t.user_attrs["npas_result"]["val_accuracy"] == row["val_accuracy"] is not None
        else:
            assert row["rung"] is None and row["epochs_run"] == 9
            assert sorted(t.intermediate_values) == list(range(1, 10))


@pytest.mark.slow
def test_learning_curves_reach_the_store_while_trials_run(stopped) -> None:
    assert any(n > 0 for n in stopped["live"]), stopped["live"]


@pytest.mark.slow
def test_npas_trials_lists_the_pruned_trials(stopped, capsys) -> None:
    assert main(["trials", "s", "--storage", stopped["url"], "--state", "pruned"]) == 0
    out = capsys.readouterr().out
    assert out.count("pruned") >= stopped["summary"].pruned


@pytest.mark.slow
def test_both_engines_give_the_same_pareto_command_and_tune_logs_to_tensorboard(stopped, capsys) -> None:
    with StudyStore(stopped["url"], must_exist=True) as store:
        front = sorted(t.number for t in store.load_study("s").best_trials)
    assert main(["pareto", "s", "--storage", stopped["url"], "--format", "json"]) == 0
    assert sorted(r["trial_number"] for r in json.loads(capsys.readouterr().out)) == front
    events = list(stopped["root"].rglob("events.out.tfevents.*"))
    if stopped["engine"] == "tune":  # --log tensorboard: one event file per trial
        assert len(events) == 10
        assert (stopped["root"] / "npas-tune" / "s").is_dir()  # RunConfig(storage_path) by the study
    else:
        assert events == []


def _reporting_trial(config: dict[str, Any], *, keep_model: bool = False, report: Any = None) -> dict[str, Any]:
    """A trial that reports three epochs and returns no history of them."""
    for epoch in (1, 2, 3):
        if report(epoch, {"val_accuracy": epoch / 10, "trainable_params": 5.0}):
            return {"status": "pruned", "epochs_run": epoch}
    return {"status": "complete", "val_accuracy": 0.3, "trainable_params": 5}


def test_a_trials_reported_epochs_come_back_with_its_outcome() -> None:
    from allocator.search._worker import TrialWorker

    board = EpochBoard("none", 3, objectives())
    out = TrialWorker(_reporting_trial).run({}, board=board, number=4, stops=False)
    assert out["result"]["status"] == "complete" and "history" not in out["result"]
    assert [e for e, _ in out["epochs"]] == [1, 2, 3]  # the recorder's copy of the curve
    assert [(n, e) for n, e, _ in board.drain()] == [(4, 1), (4, 2), (4, 3)]
    assert "epochs" not in TrialWorker(_reporting_trial).run({})  # no board, no report


@pytest.mark.slow
def test_without_early_stopping_curves_still_reach_the_store_while_trials_run(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    live, watch, watcher = _live_curves(url, "n")

    summary = run_search(SearchSettings(
        study="n", model="cnn1d", data="mnist1d", space="lowbudget", trials=3, concurrency=2,
        epochs=6, seed=0, storage=url, early_stop="none", trial_options=OPTIONS,
    ), on_progress=watch)
    watcher.close()
    assert summary.complete == 3 and any(n > 0 for n in live), live
    with StudyStore(url, must_exist=True) as store:
        assert [sorted(t.intermediate_values) for t in store.load_study("n").get_trials()] == [
            list(range(1, 7))] * 3
