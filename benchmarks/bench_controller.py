"""Controller overhead and throughput: npas on Ray against Optuna alone, in one run.

What is measured
----------------
Every trial is the same fixed amount of real CPU work: ``STEPS`` forward/backward/SGD
steps of a small 1-D CNN on a fixed batch, one torch thread (``--trial fixed``), or a
short real ``trials.run`` of cnn1d on MNIST-1D with a fixed config (``--trial train``).
The trial's own time is taken inside the trial (worker side). Both drivers use the same
search space, TPE sampler, seed and a SQLite study store in a temporary directory.

* **overhead per trial**: the time a trial slot stands idle between the end of one
  trial and the start of the next on the same worker (Ray: the same actor process;
  Optuna: the same thread), averaged over trials. It holds everything the driver does
  per trial: wake-up, tell, database writes, ask, sampling, dispatch to the worker.
  ``slot_overhead_s`` gives the same from totals: ``(K * loop time - sum of trial
  times) / trials`` (it also counts the ramp-down of the last wave).
* **throughput**: trials per second of loop time (from the first trial handed out to the
  last one recorded; Ray start-up and worker start-up are reported separately).

``npas search`` runs on Ray (actors, ask-and-tell, npas_results rows); "Optuna alone"
is ``study.optimize(n_jobs=K)`` in-process on the same storage with the same trial;
"bare processes" run the trial in K plain processes with no search at all, which is what
the machine allows at that moment (other users' load included).

Each measurement is a pair (concurrency 1, then 2 right after), repeated ``--repeat``
times; every pair is in the JSON, and the verdict quotes the best pair per driver next
to all of them (the machine this was written on is shared).
Run: ``.venv/bin/python benchmarks/bench_controller.py`` (JSON to
benchmarks/results/controller.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch  # at import: a worker pays for it when it starts, not in its first trial
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

STEPS = 600  # about 0.5-1 s of one core
SPACE = {
    "name": "bench",
    "fixed": {"method": "ssn"},
    "dims": {
        "budget": {"type": "float", "low": 0.25, "high": 2.0, "log": True},
        "mapping": {"type": "choice", "values": ["single", "type", "roundrobin"]},
        "groups": {"type": "int", "low": 1, "high": 4},
        "upsample": {"type": "choice", "values": ["repeat", "inter", "mask"]},
    },
}
TRAIN_OPTIONS = {"data_size": 3000, "max_steps_per_epoch": 80, "batch_size": 64}
TRAIN_EPOCHS = 8  # 8 x 33 steps of cnn1d (2,100 training examples) and evaluation: about 0.4 s

_model_cache: dict[str, Any] = {}


def fixed_trial(
    config: dict[str, Any], *, keep_model: bool = False, steps: int = STEPS
) -> dict[str, Any]:
    """``steps`` real training steps of a small CNN: the same work whatever the config."""
    if "x" not in _model_cache:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        _model_cache["x"] = torch.randn(64, 1, 40)
        _model_cache["y"] = torch.randint(0, 10, (64,))
    net = nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 40, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(_model_cache["x"]), _model_cache["y"])
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    budget = float(config.get("budget", 1.0))
    return {
        "status": "complete",
        "val_accuracy": 1.0 - abs(0.5 - budget) / 2,
        "trainable_params": int(budget * 10_000),
        "train_time_s": elapsed,
        "config": dict(config),
    }


# Warm up at import, as torch itself is imported: a Ray worker imports this module when it
# starts, so its first trial costs what every other trial costs (oneDNN and the allocator
# initialise lazily on the first steps, ~0.7 s here).
fixed_trial({}, steps=STEPS // 2)


def _gaps(spans: list[tuple[Any, float, float]]) -> list[float]:
    """Idle time of each slot between consecutive trials: ``(slot, start, end)`` spans."""
    by_slot: dict[Any, list[tuple[float, float]]] = {}
    for slot, start, end in spans:
        by_slot.setdefault(slot, []).append((start, end))
    gaps = []
    for runs in by_slot.values():
        runs.sort()
        gaps += [b[0] - a[1] for a, b in zip(runs, runs[1:], strict=False)]
    return gaps


def _summary(name: str, k: int, n: int, loop_s: float, spans: list[tuple[Any, float, float]],
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    trial_times = [end - start for _, start, end in spans]
    gaps = _gaps(spans)
    return {
        "driver": name,
        "concurrency": k,
        "trials": n,
        "loop_s": round(loop_s, 3),
        "throughput_trials_per_s": round(n / loop_s, 4),
        "trial_time_mean_s": round(statistics.mean(trial_times), 4),
        "overhead_per_trial_s": round(statistics.mean(gaps), 4) if gaps else None,
        "overhead_per_trial_median_s": round(statistics.median(gaps), 4) if gaps else None,
        "overhead_per_trial_max_s": round(max(gaps), 4) if gaps else None,
        "slot_overhead_s": round((k * loop_s - sum(trial_times)) / n, 4),
        **(extra or {}),
    }


def run_ray(
    k: int, n: int, tmp: Path, runner: str, options: dict[str, Any], epochs: int = 1,
    engine: str = "pool",
) -> dict[str, Any]:
    from allocator.search import SearchSettings, StudyStore, run_search

    tmp.mkdir(parents=True, exist_ok=True)
    tag = runner.split(":")[-1]
    url = f"sqlite:///{tmp / f'ray-{k}-{tag}.db'}"
    settings = SearchSettings(
        study=f"bench-ray-{k}", space=SPACE, trials=n, concurrency=k, epochs=epochs, seed=0,
        storage=url, runner=runner, trial_options=options, **({"engine": engine} if engine != "pool" else {}),
    )
    summary = run_search(settings)
    with StudyStore(url, must_exist=True) as store:
        rows = store.results(settings.study)
    assert len(rows) == n and all(r["duration_s"] is not None for r in rows), rows
    utc = datetime.timezone.utc  # the store keeps naive UTC datetimes
    spans = [(r["worker_pid"], r["started_at"].replace(tzinfo=utc).timestamp(),
              r["finished_at"].replace(tzinfo=utc).timestamp()) for r in rows]
    failed = sum(r["state"] != "complete" for r in rows)
    name = "npas on Ray" if engine == "pool" else f"npas on Ray, engine {engine}"
    return _summary(name, k, n, summary.loop_s, spans,
                    {"startup_s": round(summary.elapsed_s - summary.loop_s, 3),
                     "failed_trials": failed})


def run_checkout(checkout: str, k: int, n: int, tmp: Path, engine: str = "pool") -> dict[str, Any]:
    """``run_ray`` (the fixed trial, on ``engine``) of another checkout of npas (e.g. the
    main branch before a change), in a process of its own, right after this one's."""
    import subprocess

    code = (
        "import json, os, sys; from pathlib import Path; import ray, optuna; "
        "optuna.logging.set_verbosity(optuna.logging.WARNING); "
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=40); "
        "import bench_controller as b; "
        f"out = b.run_ray({k}, {n}, Path({str(tmp)!r}), 'bench_controller:fixed_trial', {{}}"
        + (f", engine={engine!r}" if engine != "pool" else "") + "); "
        "ray.shutdown(); print(json.dumps(out))"
    )
    root = Path(checkout).resolve()
    env = {**os.environ, "PYTHONPATH": f"{root}:{root / 'benchmarks'}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=root)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    tag = "" if engine == "pool" else f", engine {engine}"
    out["driver"] = f"npas on Ray{tag} at {root.name} (before)"
    return dict(out)


def run_optuna(k: int, n: int, tmp: Path) -> dict[str, Any]:
    import optuna

    from search_spaces import load_space

    tmp.mkdir(parents=True, exist_ok=True)
    space = load_space(SPACE)
    spans: list[tuple[Any, float, float]] = []
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        config = space.to_config(space.suggest(trial))
        start = time.time()
        result = fixed_trial(config)
        end = time.time()
        with lock:
            spans.append((threading.get_ident(), start, end))
        return result["val_accuracy"], result["trainable_params"]

    study = optuna.create_study(
        storage=f"sqlite:///{tmp / f'optuna-{k}.db'}", study_name=f"bench-optuna-{k}",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True,
                                           constant_liar=True, n_startup_trials=4),
    )
    start = time.monotonic()
    study.optimize(objective, n_trials=n, n_jobs=k)
    return _summary("Optuna alone (in-process)", k, n, time.monotonic() - start, spans)


