"""``npas search``: search budgets, groups, templates, generators and mappings.

Each trial trains the model under one configuration on a Ray worker; Optuna (ask and
tell) chooses the configurations, maximising validation accuracy and minimising trained
parameters. Everything is stored at ``--storage``: Optuna's tables (the dashboard reads
them) and the flat ``npas_results`` table (plain SQL, pandas). A live line on stderr
shows the progress; the Pareto table goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

__all__ = ["register", "run_from_args"]

# Trial-config fields offered as their own flags (the rest: --set FIELD=VALUE).
_TRIAL_FLAGS: dict[str, tuple[type, str, str]] = {
    "data_size": (int, "N", "use only this many examples (quick runs)"),
    "batch_size": (int, "B", "training batch size (default: the trial's, 128)"),
    "max_steps_per_epoch": (int, "STEPS", "cap on training steps per epoch (quick runs)"),
    "lr": (float, "LR", "learning rate (default: the trial's, 0.1)"),
}


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """The flags `npas search` shares with `npas demo`."""
    from allocator.cli._query import storage_flag

    storage_flag(p)
    p.add_argument("--trials", type=int, metavar="N",
                   help="trials to finish in the study (default: 24)")
    p.add_argument("--concurrency", type=int, metavar="K",
                   help="trials running at once (default: 1; the demo: 2)")
    p.add_argument("--epochs", type=int, metavar="E", help="training epochs per trial (default: 5)")
    p.add_argument("--seed", type=int, metavar="S",
                   help="seed of the sampler and of every trial (default: 0)")
    p.add_argument("--sampler", choices=("tpe", "nsga2", "random", "grid"),
                   help="Optuna sampler (default: tpe; grid needs a finite space)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="join the Ray cluster at HOST:PORT (or auto); default: a local Ray")
    p.add_argument("--cpus-per-trial", type=float, metavar="C",
                   help="CPUs one trial reserves, also its torch threads (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, metavar="G",
                   help="GPUs one trial reserves (default: 0)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "search",
        help="search budgets, groups, templates, generators and mappings",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", metavar="NAME",
                   help="study name (default: MODEL-DATA-SPACE); required with --resume")
    p.add_argument("--space", metavar="PRESET_OR_FILE",
                   help="a preset (default, lowbudget, highbudget, baselines) or a "
                        ".toml/.yaml file (default: default)")
    p.add_argument("--model", metavar="SPEC",
                   help="model to search: a zoo spec (cnn1d, mlp) or MODULE:ATTR, your "
                        "function or nn.Module class that returns the model (required)")
    p.add_argument("--data", metavar="NAME",
                   help="dataset: a name (mnist1d) or MODULE:ATTR, your loader returning "
                        "(train, val[, test]) (required)")
    p.add_argument("--trial", metavar="MODULE:FUNCTION",
                   help="your training function fn(model, config, report) returning a dict "
                        "of metrics (default: npas's classification loop)")
    add_search_flags(p)
    p.add_argument("--objective", action="append", metavar="NAME:max|min",
                   help="a metric the trial returns to maximise or minimise, beside trained "
                        "parameters (repeatable); or step_time / peak_memory as a third "
                        "objective (default: val_accuracy:max)")
    p.add_argument("--working-dir", metavar="DIR",
                   help="on a Ray cluster: ship DIR (the directory holding your modules) to "
                        "every worker as Ray's working_dir")
    p.add_argument("--py-modules", action="append", metavar="PATH",
                   help="on a Ray cluster: ship a package directory or module file to every "
                        "worker (Ray's py_modules; repeatable)")
    p.add_argument("--keep-models", choices=("none", "pareto", "all"),
                   help="keep trained weights as Optuna artifacts: none, those on the "
                        "Pareto front when they finish, or all (default: none)")
    p.add_argument("--artifacts", metavar="DIR",
                   help="where kept weights go (default: beside a SQLite file, else ./npas-artifacts)")
    for name, (kind, metavar, text) in _TRIAL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, dest=name, metavar=metavar,
                       help=text)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", dest="options",
                   help="any other trial-config field for every trial, e.g. --set "
                        "optimizer=adamw (repeatable; JSON values)")
    p.add_argument("--max-retries", type=int, metavar="N",
                   help="run a trial whose worker process died up to N more times before "
                        "it is recorded as failed (default: 1)")
    p.add_argument("--db-timeout", type=float, metavar="SECONDS",
                   help="how long the study store may stay unreachable while the search "
                        "retries with backoff, before it stops (default: 300)")
    # --- engine, early stopping and logging (allocator/search/_engines.py, _epochs.py)
    p.add_argument("--engine", choices=("pool", "tune"),
                   help="what runs the trials: pool (reused Ray actors, the cheapest per "
                        "trial; default) or tune (ray.tune.Tuner with Tune's OptunaSearch)")
    p.add_argument("--log", action="append", choices=("tensorboard", "mlflow"),
                   help="a Ray Tune logger callback for every trial (repeatable; --engine tune)")
    p.add_argument("--early-stop", choices=("none", "pareto", "asha"), dest="early_stop",
                   help="stop trials early: pareto (successive halving by non-dominated "
                        "rank and crowding on every objective), asha (the same on validation "
                        "accuracy alone) or none (default); needs --epochs 2 or more")
    p.add_argument("--resume", action="store_true",
                   help="continue the study, or join the controllers running it now: keep "
                        "completed trials, retry once those a stopped controller left running")
    p.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from allocator._errors import ConfigError

    given = _given(args)
    if args.resume:
        if args.study is None:
            raise ConfigError("--resume needs --study NAME (see `npas studies`)")
        return _run(lambda progress: _resume(args, given, progress), args.storage)
    for flag in ("model", "data"):
        if not getattr(args, flag):
            raise ConfigError(f"--{flag} is required (e.g. --model cnn1d --data mnist1d)")
    study = args.study  # "" is refused by the settings' check, never replaced by the default
    if study is None:
        study = f"{_stem(args.model)}-{_stem(args.data)}-{_space_stem(args.space or 'default')}"
    return _run(lambda progress: _new(study, args.storage, given, progress), args.storage)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user typed (``None`` flags are left to defaults or the study)."""
    names = ("model", "data", "trial", "space", "trials", "concurrency", "epochs", "seed",
             "sampler", "objective", "ray_address", "working_dir", "py_modules",
             "cpus_per_trial", "gpus_per_trial", "keep_models", "artifacts", "max_retries",
             "db_timeout", "early_stop", "engine")
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if "objective" in given:
        from allocator.search._settings import one_objective_form

        given["objective"] = one_objective_form(given["objective"])
    if "py_modules" in given:
        given["py_modules"] = tuple(given["py_modules"])
    if getattr(args, "log", None):
        given["log"] = tuple(dict.fromkeys(args.log))
    options = {n: getattr(args, n) for n in _TRIAL_FLAGS if getattr(args, n, None) is not None}
    options.update(parse_options(getattr(args, "options", None) or []))
    if options:
        given["trial_options"] = options
    given["verbose"] = bool(getattr(args, "verbose", 0))
    return given


