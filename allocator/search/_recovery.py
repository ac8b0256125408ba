"""Resume: trials left running by a stopped controller are failed and retried once.

A trial is *interrupted* when its controller stopped (Ctrl-C, SIGKILL, a crash) while it
ran; a controller still alive (another ``npas search --resume`` on the same study, see
``_sharing.py``) keeps its trials. It is marked failed with ``npas_interrupted`` set and does not count towards
``--trials``. If it had reached a worker (it carries ``npas_config``), its params are
queued again, once: a WAITING trial with ``npas_retry_of``. A retry that is interrupted
after reaching a worker is not queued again; one interrupted before (it never ran) is
still owed and queued again. A trial interrupted before it reached a worker, and that is
no retry, never ran: nothing is queued, a freshly sampled trial takes its place.
Completed trials are never touched, so a resume loses none and duplicates none; a row of
``npas_results`` still ``running`` for a trial Optuna has finished (killed between the
two writes) is rewritten from the trial's user attributes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from allocator.search._sharing import ATTR_CONTROLLER
from allocator.search._store import StudyStore
from allocator.search._table import row_for

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["counted", "interrupt_trial", "orphans", "recover", "repair_rows", "trial_id"]

logger = logging.getLogger(__name__)

ATTR_RETRY_OF, ATTR_INTERRUPTED = "npas_retry_of", "npas_interrupted"
ATTR_REASON, ATTR_CONFIG = "npas_failure_reason", "npas_config"


def trial_id(store: StudyStore, study: str, number: int) -> int:
    """The storage's id of trial ``number`` of ``study`` (Optuna's public storage API)."""
    storage = store.optuna_storage
    return int(storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study), number))


def counted(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards ``--trials``: finished, and not interrupted."""
    return trial.state.is_finished() and not trial.user_attrs.get(ATTR_INTERRUPTED)


def recover(
    study: optuna.Study,
    store: StudyStore,
    *,
    reason: str,
    live: Collection[str] = (),
    repair: bool = True,
) -> list[int]:
    """Fail the study's running trials that no live controller owns; queue each again once.

    ``live`` holds the ids of the controllers still running the study (see
    ``allocator/search/_sharing.py``): their trials are left alone. A running trial of a
    gone controller, or of none (its controller was killed between asking Optuna for it
    and claiming it), is interrupted. With ``repair`` (or when it found such trials) the
    ``running`` rows of finished trials are rewritten first (:func:`repair_rows`).
    Returns the numbers of the trials it failed.
    """
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    alive = set(live)
    stale = [t for t in running if t.user_attrs.get(ATTR_CONTROLLER) not in alive]
    if repair or stale:
        repair_rows(study, store)
    failed = [t.number for t in stale if interrupt_trial(study, store, t.number, reason)]
    if failed:
        logger.info("%d interrupted trial(s) of a stopped controller failed and queued again",
                    len(failed))
    return failed


def repair_rows(study: optuna.Study, store: StudyStore) -> list[int]:
    """Rewrite ``running`` rows whose Optuna trial did finish (the controller was killed
    between telling Optuna and writing the row) from what the trial carries."""
    finished = {t.number: t for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    engine = _engine(study)
    repaired = []
    for row in store.results(study.study_name, state="running"):
        trial = finished.get(row["trial_number"])
        if trial is None:
            continue
        result = trial.user_attrs.get("npas_result") or {}
        run = trial.user_attrs.get("npas_worker") or {}
        started, ended = run.get("started_at"), run.get("finished_at")
        store.write_result(
            row_for(
                study=study.study_name, trial_number=trial.number,
                trial_id=trial_id(store, study.study_name, trial.number),
                state={"COMPLETE": "complete", "PRUNED": "pruned"}.get(trial.state.name, "failed"),
                config=result.get("config") or trial.user_attrs.get(ATTR_CONFIG), result=result,
                started_at=_utc(started), finished_at=_utc(ended),
                duration_s=(ended - started) if started and ended else None,
                host=trial.user_attrs.get("npas_host"), node_id=trial.user_attrs.get("npas_node_id"),
                worker_pid=run.get("pid"), failure_reason=trial.user_attrs.get(ATTR_REASON),
                controller=trial.user_attrs.get(ATTR_CONTROLLER),
                engine=engine, rung=trial.user_attrs.get("npas_rung"),
            )
        )
        repaired.append(trial.number)
    return repaired


def _engine(study: optuna.Study) -> str | None:
    """The engine the study's search runs on (its recorded settings)."""
    record = study.user_attrs.get("npas_settings")
    return str(record.get("engine", "pool")) if isinstance(record, dict) else None


def _utc(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def orphans(trials: Sequence[FrozenTrial], controller: str, in_flight: Collection[int], *,
            since: dt.datetime) -> list[int]:
    """The trials a stopped controller leaves behind: those it had in flight, and those
    it asked Optuna for since ``since`` that are still running and its own or nobody's
    yet (a signal between asking and launching, or between a run's end and its record,
    leaves a trial that no engine lists as in flight).

    Example:
        >>> from optuna.trial import TrialState, create_trial
        >>> t = create_trial(state=TrialState.RUNNING, user_attrs={ATTR_CONTROLLER: "me"})
        >>> t.number, t.datetime_start = 3, dt.datetime(2026, 1, 2)
        >>> orphans([t], "me", [5], since=dt.datetime(2026, 1, 1))
        [3, 5]
        >>> orphans([t], "other", [], since=dt.datetime(2026, 1, 1))
        []
    """
    from optuna.trial import TrialState

    asked = [
        t.number for t in trials
        if t.state == TrialState.RUNNING
        and t.user_attrs.get(ATTR_CONTROLLER, controller) == controller
        and t.datetime_start is not None and t.datetime_start >= since
    ]
    return sorted(set(in_flight) | set(asked))


def interrupt_trial(study: optuna.Study, store: StudyStore, number: int, reason: str) -> bool:
    """Mark trial ``number`` failed as interrupted, record it, queue its params once.

    ``False`` (and nothing written) if the trial is no longer running.
    """
    import optuna
    from optuna.trial import TrialState

    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.number != number:  # trials are listed by number; be safe all the same
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if frozen.state != TrialState.RUNNING:
        return False
    ran = ATTR_CONFIG in frozen.user_attrs  # set as the config goes to a worker (one killed
    # in between was lost with its controller: it is replaced by a new trial, not retried)
    retry_of = frozen.user_attrs.get(ATTR_RETRY_OF)
    params: dict[str, object] = {}
    if ran and retry_of is None:  # a first run: queue it again
        params, retry_of = dict(frozen.params), number
    elif not ran and retry_of is not None:  # a retry that never ran: it is still owed
        params = dict(frozen.system_attrs.get("fixed_params") or frozen.params)
    retry = bool(params)
    tid = trial_id(store, study.study_name, number)
    try:
        store.optuna_storage.set_trial_user_attr(tid, ATTR_INTERRUPTED, True)
        store.optuna_storage.set_trial_user_attr(tid, ATTR_REASON, reason)
        study.tell(number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        return False  # it finished meanwhile (its controller was alive after all)
    store.write_result(
        row_for(
            study=study.study_name,
            trial_number=number,
            trial_id=tid,
            state="failed",
            engine=_engine(study),
            failure_reason=f"interrupted: {reason}" + ("; queued again" if retry else ""),
            finished_at=dt.datetime.now(dt.timezone.utc),
        )
    )
    if retry:
        study.enqueue_trial(params, user_attrs={ATTR_RETRY_OF: retry_of})
    return True
