"""Several controllers on one PostgreSQL study, each a process of its own (with its own
Ray where trials run): nothing is launched twice or past ``--trials``, and a controller
that joins or resumes never fails the trials of one that is still alive."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from allocator.search import StudyStore
from allocator.search._recovery import counted, recover
from allocator.search._sharing import Controller
from allocator.search._table import CONTROLLERS, LAUNCH_LEASES
from tests.conftest import REPO, kill_processes_under
from tests.test_search_resume import SPACE  # the same small space of SSN settings

NPAS = str(Path(sys.executable).with_name("npas"))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
DIST = {"budget": optuna.distributions.FloatDistribution(0.1, 1.0)}

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A live controller in a process of its own: it claims one trial that reached a worker,
# then holds the study's launch lease until it is killed.
LIVE_CONTROLLER = """
import sys, time, optuna
from allocator.search import StudyStore
from allocator.search._sharing import Controller, ATTR_CONTROLLER
optuna.logging.set_verbosity(optuna.logging.WARNING)
store = StudyStore(sys.argv[1])
me = Controller(store.engine, "s")
me.register()
study = store.load_study("s")
with me.lease():
    trial = study.ask({"budget": optuna.distributions.FloatDistribution(0.1, 1.0)})
    trial.set_user_attr(ATTR_CONTROLLER, me.id)
trial.set_user_attr("npas_config", {"budget": trial.params["budget"]})
with me.lease():
    print(trial.number, flush=True)
    time.sleep(600)
"""

# One of several controllers racing for the study's trials, through the search's own
# launch step (`Launches.next`); each trial is told complete after a short while.
RACER = """
import random, sys, time, optuna
from allocator.search import StudyStore
from allocator.search._launches import Launches
from allocator.search._optuna_study import OptunaStudy
from allocator.search._recorder import Tally
from allocator.search._retry import DatabaseRetry
from allocator.search._sharing import Controller
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, target = sys.argv[1], int(sys.argv[2])
store = StudyStore(url)
db = DatabaseRetry(60, store.masked_url)
me = Controller(store.engine, "s", call=db.call)
me.register()
study = OptunaStudy.load(store.optuna_storage, "s", None, db=db)
launches = Launches(study, store, me, trials=target)
tally = Tally(["maximize", "minimize"])
mine = 0
while True:
    trial = launches.next(tally)
    if trial is None:
        if not launches.others_running:
            break
        time.sleep(0.05)
        continue
    trial.suggest_float("budget", 0.1, 1.0)
    time.sleep(random.uniform(0.0, 0.05))
    study.study.tell(trial, [random.random(), 10.0])
    mine += 1
