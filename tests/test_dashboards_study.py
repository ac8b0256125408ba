"""dashboards reads a study store: the flat table of a study, its Pareto front, errors.

``make_study`` builds a study as ``npas search`` leaves one (the same names: metric names,
``npas_settings``, ``npas_config`` and ``npas_result`` user attributes, ``npas_results``
rows) with Optuna's API, without training anything; the plot and report tests use it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from allocator._errors import ConfigError, StorageError
from allocator.cli import main
from allocator.search import StudyStore
from allocator.search._recovery import trial_id as storage_trial_id
from allocator.search._table import row_for
from dashboards import hypervolume, hypervolume_history, load_trials, pareto_mask, resolve_url

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE_PARAMS = 5_210
MAPPINGS = ("single", "type", "roundrobin")
_DIST: dict[str, Any] = {
    "method": CategoricalDistribution(("full", "ssn", "reduced_width", "hashed")),
    "budget": FloatDistribution(0.02, 4.0, log=True),
    "mapping": CategoricalDistribution(MAPPINGS),
    "groups": IntDistribution(1, 4),
    "downsample": CategoricalDistribution(("wavg", "slice")),
    "templates": IntDistribution(1, 4),
}
#: What npas_results holds for a field the trial's config did not set (its default).
_DEFAULTS = {"method": "ssn", "budget": 0.25, "mapping": "single", "groups": None,
             "templates": 4, "downsample": "wavg", "upsample": "inter"}
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "npas": "0.1.0", "numpy": "2.4.6"}


def allocation(trained: int, groups: int) -> dict[str, Any]:
    layers = [
        {"layer": "body.0.weight", "kind": "Conv1d", "shape": "32x1x5", "weights": 160},
        {"layer": "body.3.weight", "kind": "Conv1d", "shape": "32x32x5", "weights": 5120},
        {"layer": "body.6.weight", "kind": "Conv1d", "shape": "32x32x5", "weights": 5120},
        {"layer": "head.weight", "kind": "Linear", "shape": "10x32", "weights": 320},
    ]
    for i, row in enumerate(layers):
        row.update(group=i % groups, generator="wavg" if i % 2 else "inter",
                   templates=1 + i % 3, params=i)
    return {"budget": trained, "trainable": trained, "base_params": BASE_PARAMS,
            "by_kind": {"groups": trained - 100, "generators": 6, "unshared": 94},
            "groups": [{"size": (trained - 100) // groups, "k_max": 4, "emb_templates": 0}
                       for _ in range(groups)],
            "options": {}, "layers": layers}


def make_study(
    root: Path | str,
    name: str = "s",
    *,
    n: int = 24,
    seed: int = 0,
    results: bool = True,
    third: str | None = None,
    methods: tuple[str, ...] = ("ssn", "ssn", "ssn", "full", "reduced_width", "hashed"),
) -> str:
    """A study of ``n`` trials in a new SQLite store under ``root`` (or at the URL ``root``);
    returns the store's URL."""
    url = root if isinstance(root, str) else f"sqlite:///{root / 'npas.db'}"
    rng = random.Random(seed)
    names = ["val_accuracy", "trainable_params", *([third] if third else [])]
    with StudyStore(url) as store:
        store.initialise()
        directions: list[Any] = ["maximize", *["minimize"] * (len(names) - 1)]
        study = optuna.create_study(storage=store.optuna_storage, study_name=name,
                                    directions=directions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
        study.set_user_attr("npas_settings", {
            "study": name, "model": "cnn1d", "data": "mnist1d", "trials": n, "concurrency": 2,
            "epochs": 5, "seed": 0, "sampler": "tpe", "objective": None, "keep_models": "none",
            "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "ray_address": None,
            "trial_options": {"data_size": 600, "optimizer": "adamw"},
            "space": {"name": "baselines", "dims": {"budget": {"type": "float"}}},
            "space_name": "baselines",
            "objectives": [{"name": m, "direction": d}
                           for m, d in zip(names, directions, strict=True)],
        })
        trials: list[optuna.trial.FrozenTrial] = []
        configs: list[dict[str, Any]] = []
        outcomes: list[dict[str, Any]] = []
        for i in range(n):
            method = methods[i % len(methods)]
            params: dict[str, Any] = {"method": method}
            if method != "full":
                params["budget"] = round(10 ** rng.uniform(-1.5, 0.5), 4)
            if method == "ssn":
                params["mapping"] = MAPPINGS[i % 3]
                if params["mapping"] == "roundrobin":
                    params["groups"] = rng.randint(1, 4)
                params["downsample"] = rng.choice(("wavg", "slice"))
                if params["downsample"] == "wavg":
                    params["templates"] = rng.randint(1, 4)
            config = {"model": "cnn1d", "data": "mnist1d", "epochs": 5, **params}
            trained = int(BASE_PARAMS * params.get("budget", 1.0))
            accuracy = round(min(0.95, 0.2 + 0.15 * np.log10(trained) + rng.gauss(0, 0.04)), 4)
            failed = i % 7 == 5
            if i == n - 1 and n > 8:  # a tie with trial 0 on every objective
                accuracy, trained = outcomes[0]["val_accuracy"], outcomes[0]["trainable_params"]
                params, config = trials[0].params, configs[0]
            result: dict[str, Any] = {
                "status": "failed" if failed else "complete", "val_accuracy": accuracy,
                "trainable_params": trained, "step_time_s": 0.01 + 0.001 * (i % 5),
                "versions": VERSIONS, "config": config,
                "allocation": allocation(trained, params.get("groups", 1))
                if params["method"] == "ssn" else None,
            }
            values = [accuracy, float(trained), *([result[third]] if third else [])]
            attrs = {"npas_config": config, "npas_result": result}
            dists = {k: _DIST[k] for k in params}
            trials.append(optuna.trial.create_trial(
                params=params, distributions=dists, user_attrs=attrs,
                state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
                values=None if failed else values,
            ))
            configs.append(config)
            outcomes.append(result)
        study.add_trials(trials)
        if results:
            for t, config, result in zip(study.get_trials(), configs, outcomes, strict=True):
                store.write_result(row_for(
                    study=name, trial_number=t.number, trial_id=storage_trial_id(store, name, t.number),
                    state="complete" if t.state.name == "COMPLETE" else "failed",
                    config={**_DEFAULTS, **config}, result=result if t.values else None,
                ))
    return url


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_study(tmp_path_factory.mktemp("study"))


# ------------------------------------------------------------------ Pareto and hypervolume


def _brute_force(points: np.ndarray, directions: list[str]) -> list[bool]:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    losses = points * signs
    return [
        not any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(losses) if j != i)
        for i, p in enumerate(losses)
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 3).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.tuples(*[st.integers(0, 4)] * k), min_size=0, max_size=30),
            st.lists(st.sampled_from(["maximize", "minimize"]), min_size=k, max_size=k),
        )
    )
)
def test_pareto_mask_is_every_undominated_point_ties_included(case: Any) -> None:
    k, points, directions = case
    array = np.array(points, dtype=float).reshape(-1, k)
    assert pareto_mask(array, directions).tolist() == _brute_force(array, directions)


