"""``npas delete STUDY``: delete a study, its npas_results rows and its kept files.

Asks for confirmation (type the study's name) unless ``--yes`` is given. Deleting a
study anywhere else (Optuna Dashboard, ``optuna.delete_study``) leaves its flat rows and
its kept weights behind; this deletes all three together.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from allocator.cli._query import storage_flag

    p = subparsers.add_parser(
        "delete", help="delete a study with its npas_results rows and kept files",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="study name (exactly as `npas studies` lists it)")
    storage_flag(p)
    p.add_argument("--artifacts", metavar="DIR",
                   help="kept-weights directory (default: the one the study recorded)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_delete)


def _delete(args: argparse.Namespace) -> int:
    from allocator._errors import ConfigError
    from allocator.cli._text import printable
    from allocator.search._delete import delete_study, plan_delete

    plan = plan_delete(args.study, storage=args.storage, artifacts=args.artifacts)
    shown = printable(plan.study)
    what = (f"study {shown!r} in {printable(plan.storage)}: {plan.trials} trials, their "
            f"npas_results rows and {len(plan.artifact_ids)} kept files")
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"deleting {what} needs confirmation; run it in a terminal, or pass --yes"
            )
        print(f"This deletes {what}.", file=sys.stderr)
        answer = input("Type the study's name to confirm: ")
        if answer != plan.study:
            print("npas delete: nothing deleted", file=sys.stderr)
            return 1
    removed = delete_study(plan, storage=args.storage)
    print(f"deleted study {shown!r}: {plan.trials} trials, {removed} kept files")
    return 0
