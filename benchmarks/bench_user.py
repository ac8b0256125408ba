"""A user's model against the same model from the zoo: what the user path costs, in one run.

What is measured
----------------
The same network (the zoo's cnn1d) on the same MNIST-1D tensors is searched twice:
once by zoo name (``--model cnn1d --data mnist1d``) and once as a user's project
(``--model benchuser:cnn1d --data benchuser:mnist1d``, a factory and a loader in a
temporary folder, imported by ``MODULE:ATTR``). Same space, sampler, seed, trials and
training; each search gets a fresh local Ray and a fresh SQLite store. The two kinds
alternate (zoo, user, zoo, user, ...) so that the machine's load falls on both alike.

* **time to first result**: from the call of ``run_search`` to the first trial recorded
  (Ray start-up, the checks before the first write, worker start-up and one trial).
  The user path's checks import the modules, call the loader and the factory once and
  run one batch on the controller.
* **controller overhead per trial**: the idle time of the worker between the end of one
  trial and the start of the next (``npas_results.started_at``/``finished_at``), median.
* **trial time**: the trial's own duration on its worker, median (the user path resolves
  the factory by import path and calls it in every trial).

Run: ``.venv/bin/python benchmarks/bench_user.py`` (JSON to benchmarks/results/user.json).
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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PROJECT = '''
"""The zoo's cnn1d and MNIST-1D, as a user's factory and loader would give them."""
from trials.data import load_dataset
from trials.zoo import build_model


def cnn1d():
    return build_model("cnn1d", input_shape=(1, 40), num_classes=10)


def mnist1d():
    d = load_dataset("mnist1d", size=3000)
    return (d.train.x, d.train.y), (d.val.x, d.val.y), (d.test.x, d.test.y)
'''
SPACE = {
    "name": "bench-user",
    "fixed": {"method": "ssn", "mapping": "roundrobin"},
    "dims": {"budget": {"type": "float", "low": 0.25, "high": 1.0, "log": True},
             "groups": {"type": "int", "low": 1, "high": 3}},
}
OPTIONS = {"max_steps_per_epoch": 20, "batch_size": 64}
KINDS = {"zoo": ("cnn1d", "mnist1d"), "user": ("benchuser:cnn1d", "benchuser:mnist1d")}


def one_search(kind: str, root: Path, trials: int, index: int) -> dict[str, Any]:
    from allocator.search import SearchSettings, StudyStore, run_search

    model, data = KINDS[kind]
    url = f"sqlite:///{root / f'{kind}-{index}.db'}"
    # the user's loader already gives the 3,000 examples the zoo's data_size asks for
    options = {**OPTIONS, "data_size": 3000} if kind == "zoo" else dict(OPTIONS)
    first: list[float] = []
    start = time.perf_counter()

    def progress(status: Any) -> None:
        if status.done >= 1 and not first:
            first.append(time.perf_counter() - start)

    summary = run_search(
        SearchSettings(f"{kind}-{index}", model=model, data=data, space=SPACE, trials=trials,
                       epochs=2, seed=index, storage=url, trial_options=options),
        on_progress=progress,
    )
    with StudyStore(url, must_exist=True) as store:
        rows = sorted(store.results(f"{kind}-{index}"), key=lambda r: r["started_at"])
    gaps = [(b["started_at"] - a["finished_at"]).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]
    return {
        "kind": kind,
        "complete": summary.complete,
        "first_result_s": first[0] if first else None,
        "overhead_per_trial_s": statistics.median(gaps),
        "trial_s": statistics.median(r["duration_s"] for r in rows),
        "elapsed_s": summary.elapsed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "user.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "benchuser.py").write_text(PROJECT)
        os.chdir(root)  # the user's project folder: MODULE is imported from here
        for i in range(args.repeat):
            for kind in ("zoo", "user"):
                run = one_search(kind, root, args.trials, i)
                runs.append(run)
                print(json.dumps(run), flush=True)

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["kind"] == kind)

    result = {
        "benchmark": "user model vs the same zoo model",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "trials": args.trials,
        "repeat": args.repeat,
        "runs": runs,
        "median": {k: {key: median(k, key) for key in ("first_result_s", "overhead_per_trial_s", "trial_s")}
                   for k in KINDS},
    }
    result["ratio_user_to_zoo"] = {
        key: result["median"]["user"][key] / result["median"]["zoo"][key]
        for key in ("first_result_s", "overhead_per_trial_s", "trial_s")
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median": result["median"], "ratio": result["ratio_user_to_zoo"]}, indent=2))


if __name__ == "__main__":
    main()
