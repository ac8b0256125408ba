"""Bad input to `npas search` and the query commands: one stderr line, exit 2, no writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from allocator.cli import main

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _npas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _search(db: Path, *extra: str) -> list[str]:
    return ["search", "--model", "mlp", "--data", "mnist1d", "--storage", f"sqlite:///{db}",
            "--trials", "2", *extra]


def _assert_one_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("npas: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (("--space", "nope"), ("unknown space 'nope'", "default, lowbudget, highbudget, baselines")),
        (("--concurrency", "0"), ("concurrency must be an integer >= 1, got 0",)),
        (("--cpus-per-trial", "0"), ("cpus_per_trial must be > 0",)),
        (("--set", "optimizer=lion"), ("optimizer must be one of sgd, adamw",)),
        (("--set", "model=x"), ("trial option 'model' is a setting of its own",)),
        (("--set", "nonsense"), ("--set takes FIELD=VALUE",)),
        (("--ray-address", "127.0.0.1:1"), ("no Ray cluster at 127.0.0.1:1",)),
        (("--ray-address", "not-an-address:x"), ("--ray-address must be HOST:PORT",)),
        (("--gpus-per-trial", "-1"), ("gpus_per_trial must be >= 0",)),
    ],
)
def test_bad_search_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, capsys, extra, fragments
):
    db = tmp_path / "npas.db"
    code, out, err = _npas(capsys, *_search(db, *extra))
    assert code == 2
    _assert_one_line(err, *fragments)
    assert not db.exists()


def test_an_unknown_model_is_rejected_before_anything_is_written(tmp_path, capsys):
    db = tmp_path / "npas.db"
    code, _, err = _npas(capsys, "search", "--model", "resnet9000", "--data", "mnist1d",
                         "--storage", f"sqlite:///{db}")
    assert code == 2
    _assert_one_line(err, "resnet9000")
    assert not db.exists()


def test_model_and_data_are_required(tmp_path, capsys):
    code, _, err = _npas(capsys, "search", "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2
    _assert_one_line(err, "--model is required")


def test_a_bad_space_file_names_the_file_and_the_problem(tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text("dims:\n  groups: {low: 0, high: 3}\n")
    db = tmp_path / "npas.db"
    code, _, err = _npas(capsys, *_search(db, "--space", str(space)))
    assert code == 2
    _assert_one_line(err, str(space), "groups.low must be an integer >= 1, got 0")
    assert not db.exists()


def test_an_unreachable_server_never_shows_its_password(capsys):
    url = "postgresql+psycopg://npas:hunter2hunter2@127.0.0.1:1/npas"
    code, out, err = _npas(capsys, "search", "--model", "mlp", "--data", "mnist1d",
                           "--storage", url)
    assert code == 2
    _assert_one_line(err, "cannot reach storage", "npas:***@127.0.0.1:1")
    assert "hunter2" not in out + err


def _store_with_a_study(db: Path) -> None:
    from allocator.search import StudyStore

    with StudyStore(f"sqlite:///{db}") as store:
        store.initialise()
        optuna.create_study(storage=store.optuna_storage, study_name="taken",
                            directions=["maximize", "minimize"])


def _snapshot(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [(t, conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in sorted(tables)]


def test_an_existing_study_needs_resume_and_is_left_untouched(tmp_path, capsys):
    db = tmp_path / "npas.db"
    _store_with_a_study(db)
    before = _snapshot(db)
    code, _, err = _npas(capsys, *_search(db, "--study", "taken"))
    assert code == 2
    _assert_one_line(err, "study 'taken' already exists", "pass --resume")
    assert _snapshot(db) == before


def test_an_unreachable_cluster_creates_no_study_in_an_existing_store(tmp_path, capsys):
    db = tmp_path / "npas.db"
    _store_with_a_study(db)
    before = _snapshot(db)
    code, _, err = _npas(capsys, *_search(db, "--study", "new", "--ray-address", "127.0.0.1:1"))
    assert code == 2
    _assert_one_line(err, "no Ray cluster at 127.0.0.1:1")
    assert _snapshot(db) == before


def test_resume_of_a_missing_study_lists_the_studies_there(tmp_path, capsys):
    db = tmp_path / "npas.db"
    _store_with_a_study(db)
    code, _, err = _npas(capsys, "search", "--study", "ghost", "--resume",
                         "--storage", f"sqlite:///{db}")
    assert code == 2
    _assert_one_line(err, "no study 'ghost'", "studies there: taken")


def test_resume_cannot_change_what_the_study_searches(tmp_path, capsys):
    from allocator.search import StudyStore

    db = tmp_path / "npas.db"
    _store_with_a_study(db)
    with StudyStore(f"sqlite:///{db}") as store:
        study = store.load_study("taken")
        study.set_user_attr("npas_settings", {"study": "taken", "model": "mlp", "epochs": 3,
                                              "space": {"name": "x", "dims": {"budget": [0.5]}}})
    code, _, err = _npas(capsys, "search", "--study", "taken", "--resume", "--epochs", "4",
                         "--storage", f"sqlite:///{db}")
    assert code == 2
    _assert_one_line(err, "epochs 4 differs from the resumed study's 3")


@pytest.mark.parametrize(
    "argv",
    [
        ("studies",),
        ("trials", "x"),
        ("pareto", "x"),
        ("export", "x", "0", "--out", "m.pt"),
    ],
)
def test_query_commands_on_a_missing_store_exit_2_and_create_nothing(tmp_path, capsys, argv):
    db = tmp_path / "none.db"
    code, _, err = _npas(capsys, *argv, "--storage", f"sqlite:///{db}")
    assert code == 2
    _assert_one_line(err, "does not exist")
    assert not db.exists()


def test_query_commands_read_storage_from_the_environment(tmp_path, capsys, monkeypatch):
    db = tmp_path / "env.db"
    _store_with_a_study(db)
    monkeypatch.setenv("NPAS_STORAGE", f"sqlite:///{db}")
    code, out, _ = _npas(capsys, "studies", "--format", "csv")
    assert code == 0
    assert out.splitlines()[1].startswith("taken,")
    code, _, err = _npas(capsys, "trials", "missing")
    assert code == 2
    _assert_one_line(err, "no study 'missing'", "studies there: taken")
