"""The ``npas`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module
sets ``func`` on its parser. Errors a user can cause (:class:`allocator.NPASError`) are
printed as one line on stderr and exit with status 2; Ctrl-C exits with 130 and SIGTERM
(where a command handles it, :class:`Terminated`) with 143, the shell's 128 + signal.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from allocator._errors import NPASError


class Terminated(KeyboardInterrupt):
    """Raised by a command's SIGTERM handler: it unwinds as Ctrl-C does (a
    ``KeyboardInterrupt`` also comes through Ray's blocking calls unchanged), and
    ``npas`` exits with 143."""


# Sub-command modules, in the order `npas --help` lists them.
_COMMANDS: tuple[str, ...] = (
    "allocator.cli._shapeshift",
    "allocator.cli._train",
    "allocator.cli._search",
    "allocator.cli._query",
    "allocator.cli._demo",
    "allocator.cli._dashboard",
    "allocator.cli._report",
    "allocator.cli._delete",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (argparse prints usage + line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"npas: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npas", description="Neural Parameter Allocation Search.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NPASError as exc:
        from allocator.cli._text import printable

        print(f"npas: error: {printable(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("npas: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("npas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
