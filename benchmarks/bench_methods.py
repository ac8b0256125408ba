"""Test accuracy of SSNs against the baselines, in one run.

For every model and data set (default ``cnn1d`` and ``resnet1d`` on MNIST-1D and
``digits``): the full network, and at each budget an SSN with ``shapeshift``'s default
settings (``--ssn defaults``; ``--ssn learned`` for the learned mapping with 4 groups),
the reduced-width network and HashedNets, over the seeds. Every trial is a real
``trials.run`` (training from scratch, test accuracy at the end). Trials run two at a
time in worker processes, one thread each. The summary gives, per budget, the SSN's
paired differences over seeds against each baseline (same seed, so same data split,
initial weights and order of batches where the methods share them).

    python benchmarks/bench_methods.py                                  # writes methods.json
    python benchmarks/bench_methods.py --models cnn1d --data mnist1d --seeds 0 1 --epochs 5
    python benchmarks/bench_methods.py --data-epochs digits=10          # fewer epochs on one set
    python benchmarks/bench_methods.py --ssn single --downsample avg --upsample hash \
        --models cnn1d --data-epochs digits=10 --out benchmarks/results/methods_avg_hash.json
    python benchmarks/bench_methods.py --ssn learned --models resnet1d --select \
        --out benchmarks/results/methods_selected.json

``--select`` (with ``--ssn learned``) does what an NPAS search does before the final
runs: for each SSN budget it trains every setting of a small grid (groups x
downsampling generator) on separate selection seeds, keeps the one with the best mean
*validation* accuracy, and only then runs the test seeds with it. The test split plays
no part in the choice; the baselines have no such settings to choose.
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
    from allocator import NPASError

    try:
        result = trials.run(config)
    except NPASError as exc:  # e.g. a budget below what the method needs
        return {"config": config, "status": "refused", "failure_reason": str(exc),
                "test_accuracy": None, "val_accuracy": None, "trainable_params": 0,
                "train_time_s": 0.0}
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
    if args.ssn == "defaults":  # shapeshift's and TrialConfig's, written out in each config
        from allocator._vocab import DEFAULTS

        return {"method": "ssn", **DEFAULTS}
    if args.ssn == "single":  # one group, the generators given
        return {"method": "ssn", "mapping": "single", "downsample": args.downsample,
                "upsample": args.upsample}
    if args.ssn in ("type", "roundrobin"):  # a fixed mapping, the generators given
        grouped = {"groups": args.groups} if args.ssn == "roundrobin" else {}
        return {"method": "ssn", "mapping": args.ssn, **grouped,
                "downsample": args.downsample, "upsample": args.upsample}
    return {"method": "ssn", "mapping": "learned", "groups": args.groups,
            "pretrain_epochs": args.pretrain_epochs, "downsample": args.downsample,
            "upsample": args.upsample}


def base_config(args: argparse.Namespace, model: str, data: str) -> dict[str, Any]:
    epochs = args.data_epochs.get(data, args.epochs)
    # the clip is written into every config, so that runs of an earlier default never pass
    # for these in --baselines-from
    return {"model": model, "data": data, "epochs": epochs, "eval_test": True, "threads": 1,
            "grad_clip": args.grad_clip}


def select(args: argparse.Namespace, pool: ProcessPoolExecutor) -> dict[float, dict[str, Any]]:
    """Per SSN budget, the grid setting with the best mean validation accuracy over the
    selection seeds (never the test split)."""
    grid = [{**ssn_settings(args), "groups": g, "downsample": d}
            for g in SELECT_GROUPS for d in SELECT_DOWNSAMPLE]
    base = base_config(args, args.models[0], args.data[0])
    runs = [{**base, **setting, "seed": seed, "budget": budget, "eval_test": False}
            for budget in [*args.budgets, *args.high] for setting in grid
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
    for budget in [*args.budgets, *args.high]:
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
    ssn = ssn_settings(args)
    runs: list[dict[str, Any]] = []
    chosen = chosen or {}
    for model in args.models:
        for data in args.data:
            base = base_config(args, model, data)
            for seed in args.seeds:
                runs.append({**base, "seed": seed, "method": "full", "budget": 1.0})
                for budget in args.budgets:
                    runs.append({**base, **chosen.get(budget, ssn), "seed": seed, "budget": budget})
                    runs.append({**base, "seed": seed, "method": "reduced_width", "budget": budget})
                    runs.append({**base, "seed": seed, "method": "hashed", "budget": budget})
                for budget in args.high:
                    runs.append({**base, **chosen.get(budget, ssn), "seed": seed, "budget": budget})
    return runs


def _accuracy(row: dict[str, Any]) -> float | None:
    return row["test_accuracy"] if row["status"] == "complete" else None


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, data set, budget and method: mean and spread of test accuracy; for the
    SSN, its paired differences (same seed) against each baseline. A failed run (loss
    diverged) counts as failed, and as chance level (0.1) in the differences; a refused
    one (budget below what the method needs) is left out of them."""
    table: dict[tuple[str, str, float, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        cfg = row["config"]
        key = (cfg["model"], cfg["data"], cfg["budget"], cfg["method"])
        table.setdefault(key, {})[cfg["seed"]] = row
    out = []
    for (model, data, budget, method), by_seed in sorted(table.items()):
        accs = [a for a in map(_accuracy, by_seed.values()) if a is not None]
        refused = sum(r["status"] == "refused" for r in by_seed.values())
        entry: dict[str, Any] = {
            "model": model, "data": data, "method": method, "budget": budget,
            "runs": len(by_seed), "failed": len(by_seed) - len(accs) - refused,
            "refused": refused,
            "params": round(statistics.mean(r["trainable_params"] for r in by_seed.values())),
            "test_accuracy_mean": statistics.mean(accs) if accs else None,
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        }
        if method == "ssn":
            for other in ("hashed", "reduced_width"):
                theirs = table.get((model, data, budget, other), {})
                diffs = [(_accuracy(by_seed[s]) or 0.1) - (_accuracy(theirs[s]) or 0.1)
                         for s in sorted(by_seed) if s in theirs
                         and "refused" not in (by_seed[s]["status"], theirs[s]["status"])]
                if diffs:
                    entry[f"minus_{other}"] = {
                        "mean": statistics.mean(diffs),
                        "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                        "wins": sum(d > 0 for d in diffs), "pairs": len(diffs),
                    }
        out.append(entry)
    return out


def _pct(mean: float | None, std: float) -> str:
    return "failed" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown(summary: list[dict[str, Any]]) -> str:
    """One row per model, data set and budget: each method's test accuracy and the SSN's
    paired differences (mean ± std over seeds, wins / pairs)."""
    cells: dict[tuple[str, str, float], dict[str, dict[str, Any]]] = {}
    for s in summary:
        cells.setdefault((s["model"], s["data"], s["budget"]), {})[s["method"]] = s
    lines = ["| model | data | budget | params | SSN | HashedNets | reduced width | full "
             "| SSN - Hashed | SSN - reduced |", "|---" * 10 + "|"]
    for (model, data, budget), row in cells.items():
        def acc(method: str, row: dict[str, dict[str, Any]] = row) -> str:
            s = row.get(method)
            if s is None:
                return ""
            if s.get("refused") == s["runs"]:
                return "refused (budget below its minimum)"
            fails = f" ({s['failed']} failed)" if s["failed"] else ""
            return _pct(s["test_accuracy_mean"], s["test_accuracy_std"]) + fails

        def diff(other: str, row: dict[str, dict[str, Any]] = row) -> str:
            d = row.get("ssn", {}).get(f"minus_{other}")
            if d is None:
                return ""
            return f"{100 * d['mean']:+.1f} ± {100 * d['std']:.1f} ({d['wins']}/{d['pairs']})"

        params = next(iter(row.values()))["params"]
        lines.append(f"| {model} | {data} | {budget} | {params:,} | {acc('ssn')} | {acc('hashed')} "
                     f"| {acc('reduced_width')} | {acc('full')} | {diff('hashed')} "
                     f"| {diff('reduced_width')} |")
    return "\n".join(lines)


def _default_clip() -> float:
    from trials import TrialConfig

    return TrialConfig().grad_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn1d", "resnet1d"])
    parser.add_argument("--data", nargs="+", default=["mnist1d", "digits"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data-epochs", nargs="*", default=[], metavar="DATA=EPOCHS",
                        help="epochs for one data set, e.g. digits=10")
    parser.add_argument("--ssn", choices=["defaults", "single", "type", "roundrobin", "learned"],
                        default="defaults",
                        help="defaults: shapeshift's own settings; single: one group with "
                             "--downsample and --upsample; type: a group per layer kind and "
                             "shape, roundrobin: --groups groups, each with those generators; "
                             "learned: the options below")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--downsample", default="emb")
    parser.add_argument("--upsample", default="repeat")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.25])
    parser.add_argument("--high", nargs="*", type=float, default=[],
                        help="SSN-only budgets above the model's size, e.g. 4.0")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--select", action="store_true",
                        help="choose each SSN budget's groups and downsampling generator on "
                             "validation accuracy first (see the module's docstring)")
    parser.add_argument("--select-seeds", nargs="+", type=int, default=[100, 101])
    parser.add_argument("--baselines-from", type=Path, metavar="JSON",
                        help="take the full, reduced-width and HashedNets runs from an earlier "
                             "result file where their configs match (model, data, epochs, "
                             "seed, budget) and train only what it lacks (the SSN)")
    parser.add_argument("--grad-clip", type=float, default=_default_clip(),
                        help="the trials' gradient-norm clip (default: the trial's; 0: off)")
    parser.add_argument("--out", type=Path, default=RESULTS / "methods.json")
    args = parser.parse_args()
    args.data_epochs = {k: int(v) for k, _, v in (item.partition("=") for item in args.data_epochs)}
    if args.select and args.ssn != "learned":
        parser.error("--select chooses settings of --ssn learned")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    args.selection = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        runs = configs(args, select(args, pool) if args.select else None)
        reused, runs = _baselines(args.baselines_from, runs) if args.baselines_from else ([], runs)
        rows.extend(reused)
        for row in pool.map(_run, runs):
            cfg = row["config"]
            print(f"{cfg['model']} {cfg['data']} seed {cfg['seed']} {cfg['method']:14s} "
                  f"budget {cfg['budget']:<5} "
                  f"params {row['trainable_params']:>8,} test {row['test_accuracy']}",
                  flush=True)
            rows.append(row)
            _write(args, rows, start, done=len(rows) == len(runs) + len(reused))  # partial too
    print(markdown(summarise(rows)))
    print(f"wrote {args.out}")


def _baselines(path: Path, runs: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows of ``path`` for the baselines among ``runs``, same config, each marked with
    where it came from; the runs left to train)."""
    earlier = {json.dumps(row["config"], sort_keys=True): row
               for row in json.loads(path.read_text())["runs"]
               if row["config"]["method"] != "ssn"}
    reused, left = [], []
    for cfg in runs:
        row = earlier.get(json.dumps(cfg, sort_keys=True))
        if row is None:
            left.append(cfg)
        else:
            reused.append({**row, "config": cfg, "reused_from": str(path)})
    return reused, left


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], start: float, *,
           done: bool) -> None:
    args.out.write_text(json.dumps({
        "command": "python benchmarks/bench_methods.py " + " ".join(sys.argv[1:]),
        "complete": done,
        "wall_s": time.perf_counter() - start,
        "selection": args.selection,
        "summary": summarise(rows),
        "runs": rows,
    }, indent=2))

if __name__ == "__main__":
    main()
