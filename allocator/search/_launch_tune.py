"""The Tune engine: ``ray.tune.Tuner`` runs the trials, Optuna (through Tune's
``OptunaSearch``) proposes them, npas's recorder writes them.

* :func:`tune_search_alg` is an ``OptunaSearch`` on the study's ``RDBStorage`` with the
  study name, npas's define-by-run space (structural choices first, the budget within
  what they can be built with), both objectives as ``metric``/``mode`` lists and npas's
  sampler. Each trial it proposes carries its Optuna trial number and its full trial
  config; it records the trial's start, each epoch Tune's result stream brings (the
  live learning curve) and its end, through the same
  :class:`~allocator.search._recorder.Recorder` as the pool, so the study, its
  ``npas_results`` rows, ``npas pareto``, the plots and the dashboard are the same.
* :func:`tune_trainable` is the function trainable: it runs the trial function in
  Tune's worker, reports every epoch with ``tune.report`` and the whole result at the
  end. It never writes to the database.
* :class:`ParetoScheduler` is the ``--early-stop pareto`` rule as a Tune
  ``TrialScheduler``; ``--early-stop asha`` is Tune's own ``ASHAScheduler`` on
  validation accuracy.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from allocator._errors import ConfigError
from allocator.search._epochs import ETA, GRACE, make_rule
from allocator.search._objectives import Objective
from allocator.search._recorder import Finished, Recorder
from allocator.search._sharing import ATTR_CONTROLLER
from allocator.search._worker import (
    DEFAULT_RUNNER,
    execute,
    resolve_runner,
    state_bytes,
    state_from,
)

__all__ = ["LIVE", "MODEL", "NpasOptunaSearch", "hooks_of", "ParetoScheduler", "make_scheduler", "tune_search_alg",
           "tune_trainable"]

logger = logging.getLogger(__name__)

#: Keys npas adds to a Tune trial's config and final result.
TRIAL, CONFIG, ERROR, DONE, OUT = "npas_trial", "npas_config", "npas_error", "npas_done", "npas_out"
#: The config's "keep the trained weights" flag, and the final result's weights (bytes; the
#: driver's callback takes them out of the result before Tune keeps it).
KEEP, MODEL = "npas_keep", "npas_model"


def tune_trainable(runner: str = DEFAULT_RUNNER) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable that runs one npas trial per call.

    Each epoch is one ``tune.report`` (``epoch``, ``val_accuracy``, ``trainable_params``,
    ...); the last report carries the whole result (``npas_done``, ``npas_out``: JSON).

    Example:
        >>> from ray import tune
        >>> from allocator.search import tune_search_alg, tune_trainable
        >>> tuner = tune.Tuner(tune_trainable(), tune_config=tune.TuneConfig(  # doctest: +SKIP
        ...     search_alg=tune_search_alg(settings), num_samples=8))
    """

    def trainable(config: dict[str, Any]) -> None:
        if ERROR in config:
            out: dict[str, Any] = {"result": {"status": "failed", "failure_reason": config[ERROR]}}
        else:
            resume, pending = _last_checkpoint(), {}

            def checkpoint(epoch: int, state: dict[str, Any]) -> None:
                pending["state"] = state_bytes(state)

            def report(epoch: int, metrics: dict[str, float]) -> bool:
                _report({**metrics, "epoch": int(epoch)}, pending.pop("state", None))
                return False

            out = execute(resolve_runner(runner), config[CONFIG], keep_model=bool(config.get(KEEP)),
                          report=report, checkpoint=checkpoint, resume=resume)
            if resume is not None:
                out["resumed_from"] = int(state_from(resume)["epoch"])
        model = out.pop("model", None)
        result = out["result"]
        final = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not
                 isinstance(v, bool)}
        weights = {MODEL: model} if model is not None else {}
        tune.report({**final, DONE: True, OUT: json.dumps(out, default=str), **weights})

    return trainable


@dataclass
class _Hooks:
    """What the searcher records with (never pickled with Tune's experiment state)."""

    recorder: Recorder | None = None
    models: dict[str, bytes] = field(default_factory=dict)  # kept weights, by Tune trial id
    #: ``on_finished(run, status, values)`` after each trial is recorded (the controller's count)
    on_finished: Callable[[Finished, str, list[float] | None], None] | None = None
    tick: Callable[[], None] | None = None  # the progress line, at every step of Tune's loop
    controller: str | None = None  # the controller that claims the trials asked
    searcher: Any = None  # the searcher Tune runs (a restored run: the one it unpickled)


