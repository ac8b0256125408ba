"""The search controller: Optuna's ask-and-tell, trials on Ray actors, one writer.

Everything is validated before the first write (the space, the trial config, the storage,
the Ray cluster and its workers). Then a loop keeps ``concurrency`` trials in flight:
ask Optuna for a trial, turn its params into a config, hand the config to an idle actor;
when an actor answers, tell Optuna, record the trial in ``npas_results`` and keep the
weights if asked. Workers only compute; the controller alone writes to the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from allocator._errors import ConfigError
from allocator.search import _artifacts
from allocator.search._checks import check_options, check_trial_config, fit_to_model
from allocator.search._cluster import Cluster, connect
from allocator.search._objectives import Objective, make_sampler, objectives, values_of
from allocator.search._pool import WorkerPool
from allocator.search._progress import SearchStatus
from allocator.search._query import pareto_front
from allocator.search._retry import DatabaseRetry
from allocator.search._settings import SearchSettings, runs_npas_trials
from allocator.search._sharing import ATTR_CONTROLLER, Controller
from allocator.search._store import StudyStore
from allocator.search._table import row_for
from search_spaces import SearchSpace, load_space

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSummary", "resume_search", "run_search"]

logger = logging.getLogger(__name__)

Progress = Callable[[SearchStatus], None]

#: User attributes npas sets on Optuna trials.
ATTR_CONFIG, ATTR_RESULT, ATTR_REASON = "npas_config", "npas_result", "npas_failure_reason"
ATTR_RETRY_OF, ATTR_INTERRUPTED = "npas_retry_of", "npas_interrupted"
ATTR_WORKER = "npas_worker"  # pid and Unix start/end times of the run on its worker
ATTR_ATTEMPTS = "npas_attempts"  # runs of the trial, when its worker died under it
ATTR_ALLOCATION = "npas_allocation"  # an SSN's allocation as one line of text
_MAX_ATTR_CHARS = 60_000  # MySQL TEXT holds 64 KiB
_TICK_S = 1.0
_SEED_STRIDE = 1_000_003  # seeds of controllers that join a study together stay apart
_GONE = "the controller stopped while the trial ran"


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


@dataclass
class _Running:
    trial: optuna.Trial
    worker: Any
    config: dict[str, Any]
    keep: bool = False
    attempts: int = 1  # runs so far: a run whose worker died is retried (--max-retries)


class _Search:
    def __init__(self, settings: SearchSettings, *, resume: bool, on_progress: Progress | None):
        self.s = settings
        self.resume = resume
        self.on_progress = on_progress or (lambda status: None)
        self.started = time.monotonic()
        self.inflight: dict[Any, _Running] = {}
        self.pool = WorkerPool(
            settings.runner, settings.concurrency, cpus=settings.cpus_per_trial,
            gpus=settings.gpus_per_trial,
            # CPU peak memory is a process's peak RSS: a fresh process per trial
            fresh=settings.objective == "peak_memory" and settings.gpus_per_trial == 0,
        )
        self.points: list[list[float]] = []
        self.counts = {"complete": 0, "failed": 0, "pruned": 0}
        self.last = ""
        self.loop_s = 0.0
        self._pareto_size = 0
        self.done = 0  # counted trials of the study (all controllers), as last read
        self.target = settings.trials
        self.others_running = 0  # trials other live controllers run, as last read
        self.grid: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------- validation

    def _validate(self) -> tuple[SearchSpace, list[Objective], list[dict[str, Any]] | None]:
        self.s.validate()
        space = load_space(self.s.space)
        check_options(space, self.s.trial_options)
        objs = objectives(self.s.objective)
        grid: list[dict[str, Any]] | None = None
        if runs_npas_trials(self.s.runner):
            check_trial_config({**self.s.base_config(), **space.to_config(space.example())})
            if not self.resume:  # a resumed study keeps the space it recorded
                space = fit_to_model(space, self.s.base_config())
        if self.s.sampler == "grid":
            grid = space.grid()
        return space, objs, grid

    def run(self) -> SearchSummary:
        space, objs, grid = self._validate()
        store = StudyStore(self.s.storage)
        cluster: Cluster | None = None
        me: Controller | None = None
        try:
            if not self.resume:  # foreign tables, the name taken (exactly or by collation)
                store.check_new_study(self.s.study)
            art_dir = None
            if self.s.keep_models != "none":
                art_dir = self.s.artifacts_dir(store.sqlite_file)
                _artifacts.check_dir(art_dir)
            cluster = connect(
                self.s.ray_address,
                concurrency=self.s.concurrency,
                cpus_per_trial=self.s.cpus_per_trial,
                gpus_per_trial=self.s.gpus_per_trial,
                verbose=self.s.verbose,
                **self.s.code_shipping(),
            )
            self.pool.prepare = self._prepare_config(space)
            self.pool.start()
            # --- everything is valid: the first write happens here
            store.initialise()
            self.db = DatabaseRetry(self.s.db_timeout, store.masked_url)
            me = self.me = Controller(store.engine, self.s.study, call=self.db.call)
            me.register()
            study = self._open_study(store, space, objs, art_dir)
            self.art_store = _artifacts.open_store(art_dir) if art_dir else None
            with store._errors("write to"):  # a database lost mid-search: one line, not a trace
                self._loop(store, study, space, objs, grid)
            pareto = self.db.call(lambda: pareto_front(store, self.s.study), "read the results")
        finally:
            self.pool.stop()
            if me is not None:
                me.stop()
            if cluster is not None:
                cluster.shutdown()
            store.close()
        return SearchSummary(
            study=self.s.study,
            storage=store.masked_url,
            complete=self.counts["complete"],
            failed=self.counts["failed"],
            pruned=self.counts["pruned"],
            pareto=pareto,
            elapsed_s=time.monotonic() - self.started,
            artifacts=str(art_dir) if art_dir else None,
            loop_s=self.loop_s,
        )

    def _prepare_config(self, space: SearchSpace) -> dict[str, Any]:
        """A config like the search's trials (one point of the space): workers load its
        dataset and initialise what a trial needs once per process as they start."""
        base = self.s.base_config()
        try:
            return {**base, **space.to_config(space.example())}
        except ConfigError:
            return base

    # ------------------------------------------------------------- the study

    def _open_study(
        self,
        store: StudyStore,
        space: SearchSpace,
        objs: list[Objective],
        art_dir: Any,
    ) -> optuna.Study:
        import optuna

        if self.resume:
            # A sampler seeded as before would draw the first run's params again: seed it
            # by how far the study got (still reproducible for the same history), and
            # apart from the seeds of the controllers running the study with it.
            seen = len(store.load_study(self.s.study).get_trials(deepcopy=False))
            rank = self.me.live().index(self.me.id)  # 0: no live controller joined earlier
            sampler = make_sampler(
                self.s.sampler, self.s.seed + seen + _SEED_STRIDE * rank,
                trials=self.s.trials, n_objectives=len(objs),
            )
            return store.load_study(self.s.study, sampler=sampler)
        sampler = make_sampler(
            self.s.sampler, self.s.seed, trials=self.s.trials, n_objectives=len(objs)
        )
        study = store.create_study(  # race-free; old rows of the name go by trial id
            self.s.study, directions=[o.direction for o in objs], sampler=sampler
        )
        with store._errors("write to"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([o.name for o in objs])
            record = self.s.record(space.to_dict())
            record["objectives"] = [dataclasses.asdict(o) for o in objs]
            record["artifacts"] = str(art_dir) if art_dir else None
            study.set_user_attr("npas_settings", record)
        return study

    # ------------------------------------------------------------- the loop

    def _loop(
        self,
        store: StudyStore,
        study: optuna.Study,
        space: SearchSpace,
        objs: list[Objective],
        grid: list[dict[str, Any]] | None,
    ) -> None:
        import ray

        from allocator.search._recovery import recover

        if grid is not None:
            self.grid = list(grid)
            random.Random(self.s.seed).shuffle(self.grid)
        self.objs = objs
        keep = self.s.keep_models != "none"
        loop_start = time.monotonic()
        try:
            if self.resume:
                with self.me.lease():
                    live = self.me.live()
                    self.db.call(lambda: recover(study, store, reason=_GONE, live=live),
                                 "recover interrupted trials")
            while True:
                while self.pool.idle:
                    trial = self._reserve(store, study)
                    if trial is None:
                        break
                    self._launch(store, study, space, keep, trial)
                self._report(store)
                if not self.inflight:  # nothing more to launch, here or anywhere
                    if not self.others_running:
                        break
                    time.sleep(_TICK_S)  # other controllers' trials may yet be interrupted
                    continue
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=_TICK_S)
                for ref in ready:
                    self._finish(store, study, objs, ref)
        except BaseException:
            self._interrupt(store, study)
            raise
        self.loop_s = time.monotonic() - loop_start
        self._recount(self.db.call(lambda: study.get_trials(deepcopy=False), "read the study"))
        self._report(store, finished=True)

    def _reserve(self, store: StudyStore, study: optuna.Study) -> optuna.Trial | None:
        """Under the study's launch lease: take over the trials of gone controllers,
        recount the study, and ask Optuna for a trial claimed by this controller if the
        study still needs one (``None`` if not)."""
        from optuna.trial import TrialState

        from allocator.search._recovery import counted, recover

        db = self.db
        with self.me.lease():
            live = self.me.live()
            db.call(lambda: recover(study, store, reason=_GONE, live=live, repair=False),
                    "recover interrupted trials")
            trials = db.call(lambda: study.get_trials(deepcopy=False), "read the study")
            self._recount(trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            self.others_running = sum(
                t.user_attrs.get(ATTR_CONTROLLER) != self.me.id for t in running
            )
            n_waiting = sum(t.state == TrialState.WAITING for t in trials)
            target, params = self.s.trials, None
            if self.grid is not None:
                seen = [t.params for t in trials if counted(t) or not t.state.is_finished()]
                left = [p for p in self.grid if p not in seen]
                target = min(target, self.done + len(running) + n_waiting + len(left))
                if left and not n_waiting:
                    params = left[0]
            self.target = target
            if self.done + len(running) >= target:
                return None
            if params is not None:
                db.call(partial(study.enqueue_trial, params), "queue a trial")
            trial = db.call(study.ask, "ask for a trial")
            db.call(partial(trial.set_user_attr, ATTR_CONTROLLER, self.me.id), "claim a trial")
        return trial

    def _launch(self, store: StudyStore, study: optuna.Study, space: SearchSpace, keep: bool,
                trial: optuna.Trial) -> bool:
        """Start ``trial`` on an idle worker; ``False`` if its params made no config."""
        db = self.db
        retry_of = trial.user_attrs.get(ATTR_RETRY_OF)
        try:
            params = db.call(lambda: space.suggest(trial), "record a trial's parameters")
            config = {**self.s.base_config(), **space.to_config(params)}
        except ConfigError as exc:
            db.call(partial(trial.set_user_attr, ATTR_REASON, str(exc)), "record a trial")
            self._tell(study, trial, state=_state("FAIL"))
            row = row_for(study=self.s.study, trial_number=trial.number, trial_id=trial._trial_id,
                          state="failed", failure_reason=str(exc), retry_of=retry_of,
                          controller=self.me.id)
            db.call(lambda: store.write_result(row), "record a trial")
            self.counts["failed"] += 1
            self.done += 1
            return False
        db.call(lambda: trial.set_user_attr(ATTR_CONFIG, config), "record a trial")
        row = row_for(study=self.s.study, trial_number=trial.number, trial_id=trial._trial_id,
                      state="running", config=config, retry_of=retry_of, started_at=_utcnow(),
                      controller=self.me.id)
        db.call(lambda: store.write_result(row), "record a trial")
        worker = self.pool.take()
        ref = worker.run.remote(config, keep)
        self.inflight[ref] = _Running(trial, worker, config, keep)
        return True

    def _tell(self, study: optuna.Study, trial: optuna.Trial, values: Any = None,
              state: Any = None) -> None:
        """``study.tell``, retried; a tell whose answer was lost is not repeated."""

        def finished() -> bool:
            return bool(study._storage.get_trial(trial._trial_id).state.is_finished())

        self.db.call(lambda: study.tell(trial, values, state=state), "record a finished trial",
                     already=finished)

    def _retry_run(self, run: _Running, lost: str) -> bool:
        """The worker died under ``run``: run it again on a new worker if retries are left.

        The trial stays ``RUNNING`` and claimed by this controller meanwhile, so no other
        controller takes it over or counts it twice."""
        self.pool.replace(run.worker)
        if run.attempts > self.s.max_retries:
            return False
        logger.warning("trial %d: %s; running it again (attempt %d of %d)", run.trial.number,
                       lost, run.attempts + 1, self.s.max_retries + 1)
        self.last = f"trial {run.trial.number} lost its worker; running it again"
        worker = self.pool.take()
        ref = worker.run.remote(run.config, run.keep)
        self.inflight[ref] = dataclasses.replace(run, worker=worker, attempts=run.attempts + 1)
        return True

    def _finish(self, store: StudyStore, study: optuna.Study, objs: list[Objective], ref: Any) -> bool:
        """Record the trial ``ref`` ran; ``False`` if it was handed to a new worker instead,
        or if another controller took it over (this one was presumed gone)."""
        import optuna
        import ray

        run = self.inflight.pop(ref)
        try:
            out = ray.get(ref)
            self.pool.give_back(run.worker)
        except ray.exceptions.RayError as exc:  # the worker or its node died
            lost = f"worker lost: {' '.join(str(exc).split())[:300]}"
            if self._retry_run(run, lost):
                return False
            if run.attempts > 1:
                lost = f"worker lost on each of {run.attempts} attempts; last: {lost[13:]}"
            out = {"result": {"status": "failed", "failure_reason": lost}}
        result = dict(out["result"])
        status = str(result.get("status", "failed"))
        values: list[float] | str | None = None
        if status == "complete":
            values = values_of(result, objs)
            if isinstance(values, str):
                status, result["failure_reason"] = "failed", values
        reason: str | None = result.get("failure_reason")
        trial = run.trial
        try:  # its first write fails if another controller took the trial over
            status = self._record(store, study, objs, run, out, result, status, values, reason)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            if self._still_ours(study, trial):
                raise
            return False
        self.counts[status] += 1
        self.done += 1
        return True

    def _still_ours(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Whether ``trial`` is still running, i.e. no other controller took it over."""
        state = self.db.call(lambda: study._storage.get_trial(trial._trial_id).state,
                             "read a trial")
        if state.name == "RUNNING":
            return True
        logger.warning("trial %d was taken over by another controller (this one was presumed "
                       "gone); its result is dropped and its retry runs elsewhere", trial.number)
        self.last = f"trial {trial.number} was taken over by another controller"
        return False

    def _record(self, store: StudyStore, study: optuna.Study, objs: list[Objective],
                run: _Running, out: dict[str, Any], result: dict[str, Any], status: str,
                values: list[float] | str | None, reason: str | None) -> str:
        """Tell Optuna how ``run`` ended and write its row; the status it was recorded as."""
        trial = run.trial
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
        for key, value in attrs.items():
            self.db.call(partial(trial.set_user_attr, key, value), "record a finished trial")
        self._intermediate(study, trial, result)
        if status == "complete" and isinstance(values, list):
            if self.art_store is not None and out.get("model") is not None and (
                self.s.keep_models == "all" or _on_front(values, self.points, objs)
            ):
                keep = partial(_artifacts.keep, self.art_store, trial, out["model"])
                self.db.call(keep,
                             "keep a trial's weights")
            self._tell(study, trial, values)
            self.points.append(values)
            self._pareto_size = _front_size(self.points, objs)
            self.last = f"trial {trial.number} complete: " + " ".join(
                f"{o.name}={_short(v)}" for o, v in zip(objs, values, strict=True)
            )
        else:
            status = "pruned" if status == "pruned" else "failed"
            self._tell(study, trial, state=_state("PRUNED" if status == "pruned" else "FAIL"))
            self.last = f"trial {trial.number} {status}" + (f": {reason}" if reason else "")
        started, finished = out.get("started_at"), out.get("finished_at")
        row = row_for(
            study=self.s.study, trial_number=trial.number, trial_id=trial._trial_id,
            state=status, config=result.get("config") or run.config, result=result,
            started_at=_utc(started), finished_at=_utc(finished),
            duration_s=(finished - started) if started and finished else None,
            host=out.get("host"), node_id=out.get("node_id"), worker_pid=out.get("pid"),
            failure_reason=reason, controller=self.me.id,
        )
        self.db.call(lambda: store.write_result(row), "record a finished trial")
        return status

    def _intermediate(self, study: optuna.Study, trial: optuna.Trial, result: Mapping[str, Any]) -> None:
        """The first objective (validation accuracy by default) per epoch as the trial's
        intermediate values (the dashboard's learning curves). Written when the trial ends:
        workers send results back, they never write to the database."""
        storage = study._storage
        first = self.objs[0].name
        for epoch in result.get("history") or ():
            step, value = epoch.get("epoch"), epoch.get(first)
            if step is None or value is None or not math.isfinite(value):
                continue
            self.db.call(
                partial(storage.set_trial_intermediate_value, trial._trial_id, int(step), float(value)),
                "record a finished trial",
            )

    # ------------------------------------------------------------- bookkeeping

    def _recount(self, trials: list[Any]) -> None:
        """Counts, done and the Pareto points from the study's trials (all controllers')."""
        from allocator.search._recovery import counted

        self.counts = {"complete": 0, "failed": 0, "pruned": 0}
        self.points = []
        for t in trials:
            if not counted(t):
                continue
            state = t.state.name.lower()
            self.counts["complete" if state == "complete" else "pruned" if state == "pruned" else "failed"] += 1
            if state == "complete" and t.values is not None:
                self.points.append(list(t.values))
        self.done = sum(self.counts.values())
        self._pareto_size = _front_size(self.points, self.objs)

    def _interrupt(self, store: StudyStore, study: optuna.Study) -> None:
        """Ctrl-C or an error: fail the trials in flight and queue them again (once)."""
        from allocator.search._recovery import interrupt_trial

        lease: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.inflight:  # so that no other controller counts the study meanwhile
            lease = self.me.lease(timeout_s=5, retry=False)
        try:
            with lease:
                for run in self.inflight.values():
                    try:
                        interrupt_trial(study, store, run.trial.number, "the search was interrupted")
                    except Exception:  # the store itself may have failed; resume fixes it later
                        logger.warning("could not mark trial %d as interrupted", run.trial.number)
        except Exception:
            logger.warning("could not mark the trials in flight as interrupted")
        self.pool.stop()
        self.inflight.clear()

    def _report(self, store: StudyStore, finished: bool = False) -> None:
        status = SearchStatus(
            study=self.s.study,
            target=self.target,
            done=self.done,
            running=len(self.inflight),
            complete=self.counts["complete"],
            failed=self.counts["failed"],
            pruned=self.counts["pruned"],
            pareto_size=self._pareto_size,
            elapsed_s=time.monotonic() - self.started,
            last=self.last,
            finished=finished,
        )
        self.on_progress(status)


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


def _front_size(points: list[list[float]], objs: list[Objective]) -> int:
    from allocator.search._objectives import pareto_indices

    return len(pareto_indices(points, [o.direction for o in objs])) if points else 0


def _on_front(values: list[float], points: list[list[float]], objs: list[Objective]) -> bool:
    from allocator.search._objectives import pareto_indices

    return len(points) in pareto_indices([*points, values], [o.direction for o in objs])


def _compact(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result for a user attribute, trimmed to fit every database's TEXT."""
    out = dict(result)
    if len(json.dumps(out, default=str)) > _MAX_ATTR_CHARS:
        for key in ("history", "allocation"):
            out.pop(key, None)
        out["truncated"] = True
    return out


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def _waiting(trial: Any) -> bool:
    return bool(trial.state.name == "WAITING")


def _n_waiting(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def _utc(seconds: float | None) -> Any:
    import datetime as dt

    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _short(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