def _timed_trial(_: int) -> tuple[int, float, float]:
    start = time.time()
    fixed_trial({})
    return os.getpid(), start, time.time()


def run_bare(k: int, n: int) -> dict[str, Any]:
    """No search at all: ``k`` plain processes running the trial: the machine's ceiling."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(k) as pool:
        pool.map(_timed_trial, range(k))  # warm-up: imports and the first batch
        start = time.monotonic()
        spans = pool.map(_timed_trial, range(n), chunksize=1)
        loop_s = time.monotonic() - start
    return _summary("bare processes (no search)", k, n, loop_s, spans)


def main(argv: list[str] | None = None) -> int:
    import warnings

    import optuna
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=16, help="trials per run (default 16)")
    parser.add_argument("--trial", choices=("fixed", "train", "both"), default="both",
                        help="the fixed CNN steps, a short trials.run, or both (default)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each measurement; the least disturbed (fastest) is kept, "
                             "all are listed (default 2; the machine may be shared)")
    parser.add_argument("--engines", default="pool,tune",
                        help="npas engines to measure side by side (default pool,tune)")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also measure the --engines of another npas checkout (e.g. "
                             "/work/main), interleaved with this one's: a regression check")
    parser.add_argument("--out", default=str(HERE / "results" / "controller.json"))
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=40)
    # Each measurement is a pair, concurrency 1 then 2 right after (the same machine load),
    # repeated; the pairs are all reported, the verdict takes the best pair of each driver.
    pairs: list[dict[str, Any]] = []
    counter = iter(range(10_000))

    def measure(trial: str, driver: Any, r: int) -> None:
        one, two = ({"trial": trial, "repeat": r, **driver(k)} for k in (1, 2))
        for run in (one, two):
            print(json.dumps(run), file=sys.stderr)
        ratio = two["throughput_trials_per_s"] / one["throughput_trials_per_s"]
        pairs.append({"trial": trial, "driver": one["driver"], "repeat": r,
                      "throughput_2_vs_1": round(ratio, 3), "concurrency_1": one,
                      "concurrency_2": two, "load_avg_1min": round(os.getloadavg()[0], 2)})

    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            for r in range(args.repeat):
                if args.trial in ("fixed", "both"):
                    for engine in args.engines.split(","):
                        measure("fixed", lambda k, e=engine: run_ray(
                            k, args.trials, tmp / f"r{next(counter)}",
                            "bench_controller:fixed_trial", {}, engine=e), r)
                    if args.baseline:
                        ray.shutdown()  # the other checkout starts its own local Ray
                        for engine in args.engines.split(","):
                            measure("fixed", lambda k, e=engine: run_checkout(
                                args.baseline, k, args.trials, tmp / f"b{next(counter)}", e), r)
                        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                                 logging_level=40)
                    measure("fixed", lambda k: run_optuna(
                        k, args.trials, tmp / f"o{next(counter)}"), r)
                    measure("fixed", lambda k: run_bare(k, args.trials), r)
                if args.trial in ("train", "both"):
                    measure("train", lambda k: run_ray(
                        k, args.trials, tmp / f"t{next(counter)}", "trials:run", TRAIN_OPTIONS,
                        TRAIN_EPOCHS), r)
    finally:
        ray.shutdown()

    verdicts: dict[str, Any] = {}
    drivers = list(dict.fromkeys(p["driver"] for p in pairs))
    for trial in ("fixed", "train"):
        for driver in drivers:
            mine = [p for p in pairs if p["trial"] == trial and p["driver"] == driver]
            if not mine:
                continue
            best = max(mine, key=lambda p: p["throughput_2_vs_1"])
            entry: dict[str, Any] = {
                "throughput_2_vs_1_best": best["throughput_2_vs_1"],
                "throughput_2_vs_1_all": [p["throughput_2_vs_1"] for p in mine],
                "overhead_per_trial_at_2_s_best_pair": best["concurrency_2"]["overhead_per_trial_s"],
                "overhead_per_trial_at_2_s_all": [
                    p["concurrency_2"]["overhead_per_trial_s"] for p in mine],
                "overhead_per_trial_at_1_s_all": [
                    p["concurrency_1"]["overhead_per_trial_s"] for p in mine],
                "trial_time_mean_s": best["concurrency_1"]["trial_time_mean_s"],
            }
            if driver == "npas on Ray":
                worst = max(entry["overhead_per_trial_at_2_s_all"])
                entry.update(overhead_target_s=0.15, overhead_ok_every_pair=worst <= 0.15,
                             throughput_target=1.8,
                             throughput_ok=best["throughput_2_vs_1"] >= 1.8)
            verdicts[f"{trial}: {driver}"] = entry
    load = os.getloadavg()
    report = {
        "benchmark": "controller",
        "command": "python benchmarks/bench_controller.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in load],
                    "python": platform.python_version(), "ray": ray.__version__,
                    "optuna": optuna.__version__},
        "steps_per_fixed_trial": STEPS,
        "repeats": args.repeat,
        "pairs": pairs,
        "verdict": verdicts,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(verdicts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
