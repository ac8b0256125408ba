"""A database outage that loses the answer to a commit costs no extra trial.

The commit goes through on a real SQLite store; only its answer is lost (the call then
raises the driver's ``OperationalError``, as a cut connection does), and the retry must
see that the ask took effect."""

from __future__ import annotations

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from allocator.search._objectives import objectives
from allocator.search._optuna_study import OptunaStudy
from allocator.search._retry import DatabaseRetry
from allocator.search._sharing import ATTR_CONTROLLER
from allocator.search._store import StudyStore


def _study(tmp_path) -> tuple[StudyStore, OptunaStudy]:
    store = StudyStore(f"sqlite:///{tmp_path / 'npas.db'}")
    store.initialise()
    db = DatabaseRetry(30, store.masked_url, sleep=lambda _s: None)
    study = OptunaStudy.create(store, "lost", objectives(), optuna.samplers.RandomSampler(0),
                               record={}, db=db)
    return store, study


def test_an_ask_whose_answer_was_lost_is_adopted_not_repeated(tmp_path) -> None:
    store, study = _study(tmp_path)
    first = study.ask(controller="c1", known=0)
    ask = study.study.ask
    calls = []

    def ask_then_lose_the_answer() -> optuna.Trial:
        trial = ask()  # committed ...
        calls.append(trial.number)
        if len(calls) == 1:  # ... but the answer never arrives
            raise sa.exc.OperationalError("INSERT INTO trials", {}, Exception("server closed"))
        return trial

    study.study.ask = ask_then_lose_the_answer  # type: ignore[method-assign]
    second = study.ask(controller="c1", known=1)
    trials = study.trials()
    assert [t.number for t in trials] == [first.number, 1] == [0, second.number]
    assert calls == [1]  # the retry did not ask again
    assert all(t.state == TrialState.RUNNING for t in trials)
    assert all(t.user_attrs[ATTR_CONTROLLER] == "c1" for t in trials)
    store.close()


def test_without_a_lost_answer_every_ask_makes_one_trial(tmp_path) -> None:
    store, study = _study(tmp_path)
    for known in range(3):
        assert study.ask(controller="c1", known=known).number == known
    assert len(study.trials()) == 3
    store.close()
