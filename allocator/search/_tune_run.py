"""The Tune engine's run: ``tune.Tuner`` (new, or restored with ``Tuner.restore``), its
folder beside the study, its driver callback, and what an interrupted run leaves for
``--resume``.

A run stopped by SIGINT ends through Tune's own handler: Tune saves its experiment state
(the searcher's included) one last time, and the trials it was running stay ``RUNNING``
in the study, listed in the study's ``npas_tune_restore`` attribute with the run's folder.
``--resume`` then takes those trials over and continues the run with ``Tuner.restore``:
each goes on from its last epoch's checkpoint, as the same Optuna trial, and the searcher
proposes only what is left. Where that does not fit (stopped any other way: SIGTERM, a
kill, an error; the folder gone; a different ``--trials``), the trials in flight are
failed as interrupted and queued again once, as on the pool.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray import tune

from allocator.search._launch_tune import LIVE, MODEL, NpasOptunaSearch, hooks_of, make_scheduler
from allocator.search._objectives import Objective
from allocator.search._optuna_study import OptunaStudy
from allocator.search._recorder import Finished
from allocator.search._sharing import ATTR_CONTROLLER, Controller

__all__ = ["ATTR_RESTORE", "mark_for_restore", "restorable", "run_dir", "run_tune"]

logger = logging.getLogger(__name__)

#: Study attribute: what an interrupted Tune run left for ``--resume`` (see the module).
ATTR_RESTORE = "npas_tune_restore"


def run_dir(storage_file: Any, artifacts: Any) -> str:
    """Where Tune keeps its run (``RunConfig.storage_path``): beside a SQLite study file,
    else beside the artifacts, else ``./npas-tune``."""
    if storage_file is not None:
        return str(storage_file.resolve().parent / f"{storage_file.stem}-tune")
    return os.path.abspath(str(artifacts) if artifacts else "npas-tune")


def experiment_dir(folder: str, study: str) -> str:
    """The run's own folder (``RunConfig.name`` under ``storage_path``)."""
    return str(Path(folder) / re.sub(r"[^A-Za-z0-9._-]", "_", study))


def mark_for_restore(study: OptunaStudy, path: str, numbers: list[int], trials: int) -> None:
    """Tune stopped on SIGINT with ``numbers`` in flight: leave them to ``--resume``."""
    study.call(lambda: study.study.set_user_attr(
        ATTR_RESTORE, {"path": path, "trials": list(numbers), "target": trials}),
        "record the interrupted Tune run")


def restorable(study: OptunaStudy, me: Controller, trials: int) -> str | None:
    """On ``--resume``: the folder of the interrupted Tune run to continue, its trials in
    flight taken over by controller ``me`` (so recovery leaves them to Tune); ``None``
    where Tune's restore does not fit (then recovery fails and queues them again)."""
    mark = study.study.user_attrs.get(ATTR_RESTORE)
    if not isinstance(mark, dict):
        return None
    study.call(lambda: study.study.set_user_attr(ATTR_RESTORE, None), "read the study")
    path = str(mark.get("path"))
    if mark.get("target") != trials or not tune.Tuner.can_restore(path):
        logger.warning("the interrupted Tune run at %s cannot be restored here; its trials "
                       "in flight run again from the start", path)
        return None
    with me.lease():
        for number in mark.get("trials") or ():
            if study.running(int(number)):
                study.set_attrs(int(number), {ATTR_CONTROLLER: me.id}, "take a trial over")
    return path


class _Driver(tune.Callback):
    """Calls the progress line at every step of Tune's loop, and takes a trial's kept
    weights out of its final result before Tune keeps the result (its experiment state
    would hold them otherwise); the searcher hands them to the recorder when the trial
    completes. Its hooks are looked up by study name (a restored run unpickles it)."""

    def __init__(self, study: str) -> None:
        self.study = study

    def on_step(self, iteration: int, trials: list[Any], **info: Any) -> None:
        tick = hooks_of(self.study).tick
        if tick is not None:
            tick()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        # Tune lets a callback change the result in place; this one runs before the loggers
        model = result.pop(MODEL, None)
        if model is not None:
            hooks_of(self.study).models[trial.trial_id] = model


def run_tune(settings: Any, *, searcher: NpasOptunaSearch, samples: int, objs: Sequence[Objective],
             folder: str, on_finished: Callable[[Finished, str, list[float] | None], None],
             tick: Callable[[], None], controller: str | None = None,
             restore: str | None = None) -> Any:
    """Run ``samples`` trials with ``tune.Tuner``, or continue the run at ``restore``
    (``Tuner.restore``, unfinished trials from their checkpoints); the ``ResultGrid``.
    ``searcher.hooks.searcher`` is then the searcher Tune ran (the restored one)."""
    from allocator.search._engines import tune_loggers

    # npas reports objectives only at the end of a trial, and chooses its own loggers
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    hooks = searcher.hooks
    hooks.on_finished, hooks.tick, hooks.controller = on_finished, tick, controller
    trainable = tune.with_resources(
        _trainable(settings.runner),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    LIVE[settings.study] = hooks
    try:
        if restore is not None:
            tuner = tune.Tuner.restore(restore, trainable=trainable, resume_unfinished=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, num_samples=samples,
                    scheduler=make_scheduler(settings.early_stop, settings.epochs, objs),
                    max_concurrent_trials=settings.concurrency,
                    # one Tune actor serves trial after trial (its imports, its dataset):
                    # the function trainable's session is reset between trials
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=Path(experiment_dir(folder, settings.study)).name, storage_path=folder,
                    failure_config=tune.FailureConfig(max_failures=settings.max_retries),
                    callbacks=[_Driver(settings.study), *tune_loggers(settings.log)], verbose=0,
                ),
            )
        return tuner.fit()
    finally:
        LIVE.pop(settings.study, None)


def _trainable(runner: str) -> Any:
    from allocator.search._launch_tune import tune_trainable

    return tune_trainable(runner)
