"""One recorder for every engine: Optuna's values and attributes plus the ``npas_results`` row.

A trial is recorded three times: when it starts (its config as ``npas_config``, a
``running`` row), after each epoch while it runs (its validation accuracy as an
intermediate value: the dashboard's live learning curve) and when it ends (the result as
user attributes, the state told to Optuna, the final row). Whichever engine ran the
trial (the pool of Ray actors or Ray Tune), only the controller calls the recorder:
workers never write to the database.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allocator.search._objectives import Objective, pareto_indices, values_of
from allocator.search._optuna_study import OptunaStudy
from allocator.search._store import StudyStore
from allocator.search._table import row_for

__all__ = [
    "ATTR_ALLOCATION", "ATTR_ATTEMPTS", "ATTR_CONFIG", "ATTR_INTERRUPTED", "ATTR_REASON",
    "ATTR_RESULT", "ATTR_RESUMED", "ATTR_RETRY_OF", "ATTR_RUNG", "ATTR_WORKER", "Finished", "Recorder",
    "Tally", "allocation_line",
]

#: User attributes npas sets on Optuna trials.
ATTR_CONFIG, ATTR_RESULT, ATTR_REASON = "npas_config", "npas_result", "npas_failure_reason"
ATTR_RETRY_OF, ATTR_INTERRUPTED = "npas_retry_of", "npas_interrupted"
ATTR_WORKER = "npas_worker"  # pid and Unix start/end times of the run on its worker
ATTR_ATTEMPTS = "npas_attempts"  # runs of the trial, when its worker died under it
ATTR_ALLOCATION = "npas_allocation"  # an SSN's allocation as one line of text
ATTR_RUNG = "npas_rung"  # the epoch at which early stopping stopped a pruned trial
ATTR_RESUMED = "npas_resumed_from"  # the checkpoint's epoch a retried trial went on from
_MAX_ATTR_CHARS = 60_000  # MySQL TEXT holds 64 KiB


@dataclass(frozen=True)
class Finished:
    """How one run of a trial ended, as its engine tells it.

    ``out`` is the worker's outcome (see ``allocator.search._worker.execute``): ``result``,
    timings, where it ran and the weights if kept."""

    number: int
    config: Mapping[str, Any]
    out: Mapping[str, Any]
    attempts: int = 1
    rung: int | None = None
    resumed_from: int | None = None  # the epoch of the checkpoint its last attempt went on from


@dataclass
class Tally:
    """Counts of counted trials and the objective values of the complete ones."""

    directions: list[str]
    counts: dict[str, int] = field(default_factory=lambda: {"complete": 0, "failed": 0, "pruned": 0})
    points: list[list[float]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def pareto_size(self) -> int:
        return len(pareto_indices(self.points, self.directions)) if self.points else 0

    def add(self, status: str, values: list[float] | None = None) -> None:
        self.counts[status] += 1
        if status == "complete" and values is not None:
            self.points.append(list(values))

    def on_front(self, values: list[float]) -> bool:
        return len(self.points) in pareto_indices([*self.points, values], self.directions)

    def reset(self, trials: list[Any]) -> None:
        """Recount from the study's trials (all controllers')."""
        from allocator.search._recovery import counted

        self.counts = {"complete": 0, "failed": 0, "pruned": 0}
        self.points = []
        for t in trials:
            if counted(t):
                state = t.state.name.lower()
                self.add(state if state in self.counts else "failed",
                         list(t.values) if state == "complete" and t.values else None)


class Recorder:
    """Writes what the engines report into Optuna and ``npas_results``.

    Example:
        >>> recorder = Recorder(study, store, objs, controller="c1", engine="pool")  # doctest: +SKIP
        >>> recorder.started(trial.number, config)  # doctest: +SKIP
        >>> recorder.epoch(trial.number, 1, {"val_accuracy": 0.4})  # doctest: +SKIP
        >>> recorder.finished(Finished(trial.number, config, out))  # doctest: +SKIP
        'complete'
    """

    def __init__(self, study: OptunaStudy, store: StudyStore, objs: list[Objective], *,
                 controller: str, engine: str, keep: Any = None) -> None:
        self.study, self.store, self.objs = study, store, objs
        self.controller, self.engine = controller, engine
        #: ``keep(number, model_bytes, values) -> None`` keeps a trial's weights, if set.
        self.keep = keep
        self.db = study.call
        self._epochs: dict[int, set[int]] = {}  # epochs recorded so far, per trial

    def _write(self, number: int, state: str, what: str, **fields: Any) -> None:
        row = row_for(study=self.study.name, trial_number=number,
                      trial_id=self.study.trial_id(number), state=state,
                      controller=self.controller, engine=self.engine, **fields)
        self.db(lambda: self.store.write_result(row), what)

    def not_started(self, number: int, reason: str, retry_of: int | None) -> None:
        """The trial's params made no config: failed with the reason, never run."""
        self.study.set_attrs(number, {ATTR_REASON: reason})
        self.study.tell(number, state="FAIL")
        self._write(number, "failed", "record a trial", failure_reason=reason, retry_of=retry_of)

    def started(self, number: int, config: Mapping[str, Any], retry_of: int | None = None) -> None:
        self.study.set_attrs(number, {ATTR_CONFIG: dict(config)})
        self._write(number, "running", "record a trial", config=config, retry_of=retry_of,
                    started_at=dt.datetime.now(dt.timezone.utc))

    def epoch(self, number: int, epoch: int, metrics: Mapping[str, Any]) -> None:
        """One epoch of a running trial: its first objective (validation accuracy by
        default) as intermediate value."""
        value = metrics.get(self.objs[0].name)
        seen = self._epochs.setdefault(number, set())
        if value is None or not math.isfinite(float(value)) or int(epoch) in seen:
            return
        self.study.intermediate(number, int(epoch), float(value))
        seen.add(int(epoch))

    def finished(self, run: Finished) -> tuple[str, list[float] | None]:
        """Tell Optuna how the run ended and write its row: the status and values."""
        out, number = run.out, run.number
        result = dict(out["result"])
        status = str(result.get("status", "failed"))
        values: list[float] | None = None
        if status == "complete":
            got = values_of(result, self.objs)
            if isinstance(got, str):
                status, result["failure_reason"] = "failed", got
            else:
                values = got
        reason = result.get("failure_reason")
        attrs: dict[str, Any] = {
            ATTR_RESULT: _compact(result),
            "npas_host": out.get("host"),
            "npas_node_id": out.get("node_id"),
            ATTR_WORKER: {k: out.get(k) for k in ("pid", "started_at", "finished_at")},
        }
        if reason:
            attrs[ATTR_REASON] = str(reason)
        if summary := allocation_line(result.get("allocation")):
            attrs[ATTR_ALLOCATION] = summary
        if run.attempts > 1:
            attrs[ATTR_ATTEMPTS] = run.attempts
        if run.resumed_from is not None:
            attrs[ATTR_RESUMED] = run.resumed_from
        if status == "pruned":
            attrs[ATTR_RUNG] = run.rung if run.rung is not None else result.get("epochs_run")
        self.study.set_attrs(number, attrs, "record a finished trial")
        for epoch, metrics in out.get("epochs") or ():  # what the live path had not written
            self.epoch(number, int(epoch), metrics)
        for item in result.get("history") or ():
            self.epoch(number, int(item.get("epoch", 0)), item)
        if values is not None:
            if self.keep is not None and out.get("model") is not None:
                self.keep(number, out["model"], values)
            self.study.tell(number, values)
        else:
            status = "pruned" if status == "pruned" else "failed"
            if status == "pruned":
                self._never_reached(number, run.config)
            self.study.tell(number, state="PRUNED" if status == "pruned" else "FAIL")
        self._epochs.pop(number, None)
        started, ended = out.get("started_at"), out.get("finished_at")
        self._write(
            number, status, "record a finished trial",
            config=result.get("config") or run.config, result=result,
            started_at=_utc(started), finished_at=_utc(ended),
            duration_s=(ended - started) if started and ended else None,
            host=out.get("host"), node_id=out.get("node_id"), worker_pid=out.get("pid"),
            failure_reason=reason, rung=attrs.get(ATTR_RUNG),
        )
        return status, values


    def _never_reached(self, number: int, config: Mapping[str, Any]) -> None:
        """A NaN at the last epoch of a stopped trial: the epoch it never reached.

        Optuna's TPE ranks a pruned trial by its last intermediate value with a single
        objective's direction, which a multi-objective study has not (it raises); a NaN
        there is its documented "worse than every complete trial", which a stopped trial
        is. Plots skip the NaN: the curve ends at the rung."""
        last = config.get("epochs")
        if isinstance(last, int) and last > max(self._epochs.get(number) or {0}):
            self.study.intermediate(number, last, math.nan)


