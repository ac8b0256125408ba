"""Rows lost when controllers start one new study at once, and hostile inputs tried.

What is measured
----------------
* **race**: ``--rounds`` rounds per backend (SQLite, PostgreSQL, MariaDB); in each,
  ``--racers`` processes start the same new study at the same moment (staggered by
  0.15 s), as ``npas search`` does: create the study through ``StudyStore.create_study``,
  then run and record three trials (a ``running`` row, ``tell``, a ``complete`` row).
  Exactly one may win; a *row lost* is a COMPLETE Optuna trial without its
  ``npas_results`` row at the end. The same rounds run with the order npas used before
  (``legacy``: the rows of the study's name deleted first, then the study created), in the
  same run, interleaved, to show what the test catches.
* **hostile inputs**: the cases of ``tests/test_reliability_hostile.py`` and the backends
  each runs on (counted from the test module, not run here).

Run: ``.venv/bin/python benchmarks/bench_store_safety.py`` (JSON to
benchmarks/results/store_safety.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _legacy_racer(url: str, name: str, start_at: float, delay: float, queue: Any) -> None:
    """The order before: delete the name's rows, then create the study."""
    import sqlalchemy as sa

    import allocator
    from allocator.search import StudyStore
    from allocator.search._table import RESULTS, row_for

    while time.time() < start_at:
        time.sleep(0.001)
    time.sleep(delay)
    try:
        with StudyStore(url) as store:
            store.initialise()
            with store.engine.begin() as conn:
                conn.execute(sa.delete(RESULTS).where(RESULTS.c.study == name))
            import optuna

            try:
                study = optuna.create_study(storage=store.optuna_storage, study_name=name,
                                            directions=["maximize", "minimize"])
            except optuna.exceptions.DuplicatedStudyError:
                raise allocator.ConfigError(f"study {name!r} exists") from None
            for _ in range(3):
                trial = study.ask()
                store.write_result(row_for(study=name, trial_number=trial.number,
                                           trial_id=trial._trial_id, state="running"))
                study.tell(trial, [0.5, 100])
                store.write_result(row_for(study=name, trial_number=trial.number,
                                           trial_id=trial._trial_id, state="complete"))
        queue.put("won")
    except allocator.NPASError as exc:
        queue.put(f"lost: {exc}")


def _round(backend: str, racers: int, legacy: bool) -> dict[str, Any]:
    import optuna

    from allocator.search import StudyStore
    from tests.test_reliability_hostile import _database, _racer

    ctx = multiprocessing.get_context("spawn")
    target = _legacy_racer if legacy else _racer
    with tempfile.TemporaryDirectory() as tmp, _database(backend, Path(tmp)) as url:
        queue = ctx.Queue()
        start_at = time.time() + 4
        procs = [ctx.Process(target=target, args=(url, "race", start_at, 0.15 * i, queue))
                 for i in range(racers)]
        for p in procs:
            p.start()
        outcomes = [queue.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(60)
        with StudyStore(url, read_only=True) as store:
            study = store.load_study("race")
            complete = {t.number for t in study.trials
                        if t.state == optuna.trial.TrialState.COMPLETE}
            rows = {r["trial_number"] for r in store.results("race", state="complete")}
    return {"backend": backend, "legacy": legacy, "winners": outcomes.count("won"),
            "complete_trials": len(complete), "rows": len(rows),
            "rows_lost": len(complete - rows)}


def _hostile_count() -> dict[str, Any]:
    from tests import test_reliability_hostile as t

    backends = t.BACKENDS
    store_cases = sum(len(b or backends) for _, _, _, b in t.CASES)
    return {"store_cases": len(t.CASES), "store_case_runs": store_cases,
            "other_cases": len(t.OTHER_CASES), "backends": list(backends)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--racers", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/store_safety.json"))
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        for backend in args.backends.split(","):
            for legacy in (False, True):  # interleaved: the same load on both
                runs.append(_round(backend, args.racers, legacy))
                print(json.dumps(runs[-1]), flush=True)
    summary = {
        mode: {
            "rounds": sum(r["legacy"] == legacy for r in runs),
            "rounds_with_one_winner": sum(r["legacy"] == legacy and r["winners"] == 1 for r in runs),
            "complete_trials": sum(r["complete_trials"] for r in runs if r["legacy"] == legacy),
            "rows_lost": sum(r["rows_lost"] for r in runs if r["legacy"] == legacy),
        }
        for mode, legacy in (("npas", False), ("legacy_delete_by_name_first", True))
    }
    out = {"racers": args.racers, "rounds_per_backend": args.rounds, "summary": summary,
           "hostile_inputs": _hostile_count(), "runs": runs,
           "command": "python benchmarks/bench_store_safety.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