def parse_options(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs; values are JSON where they parse, else strings.

    Example:
        >>> parse_options(["optimizer=adamw", "lr=0.05", "amp=false"])
        {'optimizer': 'adamw', 'lr': 0.05, 'amp': False}
    """
    import json

    from allocator._errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def _new(study: str, storage: str | None, given: dict[str, Any], progress: Any) -> Any:
    from allocator.search import SearchSettings, run_search

    return run_search(SearchSettings(study=study, storage=storage, **given), on_progress=progress)


def _resume(args: argparse.Namespace, given: dict[str, Any], progress: Any) -> Any:
    from allocator.search import resume_search

    return resume_search(args.study, storage=args.storage, on_progress=progress, **given)


def _run(search: Any, storage: str | None) -> int:
    """Run a search with the progress line, print the Pareto table, and keep the Pareto
    plots beside the kept weights."""
    import optuna

    from allocator.cli._query import format_rows
    from allocator.search import ProgressLine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from allocator.cli import terminate

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        summary = search(ProgressLine(sys.stderr))
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(summary, format_rows)
    if summary.artifacts:
        attach_plots(storage, summary.study, summary.artifacts)
    return 0


def attach_plots(storage: str | None, study: str, artifacts: str) -> None:
    """Draw the study's Pareto plot (``pareto.html``, ``pareto.png``) and keep both as
    artifacts of the study, so that Optuna Dashboard serves them. The results are already
    written: a plot that cannot be drawn is a warning, not a failed search."""
    import tempfile
    from pathlib import Path

    from allocator.search._artifacts import attach_to_study
    from dashboards import load_trials, plot_pareto_data

    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = load_trials(storage, study)
            files = [plot_pareto_data(data, Path(tmp) / name) for name in ("pareto.html", "pareto.png")]
            attach_to_study(storage, study, artifacts, files)
    except Exception as exc:  # noqa: BLE001 - never turn a finished search into a failure
        print(f"npas: warning: the Pareto plots were not kept: {exc}", file=sys.stderr)
        return
    print(f"Pareto plots kept as study artifacts: pareto.html, pareto.png in {artifacts}")


def print_summary(summary: Any, format_rows: Any) -> None:
    from allocator.cli._query import applicable, pareto_columns

    print(
        f"study {summary.study}: {summary.complete} complete, {summary.failed} failed, "
        f"{summary.pruned} pruned in {summary.elapsed_s:.0f} s; "
        f"Pareto front ({len(summary.pareto)} trials):"
    )
    sys.stdout.write(format_rows([applicable(r) for r in summary.pareto],
                                 pareto_columns(summary.pareto)))
    if summary.artifacts:
        print(f"kept weights: {summary.artifacts}")


def _stem(spec: str) -> str:
    """``models:build`` -> ``models.build`` (a study name without a colon)."""
    return spec.replace(":", ".")


def _space_stem(space: str) -> str:
    from pathlib import Path

    return Path(space).stem