def allocation_line(allocation: Mapping[str, Any] | None) -> str | None:
    """An SSN's allocation table as one line of text, whole: Optuna Dashboard shows a
    string attribute in full but cuts any other at 1,024 characters.

    Example:
        >>> allocation_line({"budget": 100, "trainable": 99, "groups": [{}], "layers": [
        ...     {"layer": "fc", "shape": "10x9", "group": 0, "generator": "repeat",
        ...      "templates": 1, "params": 0}]})
        'trainable 99 of budget 100, 1 group | fc 10x9 g0 repeat K1 +0'
    """
    if not allocation or not allocation.get("layers"):
        return None
    n = len(allocation.get("groups") or ())
    head = (f"trainable {allocation.get('trainable')} of budget {allocation.get('budget')}, "
            f"{n} group{'s' if n != 1 else ''}")
    layers = [
        f"{r['layer']} {r['shape']} g{r['group']} {r['generator']} K{r['templates']} +{r['params']}"
        for r in allocation["layers"]
    ]
    return " | ".join([head, *layers])


def _compact(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result for a user attribute, trimmed to fit every database's TEXT."""
    out = dict(result)
    if len(json.dumps(out, default=str)) > _MAX_ATTR_CHARS:
        for key in ("history", "allocation"):
            out.pop(key, None)
        out["truncated"] = True
    return out


def _utc(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
