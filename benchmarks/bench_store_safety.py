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
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _round(backend: str, racers: int, legacy: bool) -> dict[str, Any]:
    from tests.test_reliability_hostile import _database, race

    with tempfile.TemporaryDirectory() as tmp, _database(backend, Path(tmp)) as url:
        outcomes, complete, rows = race(url, racers, legacy)
    return {"backend": backend, "legacy": legacy, "winners": outcomes.count("won"),
            "complete_trials": len(complete), "rows": len(rows),
            "rows_lost": len(set(complete) - set(rows))}


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
