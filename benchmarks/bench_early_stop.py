"""Early stopping across the Pareto front: hypervolume of the front against epochs spent.

What is measured
----------------
The same search (space ``lowbudget``, TPE sampler, seed, trials, epochs, concurrency) is
run with ``--early-stop none`` and ``--early-stop pareto`` (and ``asha`` with
``--rules none,pareto,asha``), for 3 seeds, on cnn1d and mlp over MNIST-1D. After each
finished trial (in the order they finished) we take the hypervolume of the front of
the complete trials and the training epochs spent so far by every trial (complete,
pruned or failed: ``epochs_run``). The objectives are normalised the same way in every
run: ``1 - val_accuracy`` and ``(log10(trainable_params / model params) + 3) / 3``
(a fraction of 0.001 of the model is 0, the whole model 1); the reference point is
``(1, 1)``.

Target (issue 11): the final hypervolume of no stopping (within 1 %) at no more than
50 % of its epochs. The JSON says what each seed reaches, whatever it is.

Run: ``python benchmarks/bench_early_stop.py`` (JSON to benchmarks/results/early_stop.json,
plot to docs/img/early_stop.png).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OPTIONS = {"data_size": 2000, "batch_size": 64, "max_steps_per_epoch": 15}


def curve(rows: list[dict[str, Any]], total: int) -> list[tuple[int, float]]:
    """``(epochs spent, hypervolume)`` after each finished trial."""
    from dashboards._pareto import hypervolume

    done = sorted((r for r in rows if r["finished_at"]), key=lambda r: r["finished_at"])
    spent, points, out = 0, [], []
    for row in done:
        spent += int(row["epochs_run"] or 0)
        if row["state"] == "complete" and row["val_accuracy"] is not None:
            fraction = max(row["trainable_params"] / total, 1e-3)
            points.append((1.0 - row["val_accuracy"], (math.log10(fraction) + 3) / 3))
        out.append((spent, hypervolume(points, [1.0, 1.0]) if points else 0.0))
    return out


def model_params(model: str) -> int:
    import allocator
    from trials.data import load_dataset
    from trials.zoo import build_model

    data = load_dataset("mnist1d", size=OPTIONS["data_size"])
    net = build_model(model, input_shape=tuple(data.input_shape), num_classes=data.num_classes)
    return int(allocator.count_parameters(net))


def run_one(model: str, rule: str, seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from allocator.search import SearchSettings, StudyStore, run_search

    url = f"sqlite:///{tmp / f'{model}-{rule}-{seed}.db'}"
    settings = SearchSettings(
        study="s", model=model, data="mnist1d", space="lowbudget", trials=args.trials,
        concurrency=args.concurrency, epochs=args.epochs, seed=seed, storage=url,
        early_stop=rule, trial_options=OPTIONS,
    )
    start = time.monotonic()
    summary = run_search(settings)
    with StudyStore(url, must_exist=True) as store:
        rows = store.results("s")
    points = curve(rows, model_params(model))
    return {
        "model": model, "rule": rule, "seed": seed, "complete": summary.complete,
        "pruned": summary.pruned, "failed": summary.failed,
        "epochs": points[-1][0], "hypervolume": round(points[-1][1], 6),
        "wall_s": round(time.monotonic() - start, 1), "curve": points,
    }


def verdict(runs: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """Against ``none`` of the same model and seed: hypervolume and epochs ratios, and the
    epochs at which the rule first reached 99 % of ``none``'s final hypervolume."""
    out: dict[str, Any] = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        pairs = []
        for base in (r for r in runs if r["model"] == model and r["rule"] == "none"):
            mine = next((r for r in runs if r["model"] == model and r["rule"] == rule
                         and r["seed"] == base["seed"]), None)
            if mine is None or not base["hypervolume"]:
                continue
            goal = 0.99 * base["hypervolume"]
            reached = next((e for e, hv in mine["curve"] if hv >= goal), None)
            pairs.append({
                "seed": base["seed"],
                "hypervolume_ratio": round(mine["hypervolume"] / base["hypervolume"], 4),
                "epochs_ratio": round(mine["epochs"] / base["epochs"], 4),
                "epochs_to_99pct_of_none_ratio": None if reached is None
                else round(reached / base["epochs"], 4),
            })
        if pairs:
            out[model] = {
                "per_seed": pairs,
                "hypervolume_ratio_mean": round(statistics.mean(p["hypervolume_ratio"] for p in pairs), 4),
                "epochs_ratio_mean": round(statistics.mean(p["epochs_ratio"] for p in pairs), 4),
                # the target: 99 % of none's final hypervolume within half of none's epochs
                "target_met_seeds": sum(p["epochs_to_99pct_of_none_ratio"] is not None
                                        and p["epochs_to_99pct_of_none_ratio"] <= 0.5
                                        for p in pairs),
            }
    return out


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in runs))
    colours = {"none": "tab:grey", "pareto": "tab:blue", "asha": "tab:orange"}
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for run in (r for r in runs if r["model"] == model):
            xs, ys = zip(*run["curve"], strict=True)
            ax.step(xs, ys, where="post", color=colours.get(run["rule"], "k"), alpha=0.8,
                    label=run["rule"] if run["seed"] == 0 else None)
        ax.set(title=f"{model} on MNIST-1D (3 seeds)", xlabel="training epochs spent",
               ylabel="hypervolume of the front")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    import optuna

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default="cnn1d,mlp")
    parser.add_argument("--rules", default="none,pareto")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=18)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--data-size", type=int, default=OPTIONS["data_size"])
    parser.add_argument("--steps", type=int, default=OPTIONS["max_steps_per_epoch"],
                        help="training steps per epoch at most")
    parser.add_argument("--out", default=str(HERE / "results" / "early_stop.json"))
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "img" / "early_stop.png"))
    parser.add_argument("--grad-clip", type=float, default=None,
                        help="the trials' gradient-norm clip (default: the trial's; 0: off)")
    args = parser.parse_args(argv)
    OPTIONS.update(data_size=args.data_size, max_steps_per_epoch=args.steps)
    if args.grad_clip is not None:
        OPTIONS["grad_clip"] = args.grad_clip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for seed in range(args.seeds):
                for rule in args.rules.split(","):  # interleaved: the same machine load
                    run = run_one(model, rule, seed, args, Path(tmp))
                    print(json.dumps({k: v for k, v in run.items() if k != "curve"}), file=sys.stderr)
                    runs.append(run)
    report = {
        "benchmark": "early_stop",
        "command": "python benchmarks/bench_early_stop.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"space": "lowbudget", "sampler": "tpe", "trials": args.trials,
                     "epochs": args.epochs, "concurrency": args.concurrency, "options": OPTIONS},
        "runs": runs,
        "verdict": {rule: verdict(runs, rule) for rule in args.rules.split(",") if rule != "none"},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, Path(args.plot))
    print(json.dumps(report["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
