"""Ray: start a quiet local instance or join a cluster, check it can hold the trials.

Everything that can go wrong (an address nobody listens on, a token mismatch, too few
CPUs or GPUs for one trial) becomes a one-line :class:`ClusterError` before the study
is created. Ray's own logging is quiet unless asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from allocator._errors import ClusterError

__all__ = ["Cluster", "check_user_code", "code_runtime_env", "connect"]

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0
_DEFAULT_PORTS = {"ray": 10001, "": 6379}


@dataclass
class Cluster:
    """A Ray connection this search made (``owned``: shut it down at the end)."""

    address: str
    nodes: int
    cpus: float
    gpus: float
    max_node_cpus: float
    max_node_gpus: float
    owned: bool
    memory: float = 0.0  # bytes Ray may give tasks (ray.cluster_resources()["memory"])

    def shutdown(self) -> None:
        if self.owned:
            import ray

            ray.shutdown()

    def check_fits(self, concurrency: int, cpus_per_trial: float, gpus_per_trial: float) -> None:
        """:class:`ClusterError` unless one trial fits on a node and K trials fit at once."""
        if cpus_per_trial > self.max_node_cpus:
            raise ClusterError(
                f"--cpus-per-trial {cpus_per_trial:g} does not fit on any node; "
                f"the largest has {self.max_node_cpus:g} CPUs"
            )
        if gpus_per_trial > self.max_node_gpus:
            raise ClusterError(
                f"--gpus-per-trial {gpus_per_trial:g} does not fit on any node; "
                f"the largest has {self.max_node_gpus:g} GPUs"
            )
        need_mem = concurrency * WORKER_MEMORY_BYTES
        if self.memory and need_mem > self.memory:
            raise ClusterError(
                f"--concurrency {concurrency} needs about {need_mem / 2**30:.1f} GiB for its "
                f"workers; the cluster at {self.address} has {self.memory / 2**30:.1f} GiB"
            )
        need_cpu = concurrency * cpus_per_trial
        need_gpu = concurrency * gpus_per_trial
        if need_cpu > self.cpus + 1e-9 or need_gpu > self.gpus + 1e-9:
            raise ClusterError(
                f"--concurrency {concurrency} needs {need_cpu:g} CPUs and {need_gpu:g} GPUs; "
                f"the cluster at {self.address} has {self.cpus:g} CPUs and {self.gpus:g} GPUs"
            )



def _keep_sigterm_handler(handler: Any) -> None:
    """Put back a SIGTERM handler the caller installed before ``ray.init`` replaced it.

    Ray's driver handler raises ``SystemExit(15)``; landing inside a blocking Ray call
    (``ray.get``, ``ray.wait``), Ray's signal check turns that into ``SystemExit(1)``
    with no message (or the process aborts), so the exit status depended on where the
    signal fell. A ``KeyboardInterrupt`` raised there is passed on (as a fresh
    ``KeyboardInterrupt``), so the handler of npas's CLI (which raises one) is kept. Where the caller had none (a notebook, a script),
    Ray's stays."""
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def connect(
    address: str | None,
    *,
    concurrency: int = 1,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    verbose: bool = False,
    runtime_env: dict[str, Any] | None = None,
    user_modules: tuple[str, ...] = (),
) -> Cluster:
    """Join the Ray cluster at ``address``, or start a local instance when ``None``.

    ``runtime_env`` (see :func:`code_runtime_env`) ships the user's code to every
    worker; on a cluster, ``user_modules`` are then imported once on every node
    (:func:`check_user_code`), so that code missing there is one clear error.

    A local instance gets ``max(CPUs of this machine, concurrency x cpus_per_trial)``
    CPUs, so that ``--concurrency`` is what the user asked for. If Ray is already
    initialised in this process (a notebook, a test), that instance is used as is.

    Example:
        >>> cluster = connect(None, concurrency=1)  # doctest: +SKIP
        >>> cluster.shutdown()  # doctest: +SKIP
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # no C++ "*** SIGTERM received ***" stack dump on the terminal when a search stops
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    if address is not None and not address.strip():
        raise ClusterError(
            "--ray-address is empty; give HOST:PORT, ray://HOST:PORT or auto, or leave the "
            "flag out for a local Ray"
        )
    check_local_resources(address, concurrency, cpus_per_trial, gpus_per_trial)
    import ray

    owned = not ray.is_initialized()
    caller_sigterm = signal.getsignal(signal.SIGTERM)
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "configure_logging": True,
        "ignore_reinit_error": True,
    }
    if owned and address:
        _probe(address)
        try:
            ray.init(address=address, runtime_env=runtime_env, **quiet)
        except Exception as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {_why(exc)}") from None
    elif owned:
        cpus = max(os.cpu_count() or 1, math.ceil(concurrency * cpus_per_trial))
        try:
            ray.init(address="local", num_cpus=cpus, runtime_env=runtime_env, **quiet)  # never $RAY_ADDRESS by surprise
        except Exception as exc:
            raise ClusterError(f"cannot start a local Ray instance: {_why(exc)}") from None
    if owned:
        _keep_sigterm_handler(caller_sigterm)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
    except Exception as exc:
        if owned:
            ray.shutdown()
        raise ClusterError(f"cannot read the Ray cluster's resources: {_why(exc)}") from None
    cluster = Cluster(
        address=address or "local",
        nodes=len(nodes),
        cpus=float(total.get("CPU", 0.0)),
        gpus=float(total.get("GPU", 0.0)),
        max_node_cpus=max((float(n["Resources"].get("CPU", 0.0)) for n in nodes), default=0.0),
        max_node_gpus=max((float(n["Resources"].get("GPU", 0.0)) for n in nodes), default=0.0),
        owned=owned,
        memory=float(total.get("memory", 0.0)),
    )
    try:
        cluster.check_fits(concurrency, cpus_per_trial, gpus_per_trial)
        if address and user_modules:
            check_user_code(user_modules, shipped=bool(runtime_env))
    except ClusterError:
        cluster.shutdown()
        raise
    logger.info(
        "Ray: %s, %d node(s), %g CPUs, %g GPUs", cluster.address, cluster.nodes, cluster.cpus,
        cluster.gpus,
    )
    return cluster


def code_runtime_env(working_dir: str | None, py_modules: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Ray's runtime environment that ships the user's code (``None``: nothing to ship).

    ``working_dir`` is a directory whose modules every worker imports as the driver
    does here (it becomes the workers' current directory); ``py_modules`` are package
    directories or single modules added to the workers' path. Both are uploaded by Ray.

    Example:
        >>> code_runtime_env(None) is None
        True
    """
    env: dict[str, Any] = {}
    if working_dir:
        env["working_dir"] = os.path.abspath(working_dir)
    if py_modules:
        env["py_modules"] = [os.path.abspath(p) for p in py_modules]
    return env or None


