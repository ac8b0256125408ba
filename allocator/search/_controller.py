"""The search controller: Optuna proposes, an engine runs, one recorder writes.

Everything is validated before the first write (the space, the trial config, the
early-stopping rule, the storage, the Ray cluster and its workers). Then a loop keeps
``concurrency`` trials in flight: the launch step (:class:`~allocator.search._launches.Launches`)
asks Optuna for a trial, the space turns its params into a config, the engine's launcher
(:class:`~allocator.search._launch_pool.PoolLauncher`) runs it; each epoch it reports
reaches the store as it happens, and when it ends the
:class:`~allocator.search._recorder.Recorder` tells Optuna and writes its
``npas_results`` row. Workers only compute; the controller alone writes to the database.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator._errors import ConfigError
from allocator.search import _artifacts
from allocator.search._checks import check_options, check_trial_config, fit_to_model
from allocator.search._cluster import Cluster, connect
from allocator.search._engines import check_engine
from allocator.search._epochs import make_rule
from allocator.search._feasible import budget_floor, check_feasible
from allocator.search._launch_pool import PoolLauncher
from allocator.search._launches import Launches
from allocator.search._objectives import make_sampler, objectives
from allocator.search._optuna_study import OptunaStudy
from allocator.search._pool import WorkerPool
from allocator.search._progress import SearchStatus
from allocator.search._query import pareto_front
from allocator.search._recorder import ATTR_RETRY_OF, Finished, Recorder, Tally
from allocator.search._recovery import interrupt_trial, orphans
from allocator.search._retry import DatabaseRetry
from allocator.search._settings import SearchSettings, runs_npas_trials
from allocator.search._sharing import Controller
from allocator.search._store import StudyStore
from search_spaces import SearchSpace, load_space

__all__ = ["SearchSummary", "resume_search", "run_search"]

#: ``keep(number, model_bytes, values)``: a finished trial's weights, to keep or not.
Keep = Callable[[int, bytes, list[float]], None]

logger = logging.getLogger(__name__)

Progress = Callable[[SearchStatus], None]

_TICK_S = 1.0
_SEED_STRIDE = 1_000_003  # seeds of controllers that join a study together stay apart


@dataclass(frozen=True)
class SearchSummary:
    """How a search ended: counts, the Pareto front (rows of ``npas_results``), time."""

    study: str
    storage: str  # masked: no password
    complete: int
    failed: int
    pruned: int
    pareto: list[dict[str, Any]]
    elapsed_s: float
    artifacts: str | None
    loop_s: float = 0.0  # from the first trial handed out to the last one recorded


def run_search(settings: SearchSettings, *, on_progress: Progress | None = None) -> SearchSummary:
    """Run a new search; :class:`ConfigError` if the study already exists.

    Example:
        >>> from allocator.search import SearchSettings, run_search
        >>> summary = run_search(SearchSettings("demo", model="mlp", trials=4))  # doctest: +SKIP
        >>> summary.complete  # doctest: +SKIP
        4
    """
    return _Search(settings, resume=False, on_progress=on_progress).run()


def resume_search(
    study: str,
    *,
    storage: str | None = None,
    on_progress: Progress | None = None,
    **given: Any,
) -> SearchSummary:
    """Continue a study after its controller stopped or was killed, or join the
    controllers running it now (on this machine or others).

    Completed trials are kept; trials left running by a controller that is gone are
    marked failed and retried once; those of live controllers are left to them. All the
    controllers of a study together stop at ``trials`` counted trials.
    ``given`` may change how the search runs (trials, concurrency, Ray address...), not
    what it searches (a different model, space, epochs, seed or objective is an error).
    """
    with StudyStore(storage, must_exist=True) as store:
        store.require_study(study)
        record = store.load_study(study).user_attrs.get("npas_settings")
    if not isinstance(record, dict):
        raise ConfigError(f"study {study!r} was not made by `npas search`; it cannot be resumed")
    settings = SearchSettings.resumed(record, {**given, "study": study, "storage": storage})
    return _Search(settings, resume=True, on_progress=on_progress).run()


class _Search:
    """One controller's run of a search: set up, loop, tear down."""

    def __init__(self, settings: SearchSettings, *, resume: bool, on_progress: Progress | None):
        self.s, self.resume = settings, resume
        self.on_progress = on_progress or (lambda status: None)
        self.started = time.monotonic()
        self.objs = objectives(settings.objective)
        self.tally = Tally([o.direction for o in self.objs])
        self.last = ""
        self.loop_s = 0.0

    def _validate(self) -> SearchSpace:
        self.s.validate()
        space = load_space(self.s.space)
        check_options(space, self.s.trial_options)
        make_rule(self.s.early_stop, self.s.epochs, self.objs)
        check_engine(self.s)
        if runs_npas_trials(self.s.runner):
            check_trial_config({**self.s.base_config(), **space.to_config(space.example())})
            if not self.resume:  # a resumed study keeps the space it recorded
                space = fit_to_model(space, self.s.base_config())
            check_feasible(space, self.s.base_config())
        if self.s.sampler == "grid":
            space.grid()
        return space

    def run(self) -> SearchSummary:
        space = self._validate()
        floor = budget_floor(space, self.s.base_config()) if runs_npas_trials(self.s.runner) else None
        store = StudyStore(self.s.storage)
        cluster: Cluster | None = None
        me: Controller | None = None
        launcher: PoolLauncher | None = None
        art_dir = None
        try:
            if not self.resume:  # foreign tables, the name taken (exactly or by collation)
                store.check_new_study(self.s.study)
            if self.s.keep_models != "none":
                art_dir = self.s.artifacts_dir(store.sqlite_file)
                _artifacts.check_dir(art_dir)
            cluster = connect(
                self.s.ray_address, concurrency=self.s.concurrency,
                cpus_per_trial=self.s.cpus_per_trial, gpus_per_trial=self.s.gpus_per_trial,
                verbose=self.s.verbose, **self.s.code_shipping(),
            )
            if self.s.engine == "pool":
                launcher = self._launcher(space)
                launcher.start(self.s.early_stop, epochs=self.s.epochs, objs=self.objs)
            # --- everything is valid: the first write happens here
            store.initialise()
            db = DatabaseRetry(self.s.db_timeout, store.masked_url)
            me = Controller(store.engine, self.s.study, call=db.call)
            me.register()
            with store._errors("write to"):  # a database lost mid-search: one line, not a trace
                study = self._open_study(store, db, me, space, art_dir)
                if launcher is None:
                    self._tune(store, study, me, space, art_dir)
                else:
                    self._loop(store, study, me, launcher, space, floor, art_dir)
            pareto = db.call(lambda: pareto_front(store, self.s.study), "read the results")
        finally:
            if launcher is not None:
                launcher.stop()
            if me is not None:
                me.stop()
            if cluster is not None:
                cluster.shutdown()
            store.close()
        counts = self.tally.counts
        return SearchSummary(
            study=self.s.study, storage=store.masked_url, complete=counts["complete"],
            failed=counts["failed"], pruned=counts["pruned"], pareto=pareto,
            elapsed_s=time.monotonic() - self.started,
            artifacts=str(art_dir) if art_dir else None, loop_s=self.loop_s,
        )

    def _launcher(self, space: SearchSpace) -> PoolLauncher:
        base = self.s.base_config()
        try:  # workers load its dataset and initialise what a trial needs as they start
            prepare = {**base, **space.to_config(space.example())}
        except ConfigError:
            prepare = base
        pool = WorkerPool(
            self.s.runner, self.s.concurrency, cpus=self.s.cpus_per_trial,
            gpus=self.s.gpus_per_trial, prepare=prepare,
            # CPU peak memory is a process's peak RSS: a fresh process per trial
            fresh=self.s.objective == "peak_memory" and self.s.gpus_per_trial == 0,
        )
        return PoolLauncher(pool, max_retries=self.s.max_retries, note=self._note)

    def _note(self, text: str) -> None:
        self.last = text

    def _open_study(self, store: StudyStore, db: DatabaseRetry, me: Controller,
                    space: SearchSpace, art_dir: Path | None) -> OptunaStudy:
        n_obj = len(self.objs)
        if self.resume:
            # A sampler seeded as before would draw the first run's params again: seed it
            # by how far the study got (still reproducible for the same history), and
            # apart from the seeds of the controllers running the study with it.
            seen = len(OptunaStudy.load(store.optuna_storage, self.s.study, None, db=db).trials())
            rank = me.live().index(me.id)  # 0: no live controller joined earlier
            sampler = make_sampler(self.s.sampler, self.s.seed + seen + _SEED_STRIDE * rank,
                                   trials=self.s.trials, n_objectives=n_obj)
            return OptunaStudy.load(store.optuna_storage, self.s.study, sampler, db=db)
        sampler = make_sampler(self.s.sampler, self.s.seed, trials=self.s.trials,
                               n_objectives=n_obj)
        record = {**self.s.record(space.to_dict()), "artifacts": str(art_dir) if art_dir else None}
        # race-free; rows an earlier study of the name left go by trial id
        return OptunaStudy.create(store, self.s.study, self.objs, sampler, record=record, db=db)

    # ------------------------------------------------------------- the loop

    def _loop(self, store: StudyStore, study: OptunaStudy, me: Controller,
              launcher: PoolLauncher, space: SearchSpace, floor: Any,
              art_dir: Path | None) -> None:
        keep_weights = self.s.keep_models != "none"
        recorder = Recorder(study, store, self.objs, controller=me.id, engine=launcher.engine,
                            keep=self._keeper(study, art_dir))
        launches = Launches(study, store, me, trials=self.s.trials,
                            grid=space.grid() if self.s.sampler == "grid" else None,
                            seed=self.s.seed)
        self.launches = launches
        loop_start, started_at = time.monotonic(), datetime.datetime.now()
        try:
            if self.resume:
                launches.recover()
            while True:
                while launcher.idle:
                    trial = launches.next(self.tally)
                    if trial is None:
                        break
                    self._start(recorder, launcher, space, floor, trial, keep_weights)
                self._report(len(launcher.running))
                # live curves: after the launches, so that no trial waits on them to start
                for number, epoch, metrics in launcher.epochs():
                    recorder.epoch(number, epoch, metrics)
                if not launcher.running:  # nothing more to launch, here or anywhere
                    if not launches.others_running:
                        break
                    time.sleep(_TICK_S)  # other controllers' trials may yet be interrupted
                    continue
                for run in launcher.wait(_TICK_S):
                    self._finish(recorder, study, run)
        except BaseException:
            self._interrupt(store, study, me, launcher.running, since=started_at,
                            stop=launcher.stop)
            raise
        self.loop_s = time.monotonic() - loop_start
        self.tally.reset(study.trials())
        self._report(0, finished=True)

    def _tune(self, store: StudyStore, study: OptunaStudy, me: Controller,
              space: SearchSpace, art_dir: Path | None) -> None:
        """The trials on ``ray.tune.Tuner``: Tune's ``OptunaSearch`` on this study asks,
        the same recorder writes (see ``_launch_tune.py``); a run Tune stopped on SIGINT
        is left for ``--resume`` to restore (see ``_tune_run.py``)."""
        from allocator.search import _tune_run as tr
        from allocator.search._launch_tune import tune_search_alg

        recorder = Recorder(study, store, self.objs, controller=me.id, engine="tune",
                            keep=self._keeper(study, art_dir))
        self.launches = launches = Launches(study, store, me, trials=self.s.trials)
        folder = tr.run_dir(store.sqlite_file, self.s.artifacts)
        restore = tr.restorable(study, me, self.s.trials) if self.resume else None
        if self.resume:
            launches.recover()  # what Tune does not go on with is failed and queued again
        self.tally.reset(study.trials())
        samples = self.s.trials - self.tally.done
        hooks = tune_search_alg(self.s, recorder=recorder, sampler=study.study.sampler,
                                storage=store.optuna_storage, controller=me.id, space=space,
                                keep=art_dir is not None).hooks
        ticked = [0.0]

        def finished(run: Finished, status: str, values: list[float] | None) -> None:
            self._ended(run, status, values)
            self._report(hooks.searcher.running)

        def tick() -> None:
            if time.monotonic() - ticked[0] >= _TICK_S:
                ticked[0] = time.monotonic()
                self._report(hooks.searcher.running)

        loop_start = time.monotonic()
        started_at = datetime.datetime.now()
        try:
            if samples > 0 or restore is not None:
                tr.run_tune(self.s, searcher=hooks.searcher, samples=samples, objs=self.objs,
                         folder=folder, on_finished=finished, tick=tick, controller=me.id,
                         restore=restore)
        except BaseException:  # SIGTERM (a KeyboardInterrupt here) or an error
            self._interrupt(store, study, me, hooks.searcher.in_flight, since=started_at)
            raise
        if hooks.searcher.in_flight:  # Tune's SIGINT handler stopped it, its state saved
            tr.mark_for_restore(study, tr.experiment_dir(folder, self.s.study),
                             hooks.searcher.in_flight, self.s.trials)
            raise KeyboardInterrupt
        self.loop_s = time.monotonic() - loop_start
        self.tally.reset(study.trials())
        self._report(0, finished=True)

    def _keeper(self, study: OptunaStudy, art_dir: Path | None) -> Keep:
        """What the recorder calls with a finished trial's weights: upload them as the
        trial's artifact if ``--keep-models`` asks for them (all, or on the front)."""
        art_store = _artifacts.open_store(art_dir) if art_dir else None

        def keep(number: int, model: bytes, values: list[float]) -> None:
            if art_store is not None and (self.s.keep_models == "all" or self.tally.on_front(values)):
                study.call(lambda: _artifacts.keep(art_store, study.trial(number), model,
                                                   storage=study.storage), "keep a trial's weights")
        return keep

    def _start(self, recorder: Recorder, launcher: PoolLauncher, space: SearchSpace, floor: Any,
               trial: Any, keep: bool) -> None:
        """Start ``trial`` on the engine, or fail it at once if its params made no config."""
        retry_of = trial.user_attrs.get(ATTR_RETRY_OF)
        try:
            params = recorder.db(lambda: space.suggest(trial, budget_floor=floor),
                                 "record a trial's parameters")
            config = {**self.s.base_config(), **space.to_config(params)}
        except ConfigError as exc:
            recorder.not_started(trial.number, str(exc), retry_of)
            self.tally.add("failed")
            return
        launcher.launch(trial.number, config, keep)
        # written while the trial starts: its config and `running` row are in the store
        # before any of its epochs or its end (the loop records those after this)
        recorder.started(trial.number, config, retry_of)

    def _finish(self, recorder: Recorder, study: OptunaStudy, run: Finished) -> None:
        """Record ``run``; dropped if another controller took its trial over (this one
        was presumed gone)."""
        import optuna

        try:  # its first write fails if another controller took the trial over
            status, values = recorder.finished(run)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            if study.running(run.number):
                raise
            logger.warning("trial %d was taken over by another controller (this one was "
                           "presumed gone); its result is dropped and its retry runs elsewhere",
                           run.number)
            self.last = f"trial {run.number} was taken over by another controller"
            return
        self._ended(run, status, values)

    def _ended(self, run: Finished, status: str, values: list[float] | None) -> None:
        """Count a recorded trial; the progress line's last event."""
        self.tally.add(status, values)
        if values is not None:
            self.last = f"trial {run.number} complete: " + " ".join(
                f"{o.name}={_short(v)}" for o, v in zip(self.objs, values, strict=True))
        else:
            reason = run.out["result"].get("failure_reason")
            self.last = f"trial {run.number} {status}" + (f": {reason}" if reason else "")

    def _interrupt(self, store: StudyStore, study: OptunaStudy, me: Controller,
                   in_flight: list[int], *, since: datetime.datetime,
                   stop: Callable[[], None] | None = None) -> None:
        """Ctrl-C or an error: fail this controller's trials in flight, and those it asked
        Optuna for since ``since`` and never launched or recorded, and queue them again
        (once); ``stop`` the engine."""
        store.reconnect()  # the signal may have left a read open on a pooled connection
        try:  # under the lease, so that no other controller counts the study meanwhile
            with me.lease(timeout_s=5, retry=False):
                left = orphans(study.study.get_trials(deepcopy=False), me.id, in_flight,
                               since=since)
                for number in left:
                    try:
                        interrupt_trial(study.study, store, number, "the search was interrupted")
                    except Exception as exc:  # the store may have failed; resume fixes it later
                        logger.warning("could not mark trial %d as interrupted: %s", number, exc)
        except Exception as exc:
            logger.warning("could not mark the trials in flight as interrupted: %s", exc)
        if stop is not None:
            stop()

    def _report(self, running: int, finished: bool = False) -> None:
        counts = self.tally.counts
        self.on_progress(SearchStatus(
            study=self.s.study, target=self.launches.target, done=self.tally.done,
            running=running, complete=counts["complete"], failed=counts["failed"],
            pruned=counts["pruned"], pareto_size=self.tally.pareto_size,
            elapsed_s=time.monotonic() - self.started, last=self.last, finished=finished,
        ))


def _short(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
