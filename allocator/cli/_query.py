"""``npas studies``, ``npas trials``, ``npas pareto``, ``npas export``: read a study store.

All of them read through ``--storage URL`` (default ``$NPAS_STORAGE``, else
``sqlite:///npas.db``) and never write to it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from allocator.cli._text import printable

__all__ = ["format_rows", "register"]

_TRIAL_COLUMNS = (
    "trial_number", "state", "method", "budget", "mapping", "groups", "downsample",
    "templates", "upsample", "val_accuracy", "trainable_params", "duration_s", "host",
    "failure_reason",
)
_PARETO_COLUMNS = (
    "trial_number", "trainable_params", "val_accuracy", "method", "budget", "mapping",
    "groups", "downsample", "templates", "upsample", "step_time_s",
)
_SHORT = {"trial_number": "trial", "trainable_params": "params", "val_accuracy": "val_acc",
          "duration_s": "time_s", "failure_reason": "reason", "downsample": "down",
          "upsample": "up", "templates": "K", "groups": "P", "step_time_s": "step_s"}


def storage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", metavar="URL", default=None,
        help="SQLAlchemy URL of the study store (default: $NPAS_STORAGE, else sqlite:///npas.db)",
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "studies", help="list the studies in a store",
        description="List the studies in a study store, one line each.",
    )
    storage_flag(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (default: table)")
    p.set_defaults(func=_studies)

    p = subparsers.add_parser(
        "trials", help="list a study's trials",
        description="List a study's trials from npas_results (table, CSV or JSON).",
    )
    p.add_argument("study", help="study name")
    storage_flag(p)
    p.add_argument("--state", choices=("complete", "failed", "pruned", "running"),
                   help="only trials in this state")
    p.add_argument("--sort", metavar="COLUMN",
                   help="sort by a column of npas_results, e.g. accuracy, val_accuracy, "
                        "trainable_params (accuracies sort best first)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table: the main columns; csv and json: every column (default: table)")
    p.set_defaults(func=_trials)

    p = subparsers.add_parser(
        "pareto", help="the Pareto-optimal trials of a study",
        description="The trials no other trial beats on every objective, fewest params first.",
    )
    p.add_argument("study", help="study name")
    storage_flag(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (default: table)")
    p.add_argument("--plot", action="append", default=[], metavar="PATH",
                   help="also draw accuracy against parameters to PATH: .html (interactive, "
                        "plotly) or .png, .svg, .pdf (static, matplotlib); repeatable")
    p.set_defaults(func=_pareto)

    p = subparsers.add_parser(
        "export", help="save a trial's trained model as a plain state_dict",
        description="Load the trial's kept weights (or retrain its config), materialise "
                    "the model and save the plain model's state_dict.",
    )
    p.add_argument("study", help="study name")
    p.add_argument("trial", type=int, help="trial number")
    p.add_argument("--out", required=True, metavar="PATH", help="where to save the state_dict")
    storage_flag(p)
    p.add_argument("--artifacts", metavar="DIR",
                   help="artifacts directory of the search (default: the one it recorded)")
    p.set_defaults(func=_export)


def _studies(args: argparse.Namespace) -> int:
    from allocator.search import StudyStore

    with StudyStore(args.storage, read_only=True) as store:
        rows = store.summaries()
    if not rows and args.format == "table":
        print(f"no studies in {printable(store.masked_url)}", file=sys.stderr)
        return 0
    columns = ("study", "trials", "complete", "failed", "running", "space", "objectives", "started")
    sys.stdout.write(format_rows(rows, columns, args.format))
    return 0


def _trials(args: argparse.Namespace) -> int:
    from allocator.search import StudyStore, trial_rows

    sort = {"accuracy": "val_accuracy", "params": "trainable_params"}.get(args.sort, args.sort)
    with StudyStore(args.storage, read_only=True) as store:
        rows = trial_rows(store, args.study, state=args.state, sort=sort)
    columns = _TRIAL_COLUMNS if args.format == "table" else tuple(rows[0]) if rows else ()
    if args.format == "table":
        rows = [applicable(r) for r in rows]
    sys.stdout.write(format_rows(rows, columns, args.format))
    return 0


def applicable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with the config fields that did not apply to its trial blanked (for tables):
    ``templates`` of ``slice``, ``groups`` of ``type``, the SSN knobs of a baseline.

    Example:
        >>> applicable({"method": "ssn", "downsample": "slice", "templates": 4})["templates"]
    """
    from allocator._vocab import RULES, applies

    return {k: v if k not in RULES or applies(k, row) else None for k, v in row.items()}


def _pareto(args: argparse.Namespace) -> int:
    from allocator.search import StudyStore, pareto_front

    if args.plot:
        from dashboards import check_plot_path

        for path in args.plot:  # a bad suffix fails before anything is read or written
            check_plot_path(path)
    with StudyStore(args.storage, read_only=True) as store:
        rows = pareto_front(store, args.study)
    columns = pareto_columns(rows) if args.format == "table" else tuple(rows[0]) if rows else ()
    if args.format == "table":
        rows = [applicable(r) for r in rows]
    sys.stdout.write(format_rows(rows, columns, args.format))
    if args.plot:
        from dashboards import load_trials, plot_pareto_data

        data = load_trials(args.storage, args.study)
        for path in args.plot:
            out = plot_pareto_data(data, path)
            print(f"wrote {out}", file=sys.stderr if args.format != "table" else sys.stdout)
    return 0


def pareto_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The Pareto table's columns: the usual ones that any row has, with the metrics a
    user's trial function returned (its objectives) after the parameters, and its
    hyperparameters (``hp``) last.

    Example:
        >>> pareto_columns([{"trial_number": 0, "trainable_params": 9, "f1": 0.5,
        ...                  "metrics": {"f1": 0.5}, "hp": {"width": 8}, "method": "ssn"}])
        ('trial_number', 'trainable_params', 'f1', 'method', 'hp')
    """
    metrics = list(dict.fromkeys(k for r in rows for k in (r.get("metrics") or {})))
    usual = [c for c in _PARETO_COLUMNS if any(r.get(c) is not None for r in rows)]
    hp = ["hp"] if any(r.get("hp") for r in rows) else []
    return tuple(dict.fromkeys([*usual[:2], *metrics, *usual[2:], *hp]))


def _export(args: argparse.Namespace) -> int:
    from allocator.search import export_model

    info = export_model(
        args.study, args.trial, args.out, storage=args.storage, artifacts=args.artifacts
    )
    print(
        f"trial {args.trial} ({info['method']}, weights {info['source']}): "
        f"{info['params']} parameters saved to {info['out']}"
    )
    return 0


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str = "table") -> str:
    """Rows as an aligned table, CSV or JSON (JSON keeps every column).

    Example:
        >>> print(format_rows([{"trial_number": 0, "val_accuracy": 0.91234}],
        ...                   ["trial_number", "val_accuracy"]), end="")
        trial  val_acc
            0   0.9123
    """
    if fmt == "json":
        return json.dumps([{c: _jsonable(r.get(c)) for c in columns} for r in rows], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_cell(r.get(c)) for c in columns])
        return buffer.getvalue()
    if not rows:
        return "(no trials)\n"
    header = [_SHORT.get(c, c) for c in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
    numeric = [all(_is_number(r.get(c)) or r.get(c) is None for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(header), *(line(c) for c in cells)]) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    text = printable(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str):
        return printable(value)
    return _jsonable(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