def check_user_code(modules: tuple[str, ...], *, shipped: bool) -> None:
    """Import ``modules`` once on every node of the cluster, in the job's runtime
    environment; :class:`ClusterError` naming the flags that ship the code if one fails."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_import_each)
    refs = {
        str(node.get("NodeManagerAddress")): probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(list(modules))
        for node in ray.nodes() if node.get("Alive")
    }
    # every probe answered before any is reported: a probe still running when the driver
    # disconnects dies with it, and Ray then logs its lost result beside our one line
    outcomes: dict[str, tuple[str, str] | Exception | None] = {}
    for where, ref in refs.items():
        try:
            outcomes[where] = ray.get(ref, timeout=300)
        except Exception as exc:
            outcomes[where] = exc
    for where, failure in outcomes.items():
        if isinstance(failure, Exception):
            raise ClusterError(
                f"your code cannot be set up on the Ray cluster node {where}: {_why(failure)}"
            )
        if failure is None:
            continue
        name, why = failure
        hint = ("the shipped --working-dir/--py-modules do not hold it" if shipped else
                "ship it with --working-dir DIR (the directory that holds it) or --py-modules PATH")
        raise ClusterError(
            f"module {name!r} imports here but not on the Ray cluster node {where} ({why}); {hint}"
        )


def _import_each(modules: list[str]) -> tuple[str, str] | None:
    """(module, why) of the first module that does not import here, else ``None``."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            return name, f"{type(exc).__name__}: {exc}"
    return None


#: Memory one trial worker takes before it trains (Python, PyTorch, Ray's worker).
WORKER_MEMORY_BYTES = 400 * 2**20