def test_hypervolume_of_known_fronts() -> None:
    assert hypervolume([(0.0, 1.0), (1.0, 0.0), (2.0, 2.0)], [2.0, 2.0]) == 3.0
    assert hypervolume([(0.0, 0.0, 0.0)], [1.0, 2.0, 3.0]) == pytest.approx(6.0)
    assert hypervolume([(3.0, 3.0)], [2.0, 2.0]) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 10**6)), min_size=1, max_size=25))
def test_hypervolume_never_decreases_as_trials_finish(points: list[tuple[float, int]]) -> None:
    curve = hypervolume_history(points, ["maximize", "minimize"], [False, True])
    assert np.all(np.diff(curve) >= -1e-12)
    assert 0.0 <= curve[-1] <= 1.21 + 1e-9


# ------------------------------------------------------------------ the study as a table


def test_the_table_has_every_trial_and_the_front_is_optunas(study_url: str) -> None:
    data = load_trials(study_url, "s")
    study = optuna.load_study(study_name="s", storage=study_url)
    assert data.source == "npas_results"
    assert data.metric_names == ["val_accuracy", "trainable_params"]
    assert data.directions == ["maximize", "minimize"]
    assert data.frame["trial_number"].tolist() == [t.number for t in study.trials]
    front = set(data.frame.loc[data.frame["pareto"], "trial_number"])
    assert front == {t.number for t in study.best_trials}
    assert {0, 23} <= front or not {0, 23} & front  # the tie is on the front together or not at all
    assert data.settings["model"] == "cnn1d"


