"""How long the Pareto plot of a 10,000-trial study takes: ``plot_pareto`` to HTML and PNG.

What is measured
----------------
``dashboards.plot_pareto(storage, study, path)`` from the call to the file on disk: reading
the study from SQLite, the Pareto front, the hover text of every trial, drawing and
writing (a self-contained plotly HTML file, a matplotlib PNG). Target: under 5 s.
``--repeat`` calls in this process (the first one imports plotly or matplotlib), then one
call in a fresh Python process, all imports included, as ``npas pareto --plot`` pays it.

Two studies of ``--trials`` trials each, in one temporary SQLite store:

* ``npas``: as ``npas search`` leaves a study: Optuna's tables and one ``npas_results``
  row per trial (the plot reads ``npas_results``, one query).
* ``optuna``: Optuna's tables only, as for a study made by other tools (the plot reads
  Optuna's tables in four queries; ``study.get_trials`` alone takes about 3 s here at
  10,000 trials, and is what is left when those tables are laid out otherwise).

Trials: 85 % SSN over five mappings, 5 % each of the baselines ``full``,
``reduced_width`` and ``hashed``; 3 % failed; accuracy rises with log parameters, with
noise. Optuna's ``add_trials`` writes about 200 trials a second here, so the trials are
written in bulk into Optuna's own table models (the same rows ``add_trials`` writes:
trial, values, params with their distributions, user attributes), which takes seconds.

Run: ``.venv/bin/python benchmarks/bench_plots.py`` (JSON to benchmarks/results/plots.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import optuna  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages._rdb import models  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from allocator.search import RESULTS, StudyStore  # noqa: E402
from dashboards import plot_pareto  # noqa: E402

TARGET_S = 5.0
BASE_PARAMS = 5_210  # cnn1d
MAPPINGS = ("single", "type", "roundrobin", "random", "learned")
DISTRIBUTIONS = {
    "method": CategoricalDistribution(("full", "ssn", "reduced_width", "hashed")),
    "budget": FloatDistribution(0.02, 4.0, log=True),
    "mapping": CategoricalDistribution(MAPPINGS),
    "groups": IntDistribution(1, 4),
    "downsample": CategoricalDistribution(("wavg", "emb", "avg", "slice")),
    "templates": IntDistribution(1, 8),
    "upsample": CategoricalDistribution(("repeat", "inter", "mask")),
}


def make_trials(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` trials: params (only those that apply), state and objective values."""
    rng = random.Random(seed)
    out = []
    for number in range(n):
        u = rng.random()
        method = "ssn" if u < 0.85 else ("full", "reduced_width", "hashed")[int((u - 0.85) / 0.05)]
        params: dict[str, Any] = {"method": method}
        if method != "full":
            params["budget"] = math.exp(rng.uniform(math.log(0.02), math.log(4.0)))
        if method == "ssn":
            params["mapping"] = rng.choice(MAPPINGS)
            if params["mapping"] in ("roundrobin", "random", "learned"):
                params["groups"] = rng.randint(1, 4)
            params["downsample"] = rng.choice(("wavg", "emb", "avg", "slice"))
            if params["downsample"] != "slice":
                params["templates"] = rng.randint(1, 8)
            params["upsample"] = rng.choice(("repeat", "inter", "mask"))
        budget = params.get("budget", 1.0) if method != "full" else 1.0
        trained = max(50, int(BASE_PARAMS * budget * rng.uniform(0.9, 1.0)))
        accuracy = min(0.99, max(0.05, 0.25 + 0.12 * math.log10(trained) + rng.gauss(0, 0.05)))
        failed = rng.random() < 0.03
        out.append({"number": number, "params": params, "failed": failed,
                    "values": None if failed else [accuracy, float(trained)]})
    return out


