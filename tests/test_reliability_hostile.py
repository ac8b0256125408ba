"""Hostile and careless input against real stores (SQLite, PostgreSQL, MariaDB).

Each store holds real npas studies written through npas's own store code (no Ray, no
training: an SSN checkpoint of the study's model is kept as trial 0's weights), so every
case runs in a fraction of a second. Each bad input must give exit status 2, one
``npas: error:`` line naming what was wrong and what is allowed, and the store as it
was: every table's rows and the kept files' hashes (``dump``), and for SQLite the file's
bytes (read-only commands never change the journal mode).

Also here: study names compared exactly whatever the server's collation, creating a
study race-free between processes (every finished trial keeps its row), foreign
databases never written, the read-only dashboard, ``npas delete``, and escaped names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa

import allocator
from allocator.cli import main
from allocator.search._recovery import trial_id as storage_trial_id
from tests.conftest import REPO, _pg_admin_url, free_port, mariadb_admin, service_missing
from tests.test_reliability_bad_input import _fill, assert_one_error_line, dump, npas

optuna.logging.set_verbosity(optuna.logging.WARNING)

MODEL = "mlp-1x8"
NPAS = str(Path(sys.executable).with_name("npas"))
BACKENDS = ("sqlite", "postgresql", "mariadb")


# --------------------------------------------------------------------------- the stores


def _ssn_bytes() -> bytes:
    from trials.zoo import build_model

    ssn = allocator.shapeshift(build_model(MODEL, input_shape=(1, 40), num_classes=10),
                               budget=0.5)
    buffer = io.BytesIO()
    allocator.save(ssn, buffer)
    return buffer.getvalue()


def make_studies(url: str, artifacts: Path) -> None:
    """Studies ``s`` (trial 0 complete with kept weights, 1 failed, 2 queued), ``other``
    (one complete trial) and ``empty`` (no trials), as ``npas search`` writes them."""
    from allocator.search import SearchSettings, StudyStore, objectives
    from allocator.search._artifacts import keep, open_store
    from allocator.search._table import row_for
    from search_spaces import load_space

    objs = objectives(None)
    files = open_store(artifacts)
    data = _ssn_bytes()
    with StudyStore(url) as store:
        store.initialise()
        for name, n in (("s", 3), ("other", 1), ("empty", 0)):
            settings = SearchSettings(name, model=MODEL, data="mnist1d", trials=3, epochs=1,
                                      keep_models="all", artifacts=str(artifacts),
                                      trial_options={"data_size": 300})
            study = store.create_study(name, directions=[o.direction for o in objs])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([o.name for o in objs])
            record = settings.record(load_space("default").to_dict())
            record["objectives"] = [dataclasses.asdict(o) for o in objs]
            record["artifacts"] = str(artifacts)
            study.set_user_attr("npas_settings", record)
            config = {**settings.base_config(), "method": "ssn", "budget": 0.5,
                      "mapping": "single"}
            for number in range(min(n, 2)):
                trial = study.ask()
                trial.set_user_attr("npas_config", config)
                if number == 0:
                    result = {"status": "complete", "val_accuracy": 0.5, "trainable_params": 400,
                              "method_info": {}}
                    trial.set_user_attr("npas_result", result)
                    keep(files, trial, data)
                    study.tell(trial, [0.5, 400])
                    state = "complete"
                else:
                    result = {"status": "failed", "failure_reason": "diverged"}
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    state = "failed"
                store.write_result(row_for(study=name, trial_number=trial.number,
                                           trial_id=storage_trial_id(store, name, trial.number), state=state,
                                           config=config, result=result))
            if n > 2:
                study.enqueue_trial({})  # a queued retry: WAITING, never run


@dataclass
class Store:
    backend: str
    url: str
    artifacts: Path

    @property
    def file(self) -> Path | None:
        return Path(self.url.removeprefix("sqlite:///")) if self.backend == "sqlite" else None

    def dump(self) -> dict[str, Any]:
        out = dump(self.url, self.artifacts)
        if self.file is not None:  # the bytes too: nothing may even change the journal mode
            out["<bytes>"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                              for p in sorted(self.file.parent.glob(self.file.name + "*"))}
        return out


@contextlib.contextmanager
def _database(backend: str, root: Path) -> Iterator[str]:
    """A new, empty database on ``backend``; dropped afterwards."""
    name = f"npas_h_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        yield f"sqlite:///{root / name}.db"
        return
    if backend == "postgresql":
        admin_url = _pg_admin_url()
        if admin_url is None:
            service_missing("no PostgreSQL server at 127.0.0.1:5432")
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        quote, url = '"', admin_url.rsplit("/", 1)[0] + f"/{name}"
    else:
        admin = mariadb_admin(isolation_level="AUTOCOMMIT")
        quote, url = "`", f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield url
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}"))
        admin.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Store]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with _database(request.param, root) as url:
        made = Store(request.param, url, root / "kept")
        make_studies(made.url, made.artifacts)
        if made.file is not None:  # a rollback-journal file: WAL would show as a change
            with contextlib.closing(sqlite3.connect(made.file)) as conn:
                conn.execute("PRAGMA journal_mode=DELETE")
        yield made


@pytest.fixture(scope="module")
def spaces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-spaces")
    (folder / "huge-int.yaml").write_text("dims:\n  batch_size: {low: 1, high: 100000000000000}\n")
    (folder / "tiny-step.yaml").write_text("dims:\n  budget: {low: 0.1, high: 0.9, step: 1.0e-12}\n")
    (folder / "latin1.yaml").write_bytes(b"dims:\n  mapping: [single, caf\xe9]\n")
    (folder / "list-choice.yaml").write_text("dims:\n  mapping: [[single], type]\n")
    (folder / "map-choice.yaml").write_text("dims:\n  mapping: [{a: 1}, type]\n")
    (folder / "folder.yaml").mkdir()
    return folder


# --------------------------------------------------------------------------- the cases

SEARCH = ["search", "--model", "mlp", "--data", "mnist1d", "--storage", "{db}", "--trials", "2",
          "--data-size", "300"]
NEW = [*SEARCH, "--study", "new"]
EXPORT = ["export", "s", "0", "--storage", "{db}"]
ZEROS = "mlp-" + "0" * 300 + "1x8"

#: name, argv, fragments of the error line, backends (None: all)
CASES: list[tuple[str, list[str], tuple[str, ...], tuple[str, ...] | None]] = [
    ("collation-case", [*SEARCH, "--study", "S"], ("'S' is taken as equal to the stored name 's'",
                                                   "choose a name"), ("mariadb",)),
    ("collation-accent", [*SEARCH, "--study", "\u015b"], ("taken as equal", "'s'"), ("mariadb",)),
    ("study-trailing-space", [*SEARCH, "--study", "s "], ("spaces at its ends",), None),
    ("study-empty", [*SEARCH, "--study", ""], ("study must be a non-empty name",), None),
    ("study-escape", [*SEARCH, "--study", "\x1b[2Jx"], ("control characters", "\\x1b"), None),
    ("study-exists", [*SEARCH, "--study", "s"], ("already exists", "--resume"), None),
    ("model-too-long", [*SEARCH[:2], ZEROS, *SEARCH[3:], "--study", "new"],
     ("model 'mlp-000", "at most 256"), None),
    ("seed-2**32-1", [*NEW, "--seed", "4294967295"], ("seed must be an integer in 0..2147483647",),
     None),
    ("concurrency-10000", [*NEW, "--concurrency", "10000"],
     ("--concurrency 10000 needs about", "GiB", "give at most"), None),
    ("cpus-1e9", [*NEW, "--cpus-per-trial", "1e9"], ("--cpus-per-trial 1e+09", "CPUs"), None),
    ("gpus-64", [*NEW, "--gpus-per-trial", "64"], ("--gpus-per-trial 64", "GPUs"), None),
    ("ray-address-empty", [*NEW, "--ray-address", ""], ("--ray-address is empty",), None),
    ("ray-address-port", [*NEW, "--ray-address", "127.0.0.1:99999"], ("not in 1..65535",), None),
    ("ray-address-postgres", [*NEW, "--ray-address", "127.0.0.1:5432"],
     ("not a Ray head node",), None),
    ("grid-huge-int", [*NEW, "--sampler", "grid", "--space", "{spaces}/huge-int.yaml"],
     ("grid values", "at most 10,000"), None),
    ("grid-tiny-step", [*NEW, "--sampler", "grid", "--space", "{spaces}/tiny-step.yaml"],
     ("step 1e-12", "grid values"), None),
    ("space-not-utf8", [*NEW, "--space", "{spaces}/latin1.yaml"], ("not UTF-8", "0xe9"), None),
    ("space-list-choice", [*NEW, "--space", "{spaces}/list-choice.yaml"],
     ("a choice holds numbers, strings", "list"), None),
    ("space-map-choice", [*NEW, "--space", "{spaces}/map-choice.yaml"],
     ("a choice holds numbers, strings", "dict"), None),
    ("space-folder", [*NEW, "--space", "{spaces}/folder.yaml"], ("is a directory",), None),
    ("model-huge", [*SEARCH[:2], "mlp-1x100000000000", *SEARCH[3:], "--study", "new"],
     ("parameters and needs about", "GiB available"), None),
    ("export-onto-store", [*EXPORT, "--out", "{dbfile}"], ("would overwrite",), ("sqlite",)),
    ("export-onto-wal", [*EXPORT, "--out", "{dbfile}-wal"], ("would overwrite",), ("sqlite",)),
    ("export-into-artifacts", [*EXPORT, "--out", "{art}/m.pt"], ("lies inside", "kept"), None),
    ("export-to-folder", [*EXPORT, "--out", "{out}"], ("is a directory",), None),
    ("export-to-empty", [*EXPORT, "--out", ""], ("--out must be a file path",), None),
    ("export-to-proc", [*EXPORT, "--out", "/proc/m.pt"], ("cannot create a file in '/proc'",),
     None),
    ("export-to-sys", [*EXPORT, "--out", "/sys/m.pt"], ("cannot create a file in '/sys'",), None),
    ("report-into-artifacts", ["report", "s", "--storage", "{db}", "--out", "{art}/report"],
     ("lies in", "kept"), None),
    ("export-failed", ["export", "s", "1", "--storage", "{db}", "--out", "{out}/m.pt"],
     ("trial 1 of 's' is failed",), None),
    ("export-queued", ["export", "s", "2", "--storage", "{db}", "--out", "{out}/m.pt"],
     ("trial 2 of 's' is queued",), None),
    ("export-no-trials", ["export", "empty", "0", "--storage", "{db}", "--out", "{out}/m.pt"],
     ("study 'empty' has no trial 0; it has no trials yet",), None),
    ("password-with-at", ["studies", "--storage", "mysql+pymysql://root:Top@Secret@127.0.0.1/x"],
     ("not percent-encoded", "%40"), ("sqlite",)),
    ("dashboard-remote", ["dashboard", "--storage", "{db}", "--host", "0.0.0.0"],
     ("--allow-remote", "without any login"), None),
    ("delete-unconfirmed", ["delete", "s", "--storage", "{db}"],
     ("needs confirmation", "--yes"), None),
    ("delete-ghost", ["delete", "ghost", "--yes", "--storage", "{db}"],
     ("no study 'ghost'", "studies there: s, other, empty"), None),
]
OTHER_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("shapeshift-huge-input", ["shapeshift", "mlp", "--budget", "0.5", "--input-shape", "1000000000"],
     ("parameters and needs about",)),
    ("train-export-proc", ["train", "--model", "mlp", "--data", "mnist1d", "--data-size", "100",
                           "--epochs", "1", "--export", "/proc/m.pt"], ("cannot create",)),
    ("train-save-folder", ["train", "--model", "mlp", "--data", "mnist1d", "--data-size", "100",
                           "--epochs", "1", "--save", "/tmp"], ("is a directory",)),
]


def _filled(argv: list[str], store: Store, out: Path, spaces: Path) -> list[str]:
    return _fill(argv, db=store.url, dbfile=str(store.file), art=str(store.artifacts),
                 out=str(out), spaces=str(spaces))


@pytest.mark.parametrize(("name", "argv", "fragments", "backends"), CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_the_store_unchanged(
    store: Store, spaces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture, name: str, argv: list[str], fragments: tuple[str, ...],
    backends: tuple[str, ...] | None,
) -> None:
    if backends is not None and store.backend not in backends:
        pytest.skip(f"{name} is about {', '.join(backends)}")
    before = store.dump()
    code, out, lines = npas(capsys, caplog, _filled(argv, store, tmp_path, spaces))
    assert_one_error_line(code, out, lines, fragments)
    assert "\x1b" not in "".join(lines) + out
    assert "Secret" not in "".join(lines) and "Top" not in "".join(lines)
    assert store.dump() == before
    assert list(tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize(("name", "argv", "fragments"), OTHER_CASES,
                         ids=[c[0] for c in OTHER_CASES])
def test_hostile_input_without_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture, name: str, argv: list[str], fragments: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, lines = npas(capsys, caplog, argv)
    assert_one_error_line(code, out, lines, fragments)
    assert list(tmp_path.iterdir()) == []


def test_names_equal_under_the_collation_are_refused_only_where_the_server_equates_them(
    store: Store,
) -> None:
    from allocator.search import StudyStore

    with StudyStore(store.url, read_only=True) as opened:
        for name in ("S", "\u015b"):
            if store.backend == "mariadb":
                with pytest.raises(allocator.ConfigError, match="taken as equal"):
                    opened.check_new_study(name)
            else:
                opened.check_new_study(name)  # a different name on SQLite and PostgreSQL
        assert [r["trial_number"] for r in opened.results("S")] == []
        assert [r["trial_number"] for r in opened.results("s")] == [0, 1]


def test_the_reading_commands_change_no_byte_of_the_store(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.dump()
    for argv in (["studies"], ["trials", "s"], ["pareto", "s"], ["trials", "s", "--format", "csv"],
                 ["export", "s", "0", "--out", str(tmp_path / "m.pt")]):
        assert main([*argv, "--storage", store.url]) == 0, capsys.readouterr().err
    assert (tmp_path / "m.pt").is_file()
    assert store.dump() == before
    if store.file is not None:
        assert not store.file.with_name(store.file.name + "-wal").exists()
        with contextlib.closing(sqlite3.connect(f"file:{store.file}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# --------------------------------------------------------------------------- foreign files


def _foreign(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, title TEXT)")
        conn.execute("INSERT INTO studies (title) VALUES ('not npas')")
        conn.commit()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("argv", [
    [*SEARCH, "--study", "new"], ["studies", "--storage", "{db}"],
    ["trials", "s", "--storage", "{db}"], ["delete", "s", "--yes", "--storage", "{db}"],
    ["dashboard", "--storage", "{db}", "--port", "1"],
], ids=["search", "studies", "trials", "delete", "dashboard"])
def test_a_foreign_sqlite_file_is_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    argv: list[str],
) -> None:
    path = tmp_path / "app.db"
    digest = _foreign(path)
    filled = [a.replace("{db}", f"sqlite:///{path}") for a in argv]
    code, out, lines = npas(capsys, caplog, filled)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("npas: error: "), lines
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_a_foreign_table_beside_optunas_is_refused_before_a_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "mixed.db"
    optuna.create_study(study_name="plain", storage=f"sqlite:///{path}")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
        conn.commit()
    before = dump(f"sqlite:///{path}")
    argv = [a.replace("{db}", f"sqlite:///{path}") for a in [*SEARCH, "--study", "new"]]
    code, out, lines = npas(capsys, caplog, argv)
    assert_one_error_line(code, out, lines, ("'invoices'", "neither npas's nor Optuna's"))
    assert dump(f"sqlite:///{path}") == before


def test_a_plain_optuna_study_is_listed_not_reported_absent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="plain", storage=url).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert main(["studies", "--storage", url, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["study"] == "plain" and row["trials"] == 2 and row["complete"] == 2


def test_a_failed_report_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    url = f"sqlite:///{tmp_path / 'single.db'}"
    optuna.create_study(study_name="single", storage=url).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    out = tmp_path / "report" / "inner"
    assert main(["report", "single", "--storage", url, "--out", str(out)]) == 2
    assert "needs two or more" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------- names on the terminal


def test_study_names_with_escape_sequences_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'names.db'}"
    evil = "x\x1b]0;owned\x07\x1b[2J\r\nfake"
    optuna.create_study(study_name=evil, storage=url)
    for fmt in ("table", "csv", "json"):
        assert main(["studies", "--storage", url, "--format", fmt]) == 0
        out, err = capsys.readouterr()
        assert "\x1b" not in out + err and "\x07" not in out + err and "\r" not in out + err
        assert "owned" in out
    assert main(["trials", "ghost", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.count("\n") == 1 and "\\x1b" in err


# --------------------------------------------------------------------------- deleting a study


def test_npas_delete_removes_the_study_its_rows_and_files_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from allocator.search import StudyStore

    url, art = f"sqlite:///{tmp_path / 'npas.db'}", tmp_path / "kept"
    make_studies(url, art)
    before = dump(url, art)
    assert len(before["<artifacts>"]) == 2
    assert main(["delete", "s", "--yes", "--storage", url]) == 0
    assert "deleted study 's': 3 trials, 1 kept files" in capsys.readouterr().out
    after = dump(url, art)
    assert len(after["<artifacts>"]) == 1  # other's file stays
    with StudyStore(url, read_only=True) as store:
        assert store.study_names() == ["other", "empty"]
        assert store.results("s") == []
        assert [r["trial_number"] for r in store.results("other")] == [0]
    # a new study of the name starts clean
    with StudyStore(url) as store:
        store.create_study("s", directions=["maximize", "minimize"])
        assert store.results("s") == []


# --------------------------------------------------------------------------- the dashboard


def _request(url: str, method: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 (our server)
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_dashboard_is_read_only_unless_asked(tmp_path: Path) -> None:
    from dashboards import DashboardServer

    url, art = f"sqlite:///{tmp_path / 'npas.db'}", tmp_path / "kept"
    make_studies(url, art)
    before = dump(url, art)
    with DashboardServer(url, port=free_port(), artifacts=art) as server:
        assert _request(server.api_url + "/studies", "GET") == 200
        for method, path in (("DELETE", "/studies/1"), ("PUT", "/studies/1/note"),
                             ("POST", "/studies/1/rename"), ("POST", "/studies"),
                             ("PATCH", "/studies/1")):
            assert _request(server.api_url + path, method, b"{}") == 403, (method, path)
    assert dump(url, art) == before
    with DashboardServer(url, port=free_port(), artifacts=art, allow_writes=True) as server:
        assert _request(server.api_url + "/studies/3", "DELETE") == 204
    assert "empty" not in optuna.get_all_study_names(url)


def test_a_remote_host_needs_the_flag_and_warns(tmp_path: Path) -> None:
    from dashboards import DashboardServer

    with pytest.raises(allocator.ConfigError, match="--allow-remote"):
        DashboardServer("sqlite:///x.db", host="0.0.0.0")
    assert DashboardServer("sqlite:///x.db", host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    assert DashboardServer("sqlite:///x.db", host="::1").host == "::1"


# --------------------------------------------------------------------------- races

N_RACERS = 4


def _racer(url: str, name: str, start_at: float, delay: float, queue: Any,
           legacy: bool = False) -> None:
    """One controller's start of a new study: create it, run and record three trials.
    ``legacy``: the order npas used before (the name's rows deleted, then the study
    created), for benchmarks/bench_store_safety.py."""
    from allocator.search import StudyStore
    from allocator.search._table import RESULTS, row_for

    while time.time() < start_at:
        time.sleep(0.001)
    time.sleep(delay)
    try:
        with StudyStore(url) as store:
            store.initialise()
            if legacy:
                with store.engine.begin() as conn:
                    conn.execute(sa.delete(RESULTS).where(RESULTS.c.study == name))
                try:
                    study = optuna.create_study(storage=store.optuna_storage, study_name=name,
                                                directions=["maximize", "minimize"])
                except optuna.exceptions.DuplicatedStudyError:
                    raise allocator.ConfigError(f"study {name!r} exists") from None
            else:
                study = store.create_study(name, directions=["maximize", "minimize"])
            for _ in range(3):
                trial = study.ask()
                store.write_result(row_for(study=name, trial_number=trial.number,
                                           trial_id=storage_trial_id(store, name, trial.number), state="running"))
                study.tell(trial, [0.5, 100])
                store.write_result(row_for(study=name, trial_number=trial.number,
                                           trial_id=storage_trial_id(store, name, trial.number), state="complete",
                                           result={"val_accuracy": 0.5, "trainable_params": 100}))
        queue.put("won")
    except allocator.NPASError as exc:
        queue.put(f"lost: {exc}")


def race(url: str, racers: int, legacy: bool = False) -> tuple[list[str], list[int], list[int]]:
    """``racers`` processes start study ``race`` at once: their outcomes, the COMPLETE
    trials in Optuna, and the trials with a ``complete`` row in ``npas_results``."""
    from allocator.search import StudyStore

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 4  # spawned interpreters import npas first
    procs = [ctx.Process(target=_racer, args=(url, "race", start_at, 0.15 * i, queue, legacy))
             for i in range(racers)]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=180) for _ in procs]
    for proc in procs:
        proc.join(60)
    with StudyStore(url, read_only=True) as store:
        study = store.load_study("race")
        complete = sorted(t.number for t in study.trials if t.state.name == "COMPLETE")
        rows = [r["trial_number"] for r in store.results("race", state="complete")]
    return outcomes, complete, rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_controllers_starting_one_new_study_at_once_lose_no_row(
    backend: str, tmp_path: Path
) -> None:
    with _database(backend, tmp_path) as url:
        outcomes, complete, rows = race(url, N_RACERS)
    assert outcomes.count("won") == 1, outcomes
    assert all(o.startswith("lost: study 'race'") for o in outcomes if o != "won"), outcomes
    assert complete == [0, 1, 2]
    assert rows == complete


@pytest.mark.slow  # three real `npas search` processes, each with its own local Ray
def test_npas_searches_started_at_once_on_one_new_study_keep_every_row(tmp_path: Path) -> None:
    from allocator.search import StudyStore

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("NPAS_STORAGE", None)
    url = f"sqlite:///{tmp_path / 'npas.db'}"
    argv = [NPAS, "search", "--model", "mlp", "--data", "mnist1d", "--study", "race",
            "--trials", "2", "--epochs", "1", "--data-size", "300", "--max-steps-per-epoch", "2",
            "--storage", url]
    runs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2, 2], results
    for code, _, err in results:
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("npas: error: study 'race'"), err
    with StudyStore(url, read_only=True) as store:
        study = store.load_study("race")
        complete = sorted(t.number for t in study.trials if t.state.name == "COMPLETE")
        rows = store.results("race", state="complete")
    assert len(complete) == 2 and [r["trial_number"] for r in rows] == complete
    shutil.rmtree(tmp_path, ignore_errors=True)