def check_local_resources(
    address: str | None, concurrency: int, cpus_per_trial: float, gpus_per_trial: float = 0.0
) -> None:
    """Before Ray starts: a local Ray gets no more CPUs than this machine has, and the
    workers of ``--concurrency`` must fit in its memory (:class:`ClusterError`, with the
    numbers). A cluster's resources are checked once joined (:meth:`Cluster.check_fits`)."""
    from allocator.search._checks import available_memory

    if address:
        return
    cores = os.cpu_count() or 1
    if cpus_per_trial > cores:
        raise ClusterError(
            f"--cpus-per-trial {cpus_per_trial:g} is more than this machine's {cores} CPUs; "
            f"give at most {cores}, or --ray-address of a cluster with larger nodes"
        )
    if gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count()
        if gpus_per_trial > gpus:
            raise ClusterError(
                f"--gpus-per-trial {gpus_per_trial:g} is more than this machine's {gpus} GPUs; "
                f"give at most {gpus}, or --ray-address of a cluster with GPUs"
            )
    need, have = concurrency * WORKER_MEMORY_BYTES, available_memory()
    if need > have:
        raise ClusterError(
            f"--concurrency {concurrency} needs about {need / 2**30:.1f} GiB for its workers "
            f"({WORKER_MEMORY_BYTES // 2**20} MiB each); this machine has "
            f"{have / 2**30:.1f} GiB available: give at most {max(1, have // WORKER_MEMORY_BYTES)}"
        )


def _probe(address: str) -> None:
    """Fail fast (seconds, not minutes) when nothing listens at ``address``."""
    if address in ("auto", "local"):
        if address == "local":
            raise ClusterError("--ray-address local is the default; leave the flag out")
        try:
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address("auto")
        except Exception as exc:
            raise ClusterError(f"--ray-address auto finds no running cluster: {_why(exc)}") from None
        if not resolved:
            raise ClusterError("--ray-address auto finds no running cluster on this machine")
        address = resolved
    scheme, _, rest = address.rpartition("://")
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = rest, str(_DEFAULT_PORTS.get(scheme, 6379))
    try:
        port = int(port_text)
    except ValueError:
        raise ClusterError(
            f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise ClusterError(f"--ray-address {address!r}: port {port} is not in 1..65535")
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, port), _PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster at {address}: {exc.strerror or exc} "
            "(start one with `ray start --head`, or leave out --ray-address for a local one)"
        ) from None
    if scheme != "ray":
        _probe_grpc(address, host, port)
        _probe_gcs(address, f"{host}:{port}")


def _probe_grpc(address: str, host: str, port: int) -> None:
    """A Ray head's port speaks gRPC (HTTP/2): it answers the HTTP/2 preface with a
    SETTINGS frame at once. Anything else there (a database, a web server) is refused in
    a second, not after Ray's 50 s of retries."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # TLS first: the plain preface is no test
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    try:
        with socket.create_connection((host, port), _PROBE_TIMEOUT_S) as conn:
            conn.sendall(preface)
            reply = b""
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError:
        reply = b""
    if len(reply) < 9 or reply[3] != 0x04:  # frame type 4: SETTINGS
        raise ClusterError(
            f"the service at {address} is not a Ray head node (it does not answer as gRPC); "
            "give the address `ray start --head` printed (default port 6379)"
        )


def _probe_gcs(address: str, host_port: str) -> None:
    """One GCS handshake (a fraction of a second), instead of ray.init's 20 s of retries:
    a token mismatch or a port that is not a Ray head fails here with a clear reason."""
    try:
        gcs_client = importlib.import_module("ray._raylet").GcsClient
    except (ImportError, AttributeError):  # a Ray without it: ray.init says why, slowly
        return
    try:
        with _stderr_silenced():  # the C++ client logs each failed attempt on fd 2
            gcs_client(address=host_port)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "auth" in text.lower() or "token" in text.lower():
            raise ClusterError(
                f"the Ray cluster at {address} rejects this driver's authentication: set "
                "RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token, "
                "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), as for every `ray start`"
            ) from None
        raise ClusterError(
            f"cannot join the Ray cluster at {address}: {_why(exc)} (is it a Ray head node "
            "of the same Ray version?)"
        ) from None


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _why(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "auth" in str(exc).lower() or "token" in str(exc).lower():
        text += " (the driver and every `ray start` must agree on RAY_AUTH_MODE and the token)"
    return text
