"""The real Optuna Dashboard on a study store, as a child process we start and stop.

:class:`DashboardServer` checks the store and the address first (one-line errors), starts
Optuna Dashboard's WSGI app (``dashboards/_serve.py``: read-only unless
``allow_writes``) with its settings in a private config file (a password in the
storage URL never shows in ``ps``), waits until its HTTP API answers, and stops it with
SIGTERM (SIGKILL after a grace period). The child runs in its own session so that Ctrl-C
in a terminal reaches only us; we forward the stop. On Linux the child also gets SIGTERM
if we die without stopping it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from allocator._errors import ConfigError, StorageError
from dashboards._store import check_store, mask_url, open_optuna_storage

__all__ = ["DashboardServer", "default_artifacts"]

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


class DashboardServer:
    """Optuna Dashboard serving the study store at ``storage``, on ``host:port``.

    ``storage``: a SQLAlchemy URL (``None``: ``$NPAS_STORAGE``, else
    ``sqlite:///npas.db``); the store must exist. ``artifacts``: the directory of kept
    weights (``None``: the one the studies recorded, if it exists). :meth:`start` raises
    :class:`~allocator.StorageError` for a store it cannot read and
    :class:`~allocator.ConfigError` for a port in use or an address it cannot bind.

    Example:
        >>> from dashboards import DashboardServer
        >>> with DashboardServer("sqlite:///npas.db", port=8080) as server:  # doctest: +SKIP
        ...     print(server.url)  # open it in a browser
        ...     server.wait()      # until Ctrl-C
        http://127.0.0.1:8080/dashboard
    """

    def __init__(
        self,
        storage: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        artifacts: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 60.0,
        log_file: str | os.PathLike[str] | None = None,
        allow_writes: bool = False,
        allow_remote: bool = False,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"port must be an integer in 1..65535, got {port!r}")
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"host must be a host name or address, got {host!r}")
        if startup_timeout_s <= 0:
            raise ConfigError(f"startup_timeout_s must be > 0, got {startup_timeout_s!r}")
        host = host.strip()
        if not allow_remote and not is_loopback(host):
            raise ConfigError(
                f"host {host!r} would serve the study store to the network without any "
                "login; keep the default 127.0.0.1 (or localhost, ::1), or pass "
                "--allow-remote to accept that risk"
            )
        self.storage = storage
        self.allow_writes = bool(allow_writes)
        self.host = host
        self.port = port
        self.artifacts = Path(artifacts) if artifacts is not None else None
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_file = Path(log_file) if log_file is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    # ---------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """Where a browser on this machine finds the dashboard."""
        host = _client_host(self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/dashboard"

    @property
    def api_url(self) -> str:
        """The root of the dashboard's JSON API (``/api/studies``, ``/api/studies/ID``)."""
        return self.url.removesuffix("/dashboard") + "/api"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DashboardServer:
        """Check the store and the address, start the server, wait until it answers."""
        if self.running:
            return self
        url = check_store(self.storage)
        artifacts = self.artifacts if self.artifacts is not None else default_artifacts(url)
        if artifacts is not None and not artifacts.is_dir():
            raise ConfigError(f"artifacts directory {str(artifacts)!r} does not exist")
        check_port_free(self.host, self.port)
        self._tmp = tempfile.TemporaryDirectory(prefix="npas-dashboard-")
        config = Path(self._tmp.name) / "dashboard.json"
        _write_config(config, url, self.host, self.port, artifacts, self.allow_writes)
        log_path = self.log_file or Path(self._tmp.name) / "dashboard.log"
        self._log = open(log_path, "ab")  # noqa: SIM115  (closed in stop())
        command = [sys.executable, "-m", "dashboards._serve", str(config)]
        logger.info("starting %s on %s", " ".join(command[:1]), mask_url(url))
        self._proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            self._wait_until_ready(log_path, url)
        except BaseException:
            self.stop()
            raise
        logger.info("dashboard pid %d at %s (artifacts: %s)", self._proc.pid, self.url, artifacts)
        return self

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or ``timeout`` passes); its exit status or ``None``."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s) and remove its private files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---------------------------------------------------------------- helpers

    def _wait_until_ready(self, log_path: Path, url: str) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        probe = self.api_url + "/meta"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise _startup_error(code, _tail(log_path), self.host, self.port, url)
            try:
                with urllib.request.urlopen(probe, timeout=2) as reply:  # noqa: S310 (our own URL)
                    if reply.status == 200:
                        json.loads(reply.read())
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise StorageError(
                    f"optuna-dashboard did not answer at {self.url} within "
                    f"{self.startup_timeout_s:g} s: {_tail(log_path) or 'no output'}"
                )
            time.sleep(0.2)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
        (True, False, True)
    """
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """:class:`ConfigError` unless a server could listen on ``host:port`` now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"host {host!r} cannot be resolved: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(_in_use(host, port)) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def default_artifacts(url: str) -> Path | None:
    """The kept-weights directory the store's studies recorded, if one exists here."""
    storage = open_optuna_storage(url)
    try:
        recorded = {
            s.user_attrs.get("npas_settings", {}).get("artifacts")
            for s in storage.get_all_studies()
            if isinstance(s.user_attrs.get("npas_settings"), dict)
        }
    except Exception:  # an unreadable record is no reason not to serve the studies
        recorded = set()
    finally:
        storage.engine.dispose()
    found = sorted(Path(p) for p in recorded if p and Path(p).is_dir())
    if len(found) > 1:
        logger.warning(
            "studies recorded %d artifacts directories; serving %s (give --artifacts for another)",
            len(found), found[0],
        )
    return found[0] if found else None


def _write_config(path: Path, url: str, host: str, port: int, artifacts: Path | None,
                  allow_writes: bool) -> None:
    """The server process's settings; readable by us only (the URL may hold a password)."""
    settings = {
        "storage": url, "host": host, "port": port, "allow_writes": allow_writes,
        "artifacts": str(artifacts.resolve()) if artifacts is not None else None,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(settings, f)


def _client_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _in_use(host: str, port: int) -> str:
    return f"port {port} on {host} is in use; choose another with --port"


def _tail(path: Path, limit: int = 300) -> str:
    """The last meaningful line of the server's output (its error, usually)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


def _startup_error(code: int, tail: str, host: str, port: int, url: str) -> Exception:
    if "Address already in use" in tail or f"Errno {errno.EADDRINUSE}" in tail:
        return ConfigError(_in_use(host, port))
    password = make_url(url).password
    if password:
        tail = tail.replace(str(password), "***")
    return StorageError(
        f"optuna-dashboard exited with status {code} while starting on {mask_url(url)!r}: "
        f"{tail or 'no output'}"
    )


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    """Linux: the child gets SIGTERM when the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass

