"""The dashboard's server process: Optuna Dashboard's WSGI app, read-only unless asked.

``python -m dashboards._serve CONFIG`` reads its settings from a private JSON file (the
storage URL may hold a password; it never shows in ``ps``), builds Optuna Dashboard's
public WSGI app (``optuna_dashboard.wsgi``) on the store and serves it with wsgiref.
Unless the settings allow writes, :class:`ReadOnly` answers every request but ``GET``
and ``HEAD`` with ``403 Forbidden`` (no deleting or renaming studies, no notes, no
uploads), and the store is opened read-only (SQLite: ``mode=ro``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["READ_METHODS", "ReadOnly", "main"]

#: The HTTP methods a read-only dashboard answers.
READ_METHODS = frozenset({"GET", "HEAD"})

_REFUSED = json.dumps({
    "reason": "this dashboard is read-only; start it with `npas dashboard --allow-writes` to "
              "change studies, or delete one with `npas delete STUDY`",
}).encode()

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ReadOnly:
    """WSGI middleware: pass ``GET`` and ``HEAD`` through, refuse everything else (403).

    Example:
        >>> calls = []
        >>> guard = ReadOnly(lambda env, start: [b"ok"])
        >>> body = guard({"REQUEST_METHOD": "DELETE"}, lambda status, headers: calls.append(status))
        >>> calls, guard({"REQUEST_METHOD": "GET"}, None)
        (['403 Forbidden'], [b'ok'])
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() in READ_METHODS:
            return self.app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "application/json"),
                                         ("Content-Length", str(len(_REFUSED)))])
        return [_REFUSED]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def build_app(url: str, artifacts: str | None, allow_writes: bool) -> WSGIApp:
    """Optuna Dashboard's app on the store at ``url``, guarded unless ``allow_writes``."""
    from optuna_dashboard import wsgi

    from dashboards._store import open_optuna_storage

    storage = open_optuna_storage(url, read_only=not allow_writes)
    artifact_store = None
    if artifacts:
        from optuna.artifacts import FileSystemArtifactStore

        artifact_store = FileSystemArtifactStore(artifacts)
    app: WSGIApp = wsgi(storage, artifact_store)
    return app if allow_writes else ReadOnly(app)


def main(argv: list[str]) -> int:
    settings = json.loads(Path(argv[0]).read_text())
    app = build_app(settings["storage"], settings.get("artifacts"), settings["allow_writes"])
    httpd = make_server(settings["host"], settings["port"], app, server_class=_Server,
                        handler_class=_QuietHandler)
    print(f"listening on {settings['host']}:{settings['port']}", file=sys.stderr, flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":  # pragma: no cover (the server process)
    sys.exit(main(sys.argv[1:]))
