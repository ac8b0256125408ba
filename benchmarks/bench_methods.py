"""Test accuracy of SSNs against the baselines on MNIST-1D, in one run.

``resnet1d`` on MNIST-1D: the full network, and at budgets 0.05, 0.1 and 0.25 of its
parameters an SSN (learned mapping), the reduced-width network and HashedNets; an SSN at
4.0; three seeds each. Every trial is a real ``trials.run`` (training from scratch,
validation for nothing but reporting, test accuracy at the end). Trials run two at a time
in worker processes, one thread each.

    python benchmarks/bench_methods.py                      # writes benchmarks/results/methods.json
    python benchmarks/bench_methods.py --epochs 5 --seeds 0  # a quick look
    python benchmarks/bench_methods.py --upsample inter      # the generators' default
    python benchmarks/bench_methods.py --select --out benchmarks/results/methods_selected.json

``--select`` does what an NPAS search does before the final runs: for each SSN budget it
trains every setting of a small grid (groups x downsampling generator) on separate
selection seeds, keeps the one with the best mean *validation* accuracy, and only then
runs the test seeds with it. The test split plays no part in the choice; the baselines
have no such settings to choose.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _run(config: dict[str, Any]) -> dict[str, Any]:
    import trials

    result = trials.run(config)
    return {
        "config": config,
        "status": result.status,
        "failure_reason": result.failure_reason,
        "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy,
        "trainable_params": result.trainable_params,
        "train_time_s": result.train_time_s,
    }


SELECT_GROUPS = (1, 2, 4)
SELECT_DOWNSAMPLE = ("emb", "wavg")


def ssn_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"method": "ssn", "mapping": "learned", "groups": args.groups,
            "pretrain_epochs": args.pretrain_epochs, "downsample": args.downsample,
            "upsample": args.upsample}


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "data": "mnist1d", "epochs": args.epochs, "eval_test": True,
            "threads": 1, "groups": None}


def select(args: argparse.Namespace, pool: ProcessPoolExecutor) -> dict[float, dict[str, Any]]:
    """Per SSN budget, the grid setting with the best mean validation accuracy over the
    selection seeds (never the test split)."""
    grid = [{**ssn_settings(args), "groups": g, "downsample": d}
            for g in SELECT_GROUPS for d in SELECT_DOWNSAMPLE]
    runs = [{**base_config(args), **setting, "seed": seed, "budget": budget, "eval_test": False}
            for budget in [*args.budgets, args.high] for setting in grid
            for seed in args.select_seeds]
    scores: dict[tuple[float, int, str], list[float]] = {}
    for row in pool.map(_run, runs):
        cfg = row["config"]
        key = (cfg["budget"], cfg["groups"], cfg["downsample"])
        val = row["val_accuracy"] if row["status"] == "complete" else 0.0
        scores.setdefault(key, []).append(val or 0.0)
        print(f"select: budget {cfg['budget']:<5} groups {cfg['groups']} {cfg['downsample']:4s} "
              f"seed {cfg['seed']} val {val}", flush=True)
    chosen: dict[float, dict[str, Any]] = {}
    for budget in [*args.budgets, args.high]:
        best = max((k for k in scores if k[0] == budget),
                   key=lambda k: (statistics.mean(scores[k]), -k[1]))
        chosen[budget] = {**ssn_settings(args), "groups": best[1], "downsample": best[2]}
    args.selection = {str(k): {"groups": v["groups"], "downsample": v["downsample"],
                               "val_accuracy_by_setting": {
                                   f"groups={g} {d}": statistics.mean(scores[(k, g, d)])
                                   for g in SELECT_GROUPS for d in SELECT_DOWNSAMPLE}}
                      for k, v in chosen.items()}
    return chosen


def configs(args: argparse.Namespace,
            chosen: dict[float, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    base, ssn = base_config(args), ssn_settings(args)
    runs: list[dict[str, Any]] = []
    chosen = chosen or {}
    for seed in args.seeds:
        runs.append({**base, "seed": seed, "method": "full", "budget": 1.0})
        for budget in args.budgets:
            runs.append({**base, **chosen.get(budget, ssn), "seed": seed, "budget": budget})
            runs.append({**base, "seed": seed, "method": "reduced_width", "budget": budget})
            runs.append({**base, "seed": seed, "method": "hashed", "budget": budget})
        runs.append({**base, **chosen.get(args.high, ssn), "seed": seed, "budget": args.high})
    return runs


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        cfg = row["config"]
        table.setdefault((cfg["method"], cfg["budget"]), []).append(row)
    out = []
    for (method, budget), runs in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        accs = [r["test_accuracy"] for r in runs if r["status"] == "complete"]
        out.append({
            "method": method,
            "budget": budget,
            "runs": len(runs),
            "failed": len(runs) - len(accs),
            "params": round(statistics.mean(r["trainable_params"] for r in runs)),
            "test_accuracy_mean": statistics.mean(accs) if accs else None,
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        })
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| budget | method | trained params | test accuracy (mean ± std) |",
             "|---|---|---|---|"]
    for s in summary:
        acc = "failed" if s["test_accuracy_mean"] is None else (
            f"{100 * s['test_accuracy_mean']:.2f} ± {100 * s['test_accuracy_std']:.2f} %")
        lines.append(f"| {s['budget']} | {s['method']} | {s['params']:,} | {acc} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet1d")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--downsample", default="emb")
    parser.add_argument("--upsample", default="repeat",
                        help="repeat: better than inter for 1-D convs in a one-seed pilot")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.05, 0.1, 0.25])
    parser.add_argument("--high", type=float, default=4.0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--select", action="store_true",
                        help="choose each SSN budget's groups and downsampling generator on "
                             "validation accuracy first (see the module's docstring)")
    parser.add_argument("--select-seeds", nargs="+", type=int, default=[100, 101])
    parser.add_argument("--out", type=Path, default=RESULTS / "methods.json")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    args.selection = None
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        runs = configs(args, select(args, pool) if args.select else None)
        for row in pool.map(_run, runs):
            cfg = row["config"]
            print(f"seed {cfg['seed']} {cfg['method']:14s} budget {cfg['budget']:<5} "
                  f"params {row['trainable_params']:>8,} test {row['test_accuracy']}",
                  flush=True)
            rows.append(row)
    summary = summarise(rows)
    print(markdown(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/bench_methods.py " + " ".join(sys.argv[1:]),
        "wall_s": time.perf_counter() - start,
        "selection": args.selection,
        "summary": summary,
        "runs": rows,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