#: The hooks of the Tune run this process drives, by study name: a searcher and callback
#: that ``tune.Tuner.restore`` unpickles find them here (they are never pickled).
LIVE: dict[str, _Hooks] = {}


def hooks_of(study: str) -> _Hooks:
    """The live hooks of ``study``'s run in this process (blank ones if none)."""
    return LIVE.get(study) or _Hooks()


def _report(metrics: dict[str, Any], state: bytes | None) -> None:
    """``tune.report`` of one epoch, with the run's state as Tune checkpoint if given."""
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / _STATE).write_bytes(state)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _last_checkpoint() -> bytes | None:
    """The state this trial last reported, when Tune restarts it after a failure."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / _STATE
        return path.read_bytes() if path.exists() else None


_STATE = "npas-state.pt"


class NpasOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that records each trial with npas's recorder (driver side)."""

    def __init__(self, space: Callable[[Any], dict[str, Any]], *, objs: Sequence[Objective],
                 recorder: Recorder | None, sampler: Any, study_name: str, storage: Any,
                 points: list[dict[str, Any]] | None = None) -> None:
        super().__init__(
            space=space, metric=[o.name for o in objs],
            mode=["max" if o.direction == "maximize" else "min" for o in objs],
            sampler=sampler, study_name=study_name, storage=storage,
            points_to_evaluate=points or None,
        )
        self._npas = _Hooks(recorder, searcher=self)
        self._npas_study = study_name
        # Tune trial id -> Optuna number, and configs by number: saved with the searcher's
        # state, so that a restored run records the trials it goes on with
        self._npas_numbers: dict[str, int] = {}
        self._npas_configs: dict[int, dict[str, Any]] = {}

    @property
    def running(self) -> int:
        """Trials started and not yet recorded as ended."""
        return len(self._npas_numbers)

    @property
    def in_flight(self) -> list[int]:
        """Optuna numbers of the trials started and not yet recorded as ended."""
        return sorted(self._npas_numbers.values())

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        recorder = self._npas.recorder
        if config and recorder is not None:
            number = int(config[TRIAL])
            self._npas_numbers[trial_id] = number
            if ERROR in config:
                recorder.study.set_attrs(number, {"npas_failure_reason": config[ERROR]})
            else:
                self._npas_configs[number] = config[CONFIG]
                recorder.started(number, config[CONFIG])
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        number = self._npas_numbers.get(trial_id)
        recorder = self._npas.recorder
        if number is not None and recorder is not None and "epoch" in result:
            recorder.epoch(number, int(result["epoch"]), result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Record the trial and tell Optuna (instead of ``OptunaSearch``, which would tell
        a stopped trial complete with its values at the rung)."""
        number = self._npas_numbers.pop(trial_id, None)
        recorder = self._npas.recorder
        if number is None or recorder is None:
            return
        result = dict(result or {})
        model = self._npas.models.pop(trial_id, None)
        if result.get(DONE) and result.get(OUT):
            out = {**json.loads(result[OUT]), "model": model}
        elif error:
            out = {"result": {"status": "failed", "failure_reason":
                              "the trial's Tune worker failed on every attempt (see Tune's "
                              "error.txt in the run's folder)"}}
        else:  # stopped by the scheduler at a rung: its last epoch's values
            rung = int(result.get("epoch", 0))
            recorder.epoch(number, rung, result)  # Tune does not pass a stopping result on
            kept = {*_METRICS, *(o.name for o in recorder.objs)}
            out = {"result": {**{k: v for k, v in result.items() if k in kept},
                              "status": "pruned", "epochs_run": rung}}
        run = Finished(number, self._npas_configs.pop(number, {}), out,
                       resumed_from=out.get("resumed_from"))
        status, values = recorder.finished(run)
        if self._npas.on_finished is not None:
            self._npas.on_finished(run, status, values)

    def save(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint, without the recorder and the define-by-run space
        (a resumed npas search rebuilds both; the study itself is in the store)."""
        kept = {k: self.__dict__.pop(k) for k in ("_npas", "_space")}
        try:
            super().save(checkpoint_path)
        finally:
            self.__dict__.update(kept)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_npas", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._npas = hooks_of(self._npas_study)
        if self._npas_study in LIVE:  # unpickled by Tuner.restore: the one Tune runs now
            self._npas.searcher = self

    @property
    def hooks(self) -> _Hooks:
        """The recorder and callbacks this searcher records with."""
        return self._npas


_METRICS = ("val_accuracy", "val_loss", "trainable_params", "step_time_s", "train_loss")


def define_by_run(space: Any, base: Mapping[str, Any], floor: Any, controller: str | None,
                  keep: bool = False, study: str = "") -> Callable[[Any], dict[str, Any]]:
    """npas's space as an ``OptunaSearch`` define-by-run function: it suggests the params
    and returns, as constants, the trial's number and full config (or why it has none),
    and with ``keep`` the flag that makes the trial send its trained weights back. The
    trial is claimed by the controller driving ``study`` now (a restored run's), else by
    ``controller``."""

    def define(trial: Any) -> dict[str, Any]:
        me = hooks_of(study).controller or controller
        if me is not None:
            trial.set_user_attr(ATTR_CONTROLLER, me)
        extra: dict[str, Any] = {TRIAL: trial.number, **({KEEP: True} if keep else {})}
        try:
            params = space.suggest(trial, budget_floor=floor)
            extra[CONFIG] = {**base, **space.to_config(params)}
        except ConfigError as exc:
            extra[ERROR] = str(exc)
        return extra

    return define


def tune_search_alg(settings: Any, *, recorder: Recorder | None = None, sampler: Any = None,
                    storage: Any = None, controller: str | None = None,
                    space: Any = None, keep: bool = False) -> NpasOptunaSearch:
    """An ``OptunaSearch`` over npas's space for ``settings`` (a ``SearchSettings``), on
    the study ``settings.study`` at ``storage``; with ``keep`` each trial sends its trained
    weights back (the recorder's ``keep`` hook keeps them).

    Example:
        >>> from allocator.search import SearchSettings, tune_search_alg  # doctest: +SKIP
        >>> alg = tune_search_alg(SearchSettings("demo", storage="sqlite:///npas.db"))  # doctest: +SKIP
    """
    from allocator.search._checks import fit_to_model
    from allocator.search._feasible import budget_floor
    from allocator.search._objectives import make_sampler, objectives
    from allocator.search._store import StudyStore
    from search_spaces import load_space

    objs = objectives(settings.objective)
    base = settings.base_config()
    if space is None:
        space = load_space(settings.space)
        if settings.runner == DEFAULT_RUNNER:
            space = fit_to_model(space, base)
    if storage is None:
        storage = StudyStore(settings.storage).optuna_storage
    if sampler is None:
        sampler = make_sampler(settings.sampler, settings.seed, trials=settings.trials,
                               n_objectives=len(objs))
    floor = budget_floor(space, base) if settings.runner == DEFAULT_RUNNER else None
    points = space.grid() if settings.sampler == "grid" else None
    return NpasOptunaSearch(define_by_run(space, base, floor, controller, keep, settings.study), objs=objs,
                            recorder=recorder, sampler=sampler, study_name=settings.study,
                            storage=storage, points=points)


class ParetoScheduler(FIFOScheduler):
    """``--early-stop pareto`` (or ``asha``-like, on accuracy alone) as a Tune scheduler:
    the rule of ``allocator/search/_halving.py`` judges each trial at each rung."""

    def __init__(self, name: str, epochs: int, objs: Sequence[Objective]) -> None:
        super().__init__()
        from allocator.search._epochs import judged_objectives

        self.rule = make_rule(name, epochs, objs)
        self.names = [o.name for o in judged_objectives(name, objs)]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch = result.get("epoch")
        if self.rule is None or epoch is None or result.get(DONE):
            return TrialScheduler.CONTINUE
        values = [result.get(n) for n in self.names]
        if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            return TrialScheduler.CONTINUE
        stop = self.rule.report(trial.trial_id, int(epoch), [float(v) for v in values])  # type: ignore[arg-type]
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE


def make_scheduler(name: str, epochs: int, objs: Sequence[Objective]) -> TrialScheduler:
    """The Tune scheduler for ``--early-stop name``."""
    if name == "asha":
        make_rule(name, epochs, objs)  # the same checks (epochs for one rung)
        return ASHAScheduler(metric="val_accuracy", mode="max", time_attr="epoch",
                             max_t=epochs, grace_period=GRACE, reduction_factor=ETA)
    if name == "pareto":
        return ParetoScheduler(name, epochs, objs)
    return FIFOScheduler()
