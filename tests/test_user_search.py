"""A user's own project searched as a user would: the CLI from the project's folder, the
Python API with the project's callables, on SQLite and PostgreSQL; export and train."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from allocator.search import StudyStore, pareto_front

optuna.logging.set_verbosity(optuna.logging.WARNING)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NPAS = str(Path(sys.executable).with_name("npas"))


def copy_project(dest: Path, source: Path = HERE / "user_project") -> Path:
    """The example project in a folder of its own, away from the repository."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_npas(argv: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("NPAS_STORAGE", None)
    return subprocess.run([NPAS, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``npas search`` over the project's factory, loader and space, from its folder."""
    project = copy_project(tmp_path_factory.mktemp("cli") / "waves")
    url = f"sqlite:///{project / 'npas.db'}"
    run = run_npas(["search", "--study", "waves", "--model", "models:build", "--data",
                    "data:load", "--space", "grid_space.toml", "--sampler", "grid", "--trials",
                    "8", "--concurrency", "2", "--epochs", "1", "--keep-models", "all",
                    "--storage", url], project)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "8/8 done" in run.stderr
    return project, url


@pytest.mark.slow
def test_the_cli_searches_a_user_model_with_its_own_dimensions(searched) -> None:
    project, url = searched
    with StudyStore(url, must_exist=True) as store:
        rows = store.results("waves")
        study = store.load_study("waves")
    assert len(rows) == 8 and all(r["state"] == "complete" for r in rows)
    assert {(r["method"], r["hp"]["width"]) for r in rows} == {
        (m, w) for m in ("ssn", "hashed", "reduced_width", "full") for w in (16, 24)}
    assert {r["model"] for r in rows} == {"models:build"}
    for r, t in zip(rows, study.trials, strict=True):
        assert r["hp"] == {"width": t.params["hp.width"], "depth": 2}  # searched and fixed
        assert r["method"] == t.params["method"]
        if r["method"] == "reduced_width":  # an integer width below the searched one
            assert isinstance(r["method_info"]["width"], int)
            assert r["method_info"]["width"] < r["hp"]["width"]
            assert r["trainable_params"] <= r["method_info"]["budget"]
    assert study.metric_names == ["val_accuracy", "trainable_params"]
    assert pareto_front(StudyStore(url), "waves")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ssn", "hashed", "reduced_width", "full"])
def test_export_loads_into_the_users_factory(searched, method, tmp_path) -> None:
    project, url = searched
    with StudyStore(url, must_exist=True) as store:
        rows = [r for r in store.results("waves") if r["method"] == method]
    row = rows[0]
    out = tmp_path / "model.pt"
    run = run_npas(["export", "waves", str(row["trial_number"]), "--out", str(out),
                    "--storage", url], project)
    assert run.returncode == 0, run.stderr
    assert "weights kept" in run.stdout
    sys.path.insert(0, str(project))
    try:
        import models

        hp = dict(row["hp"])
        if method == "reduced_width":
            hp["width"] = row["method_info"]["width"]
        plain = models.build(**hp)
        plain.load_state_dict(torch.load(out, weights_only=True))  # strict: every key fits
    finally:
        sys.path.remove(str(project))
    assert sum(p.numel() for p in plain.parameters()) == (
        row["trainable_params"] if method in ("full", "reduced_width") else
        sum(p.numel() for p in models.build(**row["hp"]).parameters()))


@pytest.mark.slow
def test_npas_train_takes_the_same_user_forms(tmp_path) -> None:
    project = copy_project(tmp_path / "waves")
    run = run_npas(["train", "--model", "models:build", "--data", "data:load_pairs",
                    "--trial", "train:fit", "--hp", '{"width": 16}', "--method", "hashed",
                    "--budget", "0.5", "--epochs", "1", "--export", "plain.pt"], project)
    assert run.returncode == 0, run.stderr
    assert "macro f1" in run.stdout and "exported state_dict" in run.stdout
    assert (project / "plain.pt").exists()


@pytest.mark.slow
def test_the_api_searches_a_trial_function_with_a_user_objective_on_postgresql(
        postgres_url, tmp_path, monkeypatch) -> None:
    from allocator.search import search

    project = copy_project(tmp_path / "waves")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.chdir(project)
    import data
    import models
    import train

    summary = search(model=models.build, data=data.load, trial=train.fit,
                     space="trial_space.toml", storage=postgres_url, trials=4, concurrency=2,
                     epochs=2, objective="macro_f1:max", study="api")
    assert summary.complete == 4
    with StudyStore(postgres_url, must_exist=True) as store:
        study = store.load_study("api")
        rows = store.results("api")
    assert study.metric_names == ["macro_f1", "trainable_params"]
    assert study.directions[0].name == "MAXIMIZE"
    for t, r in zip(study.trials, rows, strict=True):
        assert t.values[0] == pytest.approx(r["metrics"]["macro_f1"])
        assert sorted(t.intermediate_values) == [1, 2]  # report(epoch, ...) reached the store
        assert r["trial"] == "train:fit" and set(r["hp"]) == {"width", "step_size"}
    assert {"macro_f1", "trainable_params"} <= set(summary.pareto[0])


@pytest.mark.slow
def test_a_nan_objective_fails_that_trial_and_the_others_go_on(tmp_path) -> None:
    project = copy_project(tmp_path / "waves")
    url = f"sqlite:///{project / 'npas.db'}"
    run = run_npas(["search", "--study", "nan", "--model", "models:build", "--data",
                    "data:load", "--trial", "train:fit_nan", "--space", "nan_space.toml",
                    "--objective", "macro_f1:max", "--objective", "recall:max",
                    "--sampler", "grid", "--trials", "2", "--storage", url], project)
    assert run.returncode == 0, run.stderr
    with StudyStore(url, must_exist=True) as store:
        rows = {r["hp"]["width"]: r for r in store.results("nan")}
    assert rows[24]["state"] == "failed"
    assert rows[24]["failure_reason"] == "the trial reported macro_f1 = nan"
    assert rows[16]["state"] == "failed"  # recall is never returned
    assert rows[16]["failure_reason"] == "the trial reported no recall (it returned: macro_f1)"


def test_callables_no_import_path_reaches_travel_by_ray_serialisation(tmp_path) -> None:
    """A factory and a loader defined in a function (as in a notebook) reach the workers."""
    from torch import nn

    from allocator.search import search

    def build(width: int = 8) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 3))

    def load() -> tuple:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(90, 16, generator=g), torch.randint(0, 3, (90,), generator=g)
        return (x[:60], y[:60]), (x[60:], y[60:])

    url = f"sqlite:///{tmp_path / 'npas.db'}"
    summary = search(model=build, data=load, storage=url, trials=2, epochs=1, study="local",
                     space={"dims": {"method": ["full", "hashed"]}, "fixed": {"budget": 0.5},
                            "hp": {"width": [8, 12]}})
    assert summary.complete == 2
    with StudyStore(url, must_exist=True) as store:
        rows = store.results("local")
    assert all(r["model"].endswith("<locals>.build") for r in rows)
    assert json.dumps(rows[0]["hp"]) in ('{"width": 8}', '{"width": 12}')


@pytest.mark.slow
def test_the_cli_searches_a_user_project_into_postgresql(postgres_url, tmp_path) -> None:
    project = copy_project(tmp_path / "waves")
    run = run_npas(["search", "--study", "pg", "--model", "models:build", "--data",
                    "data:load_pairs", "--trial", "train:fit", "--space", "trial_space.toml",
                    "--objective", "macro_f1:max", "--trials", "2", "--epochs", "1",
                    "--storage", postgres_url], project)
    assert run.returncode == 0, run.stderr[-3000:]
    pareto = run_npas(["pareto", "pg", "--storage", postgres_url, "--format", "json"], project)
    assert pareto.returncode == 0, pareto.stderr
    front = json.loads(pareto.stdout)
    assert front and all("macro_f1" in r["metrics"] and r["hp"]["width"] in (16, 24) for r in front)
