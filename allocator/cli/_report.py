"""``npas report``: a study as a folder to share (an HTML page and its Markdown twin).

The report holds the Pareto table and plot (and an interactive plot), the hypervolume
against trials, the parameter importances per objective, the best model's allocation
drawn layer by layer, and the command and library versions that made the study.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from allocator.cli._query import storage_flag

    p = subparsers.add_parser(
        "report",
        help="write a study's report: HTML and Markdown with its plots",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="study name (see `npas studies`)")
    storage_flag(p)
    p.add_argument("--out", default="report", metavar="DIR",
                   help="directory to write index.html, report.md and the figures to "
                        "(default: report)")
    p.add_argument("--trial", type=int, metavar="N",
                   help="draw this trial's allocation (default: the most accurate Pareto "
                        "trial that has one)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    import optuna

    from dashboards import write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = write_report(args.storage, args.study, args.out, trial=args.trial)
    print(f"report on {report.study}: {report.html} and {report.markdown} "
          f"({len(report.pareto_trials)} Pareto trials, {len(report.figures)} figures)")
    return 0