def test_the_front_is_what_npas_pareto_prints(study_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pareto", "s", "--storage", study_url, "--format", "json"]) == 0
    printed = {r["trial_number"] for r in json.loads(capsys.readouterr().out)}
    data = load_trials(study_url, "s")
    assert printed == set(data.frame.loc[data.frame["pareto"], "trial_number"])


def test_a_study_without_npas_results_reads_the_same_through_optuna(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with_rows = load_trials(make_study(tmp_path / "a"), "s")
    without = load_trials(make_study(tmp_path / "b", results=False), "s")
    assert (with_rows.source, without.source) == ("npas_results", "optuna")
    columns = ["trial_number", "state", "val_accuracy", "trainable_params", "pareto", "method"]
    left, right = with_rows.frame[columns], without.frame[columns]
    assert left.astype(str).values.tolist() == right.astype(str).values.tolist()
    ssn = without.frame[without.frame["method"] == "ssn"]
    assert set(ssn["mapping"]) == set(MAPPINGS)


def test_optunas_tables_read_directly_are_what_optunas_api_gives(tmp_path: Path) -> None:
    from dashboards._store import _from_optuna, _from_optuna_tables

    url = make_study(tmp_path, results=False)
    study = optuna.load_study(study_name="s", storage=url)
    study.add_trial(optuna.trial.create_trial(values=[float("-inf"), float("inf")]))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING))
    names = ["val_accuracy", "trainable_params"]
    direct = _from_optuna_tables(url, "s", names)
    assert direct is not None
    api = _from_optuna(study, names)
    assert direct.astype(str).values.tolist() == api[list(direct.columns)].astype(str).values.tolist()
    assert direct["state"].iloc[-2:].tolist() == ["complete", "running"]
    assert direct[names].iloc[-2].tolist() == [float("-inf"), float("inf")]


def test_three_objectives_make_a_three_way_front(tmp_path: Path) -> None:
    data = load_trials(make_study(tmp_path, third="step_time_s"), "s")
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'npas.db'}")
    assert data.metric_names[2] == "step_time_s" and len(data.directions) == 3
    assert set(data.frame.loc[data.frame["pareto"], "trial_number"]) == {
        t.number for t in study.best_trials
    }


def test_a_postgresql_store_reads_as_sqlite_does(postgres_url: str, tmp_path: Path) -> None:
    from dashboards._store import _from_optuna_tables

    url = make_study(postgres_url)
    served = load_trials(url, "s")
    local = load_trials(make_study(tmp_path), "s")
    columns = ["trial_number", "state", "val_accuracy", "trainable_params", "pareto", "method"]
    assert served.source == "npas_results"
    assert served.frame[columns].astype(str).values.tolist() == local.frame[columns].astype(str).values.tolist()
    direct = _from_optuna_tables(url, "s", ["val_accuracy", "trainable_params"])
    assert direct is not None and direct["state"].tolist() == local.frame["state"].tolist()


def test_dashboards_read_the_store_and_nothing_else_of_npas() -> None:
    import ast

    allowed = {"__future__", "collections", "contextlib", "dataclasses", "datetime", "errno",
               "html", "importlib", "json", "logging", "math", "os", "pathlib", "platform",
               "shlex", "shutil", "signal", "socket", "subprocess", "sys", "tempfile", "time",
               "typing", "urllib", "warnings", "ctypes", "numpy", "pandas", "sqlalchemy",
               "optuna", "plotly", "matplotlib", "dashboards", "optuna_dashboard",
               "socketserver", "wsgiref", "ipaddress", "sqlite3"}
    for path in (Path(__file__).resolve().parents[1] / "dashboards").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                assert name in ("allocator._errors", "allocator._storage_url", "allocator._pareto",
                                "allocator._vocab") or name.split(".")[0] in allowed, (path, name)


# ------------------------------------------------------------------ errors


def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    with pytest.raises(StorageError, match="does not exist; run `npas search` first"):
        load_trials(f"sqlite:///{db}", "s")
    assert not db.exists()


def test_a_database_without_studies_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x INTEGER)").connection.close()
    with pytest.raises(StorageError, match="holds no Optuna studies"):
        load_trials(f"sqlite:///{db}", "s")
    names = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert names == {"t"}


def test_an_unknown_study_names_the_studies_there(study_url: str) -> None:
    with pytest.raises(ConfigError, match=r"no study 'x' .* studies there: s"):
        load_trials(study_url, "x")


def test_storage_comes_from_npas_storage_else_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPAS_STORAGE", "sqlite:///elsewhere.db")
    assert resolve_url(None) == "sqlite:///elsewhere.db"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"
    monkeypatch.delenv("NPAS_STORAGE")
    assert resolve_url(None) == "sqlite:///npas.db"


def test_a_password_never_shows_in_an_error() -> None:
    with pytest.raises(StorageError) as caught:
        load_trials("postgresql+psycopg://ann:s3cret@127.0.0.1:1/npas", "s")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)