me.stop()
print(mine, flush=True)
"""


def _new_study(url: str) -> tuple[StudyStore, optuna.Study]:
    store = StudyStore(url)
    store.initialise()
    study = optuna.create_study(storage=store.optuna_storage, study_name="s",
                                directions=["maximize", "minimize"])
    return store, study


def _foreign_controller(store: StudyStore, cid: str, *, age_s: float) -> None:
    """A controller row from another machine whose heartbeat is ``age_s`` seconds old."""
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(CONTROLLERS).values(
            id=cid, study="s", host="elsewhere", pid=1, process="another-boot|pid:[1]|1|1",
            started_at=now - age_s - 10, heartbeat_at=now - age_s, state="running",
        ))


def _claimed(study: optuna.Study, cid: str | None, *, ran: bool = True) -> int:
    trial = study.ask(DIST)
    if cid is not None:
        trial.set_user_attr("npas_controller", cid)
    if ran:
        trial.set_user_attr("npas_config", {"budget": trial.params["budget"]})
    return trial.number


def test_a_resuming_controller_fails_only_the_trials_of_gone_controllers(postgres_url):
    store, study = _new_study(postgres_url)
    live = subprocess.Popen([sys.executable, "-c", LIVE_CONTROLLER, postgres_url], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = Controller(store.engine, "s")
    try:
        live_trial = int(live.stdout.readline() or -1)  # claimed, and it holds the lease now
        assert live_trial >= 0, live.stderr.read()[-2000:]
        _foreign_controller(store, "far-and-alive", age_s=1)
        _foreign_controller(store, "far-and-gone", age_s=600)
        alive_far = _claimed(study, "far-and-alive")
        gone_far = _claimed(study, "far-and-gone")
        unclaimed = _claimed(study, None, ran=False)  # killed between ask and claim
        me.register()

        with pytest.raises(TimeoutError), me.lease(timeout_s=1.5):  # a live holder keeps it
            pass
        ids = me.live()
        assert ids[-1] == me.id and "far-and-alive" in ids and "far-and-gone" not in ids
        assert recover(study, store, reason="gone", live=ids) == [gone_far, unclaimed]
        states = {t.number: t.state.name for t in study.get_trials()}
        assert states[live_trial] == states[alive_far] == "RUNNING"

        live.send_signal(signal.SIGKILL)  # now it is gone: its process no longer exists
        live.wait(timeout=30)
        with me.lease(timeout_s=10):  # the dead holder's lease is taken over
            assert recover(study, store, reason="gone", live=me.live()) == [live_trial]
        trials = {t.number: t for t in study.get_trials()}
        assert trials[alive_far].state.name == "RUNNING"  # its heartbeat is fresh
        for number in (gone_far, unclaimed, live_trial):
            assert trials[number].state.name == "FAIL"
            assert trials[number].user_attrs["npas_interrupted"] is True
        retried = sorted(t.user_attrs["npas_retry_of"] for t in trials.values()
                         if t.state.name == "WAITING")
        assert retried == sorted([gone_far, live_trial])  # the unclaimed one never ran
        with store.engine.connect() as conn:
            holder = conn.execute(sa.select(LAUNCH_LEASES.c.holder)).scalar_one()
        assert holder is None
    finally:
        if live.poll() is None:
            live.kill()
        live.communicate(timeout=30)
        me.stop()
        store.close()


def test_controllers_racing_for_launches_never_overshoot_the_study(postgres_url):
    store, study = _new_study(postgres_url)
    store.close()
    target = 24
    racers = [subprocess.Popen([sys.executable, "-c", RACER, postgres_url, str(target)],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    outs = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0, 0], [err[-2000:] for _, err in outs]
    mine = [int(out.strip()) for out, _ in outs]
    with StudyStore(postgres_url, must_exist=True) as store:
        trials = store.load_study("s").get_trials()
    assert len(trials) == sum(mine) == target  # none asked past --trials
    assert all(counted(t) for t in trials)
    assert len({t.user_attrs["npas_controller"] for t in trials}) == 3


CONFIG = ("budget", "mapping", "groups", "upsample")
TRIALS = 10


def _rows(url: str, *where: str) -> list[sa.Row]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(
                "SELECT * FROM npas_results WHERE study = 'c'" + "".join(f" AND {w}" for w in where)
            )))
    except sa.exc.SQLAlchemyError:
        return []
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_controllers_on_one_postgresql_study_share_it_and_both_finish(postgres_url, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    first = [
        NPAS, "search", "--study", "c", "--model", "cnn1d", "--data", "mnist1d",
        "--storage", postgres_url, "--space", str(space), "--trials", str(TRIALS),
        # trials of several seconds: the second controller joins while the first runs one
        "--concurrency", "1", "--epochs", "15", "--data-size", "6000",
    ]
    second = [NPAS, "search", "--study", "c", "--resume", "--storage", postgres_url]
    ray_dirs = [Path(f"/tmp/npas-c-{secrets.token_hex(4)}") for _ in range(2)]  # a Ray each
    procs: list[subprocess.Popen[str]] = []
    try:
        for command, ray_tmp in zip((first, second), ray_dirs, strict=True):
            procs.append(subprocess.Popen(
                command, env={**ENV, "RAY_TMPDIR": str(ray_tmp)}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            ))
            # the second joins while the first has a trial running
            deadline = time.monotonic() + 120
            while not _rows(postgres_url, "state = 'running'") and len(procs) == 1:
                assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the first controller never started a trial"
                time.sleep(0.05)
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        for ray_tmp in ray_dirs:
            kill_processes_under(str(ray_tmp))
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    for out, _ in outs:  # each ends with the whole study's counts
        counts = re.search(r"study c: (\d+) complete, (\d+) failed, (\d+) pruned", out)
        assert counts and sum(map(int, counts.groups())) == TRIALS, out[-2000:]

    with StudyStore(postgres_url, must_exist=True) as store:
        trials = store.load_study("c").get_trials()
        rows = store.results("c")
    # exactly --trials trials, each finished once, none interrupted, nothing left running
    assert len(trials) == TRIALS and all(counted(t) for t in trials)
    assert not [t for t in trials if t.user_attrs.get("npas_interrupted")]
    assert sorted(r["trial_number"] for r in rows) == [t.number for t in trials]
    assert {r["state"] for r in rows} <= {"complete", "failed"}
    configs = [tuple(r[k] for k in CONFIG) for r in rows]
    assert len(set(configs)) == len(configs)  # no config launched twice
    # both controllers ran trials, and each row names the one that did
    by = {t.number: t.user_attrs["npas_controller"] for t in trials}
    assert {r["trial_number"]: r["controller"] for r in rows} == by
    assert len(set(by.values())) == 2
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            controllers = conn.execute(sa.select(CONTROLLERS.c.id, CONTROLLERS.c.state)).all()
            holder = conn.execute(sa.select(LAUNCH_LEASES.c.holder)).scalar_one()
    finally:
        engine.dispose()
    assert {c.id for c in controllers} == set(by.values())
    assert {c.state for c in controllers} == {"stopped"} and holder is None


def test_a_store_made_before_shared_studies_gets_the_new_column_and_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.storages.RDBStorage(url).engine.dispose()  # Optuna's tables
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # npas_results as an earlier npas made it
        conn.execute(sa.text("CREATE TABLE npas_results (study VARCHAR(512) NOT NULL, "
                             "trial_number INTEGER NOT NULL, trial_id INTEGER NOT NULL, "
                             "state VARCHAR(16) NOT NULL, PRIMARY KEY (study, trial_number))"))
        conn.execute(sa.text("INSERT INTO npas_results VALUES ('old', 0, 1, 'complete')"))
    engine.dispose()
    with StudyStore(url) as store:  # read as it is: the missing column reads as NULL
        assert [r["controller"] for r in store.results("old")] == [None]
        assert list(store.dataframe("old")["controller"]) == [None]
        store.initialise()
        store.initialise()  # twice: nothing to add the second time
        tables = set(sa.inspect(store.engine).get_table_names())
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns("npas_results")}
        rows = store.results("old")
    assert {"npas_controllers", "npas_launch_leases"} <= tables and "controller" in columns
    assert [(r["trial_number"], r["state"], r["controller"]) for r in rows] == [(0, "complete", None)]
