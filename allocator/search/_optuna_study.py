"""The Optuna side of a search, through Optuna's public API only.

:class:`OptunaStudy` creates or loads the study, asks for trials (claimed by the
controller that asked), reads trials back as :class:`optuna.trial.FrozenTrial`, sets
user attributes and intermediate values, and tells Optuna how a trial ended. Every call
goes through the search's retrying database call. Trials are named by their number;
their storage ids come from the storage's own lookup
(``get_trial_id_from_study_id_trial_number``), never from private attributes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from allocator.search._objectives import Objective
from allocator.search._retry import DatabaseRetry
from allocator.search._sharing import ATTR_CONTROLLER

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from allocator.search._store import StudyStore

__all__ = ["OptunaStudy"]

class OptunaStudy:
    """One Optuna study on the store's :class:`~optuna.storages.RDBStorage`.

    Example:
        >>> study = OptunaStudy.create(store, "demo", objectives(), sampler,  # doctest: +SKIP
        ...                            record={}, db=DatabaseRetry(60, ""))
        >>> trial = study.ask(controller="c1")  # doctest: +SKIP
        >>> study.tell(trial.number, [0.9, 1000.0])  # doctest: +SKIP
    """

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, db: DatabaseRetry):
        self.study, self.storage, self.call = study, storage, db.call
        self.name = study.study_name
        self.study_id = int(db.call(lambda: storage.get_study_id_from_name(self.name), "read the study"))
        self._ids: dict[int, int] = {}

    @classmethod
    def create(cls, store: StudyStore, name: str, objs: Sequence[Objective],
               sampler: optuna.samplers.BaseSampler, *, record: Mapping[str, Any],
               db: DatabaseRetry) -> OptunaStudy:
        """A new study with named objectives and the search's record as ``npas_settings``;
        created race-free between controllers by :meth:`StudyStore.create_study`."""
        import optuna

        study = store.create_study(name, directions=[o.direction for o in objs], sampler=sampler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.name for o in objs])
        record = {**record, "objectives": [dataclasses.asdict(o) for o in objs]}
        study.set_user_attr("npas_settings", record)
        return cls(study, store.optuna_storage, db)

    @classmethod
    def load(cls, storage: optuna.storages.BaseStorage, name: str,
             sampler: optuna.samplers.BaseSampler | None, *, db: DatabaseRetry) -> OptunaStudy:
        import optuna

        study = db.call(lambda: optuna.load_study(study_name=name, storage=storage, sampler=sampler),
                     "read the study")
        return cls(study, storage, db)

    # ------------------------------------------------------------ reading

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the study, in order of number."""
        return list(self.call(lambda: self.study.get_trials(deepcopy=False), "read the study"))

    def trial(self, number: int) -> FrozenTrial:
        return self.call(lambda: self.storage.get_trial(self.trial_id(number)), "read a trial")

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (``npas_results.trial_id``)."""
        if number not in self._ids:
            self._ids[number] = int(self.call(
                lambda: self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number),
                "read a trial",
            ))
        return self._ids[number]

    def running(self, number: int) -> bool:
        return bool(self.trial(number).state.name == "RUNNING")

    # ------------------------------------------------------------ writing

    def ask(self, *, controller: str, params: Mapping[str, Any] | None = None,
            known: int | None = None) -> optuna.Trial:
        """A new trial claimed by ``controller`` (``params`` queued first, if given).

        ``known`` is how many trials the study had when the caller, holding the launch
        lease, last read it. An ask whose commit went through but whose answer was lost
        to a database outage left a running trial that nobody claimed: the retry adopts
        it instead of asking again, so the outage costs no extra trial."""
        import optuna
        from optuna.trial import TrialState

        if params is not None:
            self.call(partial(self.study.enqueue_trial, dict(params)), "queue a trial")
        lost: list[int] = []

        def already() -> bool:
            if known is None:
                return False
            lost.extend(t.number for t in self.trials() if t.number >= known
                        and t.state == TrialState.RUNNING and ATTR_CONTROLLER not in t.user_attrs)
            return bool(lost)

        trial = self.call(self.study.ask, "ask for a trial", already=already)
        if trial is None:  # the constructor reads the trial: retried as well
            adopted = self.trial_id(lost[0])
            trial = self.call(lambda: optuna.trial.Trial(self.study, adopted), "ask for a trial")
        self.call(partial(trial.set_user_attr, ATTR_CONTROLLER, controller), "claim a trial")
        return cast("optuna.Trial", trial)

    def enqueue(self, params: Mapping[str, Any], user_attrs: Mapping[str, Any]) -> None:
        self.call(partial(self.study.enqueue_trial, dict(params), user_attrs=dict(user_attrs)),
                  "queue a trial")

    def set_attrs(self, number: int, attrs: Mapping[str, Any], what: str = "record a trial") -> None:
        trial_id = self.trial_id(number)
        for key, value in attrs.items():
            self.call(partial(self.storage.set_trial_user_attr, trial_id, key, value), what)

    def intermediate(self, number: int, step: int, value: float) -> None:
        """An intermediate value (the dashboard's learning curve; Optuna's
        ``Trial.report`` is single-objective only, the storage's call is not)."""
        trial_id = self.trial_id(number)
        self.call(partial(self.storage.set_trial_intermediate_value, trial_id, step, value),
                  "record an epoch")

    def tell(self, number: int, values: Sequence[float] | None = None, *,
             state: str | None = None) -> None:
        """``study.tell``, retried; a tell whose answer was lost is not repeated."""
        from optuna.trial import TrialState

        told = TrialState[state] if state else None

        def finished() -> bool:
            return bool(self.storage.get_trial(self.trial_id(number)).state.is_finished())

        self.call(lambda: self.study.tell(number, None if values is None else list(values),
                                          state=told),
                  "record a finished trial", already=finished)
