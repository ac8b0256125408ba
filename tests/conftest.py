"""Shared fixtures: a throw-away PostgreSQL database and a two-node Ray cluster.

Both are real: the database is created on the server at 127.0.0.1:5432 (trust auth) and
dropped afterwards; the cluster is two ``ray start`` nodes on this machine, on loopback,
with token authentication, stopped afterwards by the process ids it started (never a
machine-wide ``ray stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
PG_HOST, PG_PORT = "127.0.0.1", 5432


# --------------------------------------------------------------------------- PostgreSQL


def _pg_admin_url() -> str | None:
    """A URL that can create databases on the local server, or None if there is none."""
    import sqlalchemy as sa

    for user in ("postgres", "root"):
        url = f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/test"
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return url
        except Exception:
            continue
        finally:
            engine.dispose()
    return None


def service_missing(reason: str) -> None:
    """Skip a test that needs a service this machine lacks; where ``NPAS_NO_SKIP`` is set
    (``.ci/run`` sets it: CI has PostgreSQL, MariaDB and Chromium), fail it instead."""
    if os.environ.get("NPAS_NO_SKIP"):
        pytest.fail(f"{reason} (NPAS_NO_SKIP is set: this run must have it)")
    pytest.skip(reason)


MARIADB_ROOT = "mysql+pymysql://root@127.0.0.1:3306"


def mariadb_admin(**engine_kwargs: Any) -> Any:
    """An engine on the MariaDB server at 127.0.0.1:3306 as root (empty password, database
    ``test``); the test is skipped (or failed, see :func:`service_missing`) without one."""
    import sqlalchemy as sa

    admin = sa.create_engine(f"{MARIADB_ROOT}/test", connect_args={"connect_timeout": 3},
                             **engine_kwargs)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:
        admin.dispose()
        service_missing("no MariaDB/MySQL server at 127.0.0.1:3306")
    return admin


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; dropped when the test ends."""
    import sqlalchemy as sa

    admin = _pg_admin_url()
    if admin is None:
        service_missing(f"no PostgreSQL server at {PG_HOST}:{PG_PORT}")
    name = f"npas_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    user = sa.engine.make_url(admin).username
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


# --------------------------------------------------------------------------- Ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]
    temp_dir: Path

    def node_ids(self) -> list[str]:
        code = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False);"
            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']])); ray.shutdown()"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
            timeout=120, check=True,
        )
        return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _ray_env(token_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=str(REPO),
    )
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _node_ports() -> list[str]:
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


def _pids_under(marker: str) -> list[int]:
    """Processes whose command line names ``marker``, and all their descendants."""
    matched: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    matched.add(int(entry.name))
    return sorted(descendants(matched) - {os.getpid()})


def ray_processes(marker: str, title: str) -> list[int]:
    """Ray worker processes under ``marker`` whose process title holds ``title``
    (``TrialWorker.run``: a pool worker running a trial; ``ray::ImplicitFunc``: a Tune
    trial actor)."""
    out = []
    for pid in _pids_under(marker):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if title in cmdline:
            out.append(pid)
    return out


def kill_processes_under(marker: str, grace_s: float = 5.0) -> None:
    """SIGTERM every process of ours naming ``marker``, then SIGKILL what is left."""
    pids = _pids_under(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cluster_root(prefix: str, **extra_env: str) -> tuple[Path, dict[str, str]]:
    """A new temp dir for a test cluster's nodes (short: Ray's socket paths are limited)
    with its own auth token, and the environment every ``ray`` command of it needs."""
    root = Path(f"/tmp/{prefix}-{secrets.token_hex(4)}")
    root.mkdir()
    token_file = root / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    return root, {**_ray_env(token_file), **extra_env}


def two_node_commands(root: Path, *, block: bool = False) -> tuple[str, list[str], list[str]]:
    """The head's address and the ``ray start`` commands of a head (resource ``node_a``)
    and a second node (``node_b``, ``--block`` if asked): 1 CPU each, on loopback."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = [
        RAY, "start", "--head", f"--port={port}", f"--temp-dir={root}",
        "--include-dashboard=false", f"--dashboard-port={free_port()}",
        '--resources={"node_a": 1}', *common, *_node_ports(),
    ]
    worker = [
        RAY, "start", f"--address={address}", '--resources={"node_b": 1}',
        *(["--block"] if block else []), *common, *_node_ports(),
    ]
    return address, head, worker


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process under them."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


@contextlib.contextmanager
def two_node_cluster(prefix: str, *, own_dirs: bool = False) -> Iterator[RayCluster]:
    """Two Ray nodes on this machine (1 CPU each, resources node_a / node_b), token auth;
    with ``own_dirs`` each node is started from an empty directory of its own (so that no
    node holds the code of the directory a test runs in)."""
    root, env = cluster_root(prefix)
    address, head, worker = two_node_commands(root)
    try:
        for cmd, name in ((head, "head"), (worker, "second")):
            where = root / name if own_dirs else None
            if where is not None:
                where.mkdir()
            run = subprocess.run(cmd, env=env, cwd=where, capture_output=True, text=True,
                                 timeout=180)
            if run.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{run.stdout}\n{run.stderr}")
        cluster = RayCluster(address=address, env=env, temp_dir=root)
        deadline = time.monotonic() + 60
        while len(cluster.node_ids()) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second Ray node did not join within 60 s")
            time.sleep(1)
        yield cluster
    finally:
        kill_processes_under(str(root))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Two Ray nodes on this machine (1 CPU each, resources node_a / node_b), token auth."""
    with two_node_cluster("npas-ray") as cluster:
        yield cluster