def build_study(url: str, name: str, trials: list[dict[str, Any]], *, results: bool) -> float:
    """Create the study with Optuna's API, write its trials in bulk; seconds taken."""
    start = time.perf_counter()
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "trainable_params"])
    study.set_user_attr("npas_settings", {"study": name, "model": "cnn1d", "data": "mnist1d",
                                          "space_name": "baselines", "trials": len(trials)})
    study_id = storage.get_study_id_from_name(name)
    engine = sa.create_engine(url)
    now = datetime.datetime.now()
    with engine.begin() as conn:
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(models.TrialModel.trial_id), 0))).scalar_one()
        rows, values, params, attrs, flat = [], [], [], [], []
        for t in trials:
            trial_id = first + 1 + t["number"]
            state = TrialState.FAIL if t["failed"] else TrialState.COMPLETE
            rows.append({"trial_id": trial_id, "number": t["number"], "study_id": study_id,
                         "state": state, "datetime_start": now, "datetime_complete": now})
            for objective, v in enumerate(t["values"] or []):
                values.append({"trial_id": trial_id, "objective": objective, "value": v,
                               "value_type": models.TrialValueModel.TrialValueType.FINITE})
            for key, v in t["params"].items():
                dist = DISTRIBUTIONS[key]
                params.append({"trial_id": trial_id, "param_name": key,
                               "param_value": dist.to_internal_repr(v),
                               "distribution_json": distribution_to_json(dist)})
            config = {"model": "cnn1d", "data": "mnist1d", "epochs": 5, **t["params"]}
            attrs.append({"trial_id": trial_id, "key": "npas_config", "value_json": json.dumps(config)})
            flat.append({"study": name, "trial_number": t["number"], "trial_id": trial_id,
                         "state": "failed" if t["failed"] else "complete",
                         **dict.fromkeys(DISTRIBUTIONS), **config,
                         "val_accuracy": t["values"][0] if t["values"] else None,
                         "trainable_params": int(t["values"][1]) if t["values"] else None})
        conn.execute(sa.insert(models.TrialModel.__table__), rows)
        conn.execute(sa.insert(models.TrialValueModel.__table__), values)
        conn.execute(sa.insert(models.TrialParamModel.__table__), params)
        conn.execute(sa.insert(models.TrialUserAttributeModel.__table__), attrs)
        if results:
            conn.execute(sa.insert(RESULTS), flat)
    engine.dispose()
    return time.perf_counter() - start


def time_plot(url: str, study: str, path: Path, repeat: int) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        plot_pareto(url, study, path)
        times.append(time.perf_counter() - start)
    return {"seconds": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3), "bytes": path.stat().st_size,
            "under_target": max(times) < TARGET_S}


def time_cold(url: str, study: str, path: Path) -> float:
    """One call in a fresh Python process, imports included (what a command pays)."""
    import subprocess

    code = ("import sys, time; t = time.perf_counter(); "
            f"sys.path.insert(0, {str(HERE.parent)!r}); from dashboards import plot_pareto; "
            f"plot_pareto({url!r}, {study!r}, {str(path)!r}); print(time.perf_counter() - t)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(run.stdout.strip().splitlines()[-1]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "plots.json"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    trials = make_trials(args.trials)
    report: dict[str, Any] = {
        "what": "dashboards.plot_pareto(storage, study, path): read the study, Pareto front, "
                "hover text, draw, write; wall-clock seconds per call",
        "target_s": TARGET_S,
        "trials": args.trials,
        "complete": sum(not t["failed"] for t in trials),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_before": round(os.getloadavg()[0], 2)},
        "studies": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with StudyStore(url) as store:
            store.initialise()
        for name, results in (("npas", True), ("optuna", False)):
            built = build_study(url, name, trials, results=results)
            entry: dict[str, Any] = {"reads": "npas_results" if results else "Optuna's tables",
                                     "build_s": round(built, 2)}
            for suffix in ("html", "png"):
                entry[suffix] = time_plot(url, name, Path(tmp) / f"{name}.{suffix}", args.repeat)
                entry[suffix]["fresh_process_s"] = time_cold(url, name, Path(tmp) / f"c.{suffix}")
                print(f"{name:6s} {suffix:4s} {entry[suffix]['seconds']} s, in a fresh process "
                      f"{entry[suffix]['fresh_process_s']} s ({entry[suffix]['bytes'] / 1e6:.1f} MB)",
                      flush=True)
            report["studies"][name] = entry
    report["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
