"""The ``npas`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module
sets ``func`` on its parser. Errors a user can cause (:class:`allocator.NPASError`) are
printed as one line on stderr and exit with status 2; Ctrl-C exits with 130 and SIGTERM
(where a command handles it with :func:`terminate`) with 143, the shell's 128 + signal.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from allocator._errors import NPASError

#: Signals that interrupted this process's command (set by :func:`terminate`).
_SIGNALLED: set[int] = set()


def terminate(signum: int, frame: object) -> None:
    """SIGTERM handler of a long command: unwind as Ctrl-C does, with a
    ``KeyboardInterrupt`` (the one exception Ray's blocking calls pass on, as a fresh
    ``KeyboardInterrupt``, where its own handler's ``SystemExit`` comes out as status
    1), remembering the signal so that ``npas`` exits with 143."""
    _SIGNALLED.add(signum)
    raise KeyboardInterrupt


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
    _SIGNALLED.clear()  # this command's signals only (main may run many times in a process)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NPASError as exc:
        from allocator.cli._text import printable

        print(f"npas: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if signal.SIGTERM in _SIGNALLED:
            print("npas: terminated", file=sys.stderr)
            return 143
        print("npas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
