"""``npas dashboard``: Optuna Dashboard on the study store, until Ctrl-C.

Starts the real ``optuna-dashboard`` server on ``--storage`` (default ``$NPAS_STORAGE``,
else ``sqlite:///npas.db``), waits until it answers and prints its address. It listens
on 127.0.0.1; another ``--host`` needs ``--allow-remote`` (the dashboard has no login).
It is read-only (no deleting or renaming studies, no notes) unless ``--allow-writes``;
``npas delete STUDY`` deletes a study with its npas_results rows and kept files. Every study of the store is there: its
objectives by name, the Pareto front, each trial's config as parameters, its results
and allocation table as user attributes, and kept weights as artifacts.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from allocator.cli._query import storage_flag

    p = subparsers.add_parser(
        "dashboard",
        help="serve the study store in Optuna Dashboard (until Ctrl-C)",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    storage_flag(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "another address needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback: anyone who reaches it reads "
                        "every study, without a login")
    p.add_argument("--allow-writes", action="store_true",
                   help="let the dashboard change the store (delete or rename studies, "
                        "notes); default: read-only")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--artifacts", metavar="DIR",
                   help="directory of kept weights (default: the one the studies recorded)")
    p.set_defaults(func=_dashboard)


class _Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP: stop the dashboard (SIGINT even where a shell had
    ignored it for a background job)."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def _dashboard(args: argparse.Namespace) -> int:
    from dashboards import DashboardServer, mask_url, resolve_url
    from dashboards._server import is_loopback

    server = DashboardServer(args.storage, host=args.host, port=args.port,
                             artifacts=args.artifacts, allow_writes=args.allow_writes,
                             allow_remote=args.allow_remote)
    if not is_loopback(server.host):
        print(f"npas: warning: the dashboard on {server.host} serves every study of the store "
              "to anyone who can reach this machine, without a login", file=sys.stderr)
    if args.allow_writes:
        print("npas: warning: --allow-writes: anyone who reaches the dashboard can delete "
              "studies (their npas_results rows and kept files stay behind)", file=sys.stderr)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, _stop) for s in handled}
    try:
        server.start()
        print(f"Optuna Dashboard on {mask_url(resolve_url(args.storage))}: {server.url}", flush=True)
        print("Ctrl-C stops it", file=sys.stderr, flush=True)
        code = server.wait()
        if code is not None:
            print(f"npas: error: optuna-dashboard exited with status {code}", file=sys.stderr)
            return 2
    except (KeyboardInterrupt, _Stop):
        print("npas dashboard: stopped", file=sys.stderr)
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
