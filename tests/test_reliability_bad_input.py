"""Bad input, over the command line and the Python API, against a real study store.

A tiny real search (SQLite, 2 trials, weights kept) makes the store every case runs
against; a second one on PostgreSQL, with a password in its URL, is used by the same
cases and by the security checks. Each bad input must give:

- on the command line: exit status 2, exactly one stderr line ``npas: error: ...``
  naming the problem and what is allowed, no traceback, no output file;
- in Python: the matching :class:`allocator.NPASError` subclass and message;
- in both: the study store as it was (every table's rows, compared before and after, and
  the kept-weights files by hash).

A wrong password is tried against MariaDB (a user with a password is created for the
test and dropped afterwards): the PostgreSQL server here uses trust authentication and
accepts any password, so it cannot reject one.

Security: checkpoints that would run code when unpickled are refused (and the code does
not run); the password of the storage URL appears nowhere in the output, the logs, the
database or Ray's log files of a real search; the dashboard listens on 127.0.0.1 by
default; no ``torch.load`` without ``weights_only=True`` and no ``pickle.load`` in the
code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import pickle
import random
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import torch

import allocator
from allocator.cli import main
from tests.conftest import MARIADB_ROOT, REPO, _pg_admin_url, mariadb_admin, service_missing
from tests.models import mlp

optuna.logging.set_verbosity(optuna.logging.WARNING)

NPAS = str(Path(sys.executable).with_name("npas"))
PASSWORD = "s3cr3t-pw"
TINY = ["--epochs", "1", "--data-size", "300", "--max-steps-per-epoch", "2", "--batch-size", "32"]
MARIADB = MARIADB_ROOT


# --------------------------------------------------------------------------- the stores


@dataclass
class Store:
    url: str
    artifacts: Path

    def dump(self) -> dict[str, Any]:
        """Every table's columns and rows, and the kept-weights files with their hashes."""
        return dump(self.url, self.artifacts)


def dump(url: str, artifacts: Path | None = None) -> dict[str, Any]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    out: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            for name in sorted(sa.inspect(conn).get_table_names()):
                columns = [c["name"] for c in sa.inspect(conn).get_columns(name)]
                rows = conn.execute(sa.select(sa.text("*")).select_from(sa.table(name))).all()
                out[name] = (columns, sorted(repr(tuple(r)) for r in rows))
    finally:
        engine.dispose()
    if artifacts is not None:
        out["<artifacts>"] = {
            str(p.relative_to(artifacts)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(artifacts.rglob("*")) if p.is_file()
        }
    return out


def _search(url: str, artifacts: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    argv = [NPAS, "-vv", "search", "--model", "mlp", "--data", "mnist1d", "--study", "s",
            "--trials", "2", *TINY, "--keep-models", "all", "--artifacts", str(artifacts),
            "--storage", url]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@dataclass
class Searched:
    sqlite: Store
    pg: Store | None
    pg_admin: str | None
    pg_output: str  # stdout + stderr of the PostgreSQL search (progress, -vv logs)
    ray_dir: Path  # Ray's session files of the PostgreSQL search


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searched]:
    """Two real searches run at once: SQLite, and PostgreSQL with a password in its URL."""
    root = tmp_path_factory.mktemp("bad-input")
    ray_dir = Path(f"/tmp/npas-bi-{secrets.token_hex(4)}")  # short: Ray's socket paths
    ray_dir.mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("NPAS_STORAGE", None)
    sqlite = Store(f"sqlite:///{root / 'npas.db'}", root / "npas-artifacts")
    runs = [_search(sqlite.url, sqlite.artifacts, root, env)]
    admin = _pg_admin_url()
    pg: Store | None = None
    name = f"npas_test_{uuid.uuid4().hex[:12]}"
    if admin is not None:
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        user = sa.engine.make_url(admin).username
        pg = Store(f"postgresql+psycopg://{user}:{PASSWORD}@127.0.0.1:5432/{name}",
                   root / "pg-artifacts")
        runs.append(_search(pg.url, pg.artifacts, root, {**env, "RAY_TMPDIR": str(ray_dir)}))
    try:
        outputs = [run.communicate(timeout=300) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out + err
        yield Searched(sqlite, pg, admin, "".join(outputs[-1]) if pg else "", ray_dir)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
        shutil.rmtree(ray_dir, ignore_errors=True)
        if admin is not None:
            engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, searched: Searched) -> Store:
    return _store(searched, request.param)


# --------------------------------------------------------------------------- running npas


#: Warnings Python does not show unless asked (``-W``, ``PYTHONWARNINGS``).
_HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                      ResourceWarning)


def npas(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
         argv: list[str]) -> tuple[int, str, list[str]]:
    """Run ``npas`` in this process: exit status, stdout, and the lines a terminal would
    show on stderr (stderr itself, plus the warnings and log records of level WARNING and
    above that the command line would print there)."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    lines += [f"{w.category.__name__}: {w.message}" for w in caught
              if not issubclass(w.category, _HIDDEN_BY_DEFAULT)]
    lines += [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.WARNING]
    return code, out, lines


def assert_one_error_line(code: int, out: str, lines: list[str], fragments: tuple[str, ...]) -> None:
    text = "\n".join(lines)
    assert "Traceback" not in text + out, text
    assert code == 2, f"exit {code}: {text}"
    assert len(lines) == 1, text
    assert lines[0].startswith("npas: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "\n" not in lines[0]


# --------------------------------------------------------------------------- space files

SPACE_FILES = {
    "typo.yaml": "dims:\n  bugdet: {low: 0.1, high: 0.5}\n",
    "typo-key.toml": "[dimz]\nbudget = { low = 0.1, high = 0.5 }\n",
    "wrong-type.yaml": "dims:\n  budget: {low: small, high: 0.5}\n",
    "wrong-kind.json": '{"dims": {"mapping": {"type": "int", "low": 1, "high": 3}}}\n',
    "empty-range.yaml": "dims:\n  budget: {low: 0.5, high: 0.1}\n",
    "empty-choice.yaml": "dims:\n  mapping: []\n",
    "not-yaml.yaml": "dims: [unclosed\n",
    "budget-0.yaml": "fixed: {budget: 0}\ndims:\n  mapping: [single, type]\n",
    "groups-0.yaml": "dims:\n  groups: {low: 0, high: 3}\n",
    "mapping-only.yaml": "dims:\n  mapping: [single, roundrobin]\n",
    "infeasible.yaml": "fixed: {method: ssn, upsample: mask}\n"
                       "dims:\n  budget: {low: 0.0001, high: 0.001}\n  mapping: [single, roundrobin]\n",
}


@pytest.fixture(scope="module")
def spaces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spaces")
    for name, text in SPACE_FILES.items():
        (folder / name).write_text(text)
    return folder


# --------------------------------------------------------------------------- the CLI table

SEARCH = ["search", "--model", "mlp", "--data", "mnist1d", "--study", "new", "--storage", "{db}"]
TRAIN = ["train", "--model", "mlp", "--data", "mnist1d", "--data-size", "100", "--epochs", "1"]
SHAPESHIFT = ["shapeshift", "mlp"]
POSITIVE = ("budget must be a positive number", "an int count or a float fraction")
NO_GHOST = ("no study 'ghost'", "studies there: s")
BACKENDS = "use sqlite, postgresql or mysql"
MISSING_DB = "sqlite:////no/such/dir/npas.db"


def _space(name: str) -> list[str]:
    return ["--space", "{spaces}/" + name]


def _readers(url: str) -> list[tuple[str, list[str]]]:
    """Every command that reads a store, pointed at ``url``."""
    return [
        ("search", [*SEARCH[:-1], url]),
        ("studies", ["studies", "--storage", url]),
        ("trials", ["trials", "s", "--storage", url]),
        ("pareto", ["pareto", "s", "--storage", url]),
        ("export", ["export", "s", "0", "--out", "{out}/m.pt", "--storage", url]),
        ("report", ["report", "s", "--out", "{out}/report", "--storage", url]),
        ("dashboard", ["dashboard", "--port", "8999", "--storage", url]),
    ]


CLI_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # budgets
    *[(f"train-budget-{b}", [*TRAIN, "--budget", b], (*POSITIVE, f"got '{b}'"))
      for b in ("0", "-1", "nan", "abc")],
    *[(f"shapeshift-budget-{b}", [*SHAPESHIFT, "--budget", b], (*POSITIVE, f"got '{b}'"))
      for b in ("0", "-1", "nan", "abc")],
    *[(f"search-budget-{b}", [*SEARCH, *_space("mapping-only.yaml"), "--set", f"budget={b}"],
       POSITIVE) for b in ("0", "-1", "nan", "abc")],
    ("train-budget-below-minimum", [*TRAIN, "--budget", "10"],
     ("budget 10 is below the minimum 779", "raise the budget")),
    ("shapeshift-budget-below-minimum", [*SHAPESHIFT, "--budget", "10"],
     ("budget 10 is below the minimum", "raise the budget")),
    ("search-budget-searched-by-the-space", [*SEARCH, "--set", "budget=0"],
     ("trial option 'budget' is searched by space 'default'", "drop --set budget")),
    ("search-method-fixed-by-the-space", [*SEARCH, "--set", "method=full"],
     ("trial option 'method' is fixed to 'ssn' by space 'default'",)),
    ("search-space-fixes-budget-0", [*SEARCH, *_space("budget-0.yaml")],
     ("fixed.budget must be a number > 0, got 0",)),
    # unknown names
    ("train-unknown-model", [*TRAIN, "--model", "resnet9000x"],
     ("unknown model spec 'resnet9000x'", "allowed forms: mlp")),
    ("shapeshift-unknown-model", ["shapeshift", "vgg-16", "--budget", "0.5"],
     ("unknown model spec 'vgg-16'", "allowed forms")),
    ("search-unknown-model", [*SEARCH, "--model", "vgg-16"],
     ("unknown model spec 'vgg-16'", "allowed forms")),
    ("train-unknown-dataset", [*TRAIN, "--data", "imagenet"],
     ("data must be one of cifar10", "or MODULE:ATTR (your loader); got 'imagenet'")),
    ("search-unknown-dataset", [*SEARCH, "--data", "imagenet"],
     ("data must be one of", "mnist1d", "got 'imagenet'")),
    ("train-unknown-downsample", [*TRAIN, "--downsample", "sum"],
     ("downsample must be one of wavg, emb, avg, slice; got 'sum'",)),
    ("train-unknown-upsample", [*TRAIN, "--upsample", "tile"],
     ("upsample must be one of repeat, inter, hash, mask; got 'tile'",)),
    ("shapeshift-unknown-downsample", [*SHAPESHIFT, "--budget", "0.5", "--downsample", "sum"],
     ("unknown downsample generator 'sum'", "wavg, emb, avg, slice")),
    ("shapeshift-unknown-upsample", [*SHAPESHIFT, "--budget", "0.5", "--upsample", "tile"],
     ("unknown upsample generator 'tile'", "repeat, inter, hash, mask")),
    ("search-unknown-generator", [*SEARCH, *_space("mapping-only.yaml"), "--set", "upsample=tile"],
     ("upsample must be one of repeat, inter, hash, mask; got 'tile'",)),
    ("train-unknown-mapping", [*TRAIN, "--mapping", "hash"],
     ("mapping must be one of single, type, roundrobin", "got 'hash'")),
    ("shapeshift-unknown-mapping", [*SHAPESHIFT, "--budget", "0.5", "--mapping", "hash"],
     ("unknown mapping 'hash'", "single, type, roundrobin")),
    ("train-unknown-method", [*TRAIN, "--method", "prune"],
     ("method must be one of full, ssn, reduced_width, hashed; got 'prune'",)),
    ("search-unknown-early-stop", [*SEARCH, "--early-stop", "hyperband"],
     ("argument --early-stop: invalid choice: 'hyperband'", "pareto", "asha")),
    ("search-early-stop-without-a-rung", [*SEARCH, "--early-stop", "pareto", "--epochs", "1"],
     ("early stopping needs more epochs than its first rung (1)", "--epochs 2")),
    ("search-budget-range-infeasible", [*SEARCH, *_space("infeasible.yaml")],
     ("space 'infeasible'", "budget at most 0.001 is infeasible for mapping=single",
      "raise budget.high")),
    ("search-unknown-engine", [*SEARCH, "--engine", "spark"],
     ("argument --engine: invalid choice: 'spark'", "pool", "tune")),
    ("search-log-mlflow-not-installed", [*SEARCH, "--engine", "tune", "--log", "mlflow"],
     ("--log mlflow needs the mlflow package, which is not installed", "pip install mlflow")),
    ("search-log-on-the-pool", [*SEARCH, "--log", "tensorboard"],
     ("--log tensorboard is a Ray Tune logger", "--engine tune")),
    ("search-unknown-sampler", [*SEARCH, "--sampler", "cmaes"],
     ("argument --sampler: invalid choice: 'cmaes'", "tpe", "nsga2")),
    ("search-unknown-space", [*SEARCH, "--space", "huge"],
     ("unknown space 'huge'", "default, lowbudget, highbudget, baselines")),
    # groups 0
    ("train-groups-0", [*TRAIN, "--mapping", "roundrobin", "--groups", "0"],
     ("groups must be >= 1, got 0",)),
    ("shapeshift-groups-0", [*SHAPESHIFT, "--budget", "0.5", "--mapping", "roundrobin",
                             "--groups", "0"],
     ("groups must be between 1 and the model's 4 shareable layers, got 0",)),
    ("search-groups-0", [*SEARCH, *_space("mapping-only.yaml"), "--set", "groups=0"],
     ("groups must be >= 1, got 0",)),
    ("search-space-groups-0", [*SEARCH, *_space("groups-0.yaml")],
     ("groups-0.yaml", "groups.low must be an integer >= 1, got 0")),
    # search-space files
    ("space-typo-in-a-dimension", [*SEARCH, *_space("typo.yaml")],
     ("typo.yaml", "unknown dimension 'bugdet'", "searchable fields: method, budget")),
    ("space-typo-in-a-key", [*SEARCH, *_space("typo-key.toml")],
     ("typo-key.toml", "unknown key 'dimz'", "allowed: description, dims, fixed, hp, name")),
    ("space-wrong-type", [*SEARCH, *_space("wrong-type.yaml")],
     ("wrong-type.yaml", "low must be a number, got 'small'")),
    ("space-wrong-kind", [*SEARCH, *_space("wrong-kind.json")],
     ("wrong-kind.json", "mapping is one of single", "give it type 'choice'")),
    ("space-empty-range", [*SEARCH, *_space("empty-range.yaml")],
     ("empty-range.yaml", "low must be <= high, got 0.5 > 0.1")),
    ("space-empty-choice", [*SEARCH, *_space("empty-choice.yaml")],
     ("empty-choice.yaml", "values must not be empty")),
    ("space-not-yaml", [*SEARCH, *_space("not-yaml.yaml")],
     ("not-yaml.yaml", "is not valid yaml")),
    ("space-file-missing", [*SEARCH, *_space("nowhere.yaml")],
     ("nowhere.yaml", "does not exist")),
    # storage: an unknown scheme, a missing directory
    *[(f"{cmd}-unknown-scheme", argv, ("storage 'oracle+cx://u@h/db'", BACKENDS))
      for cmd, argv in _readers("oracle+cx://u@h/db")],
    ("search-missing-directory", [*SEARCH[:-1], MISSING_DB],
     ("directory /no/such/dir does not exist",)),
    *[(f"{cmd}-missing-directory", argv, ("/no/such/dir/npas.db does not exist",
                                          "run `npas search` first or give --storage"))
      for cmd, argv in _readers(MISSING_DB)[1:]],
    # Ray
    ("search-unreachable-ray", [*SEARCH, "--ray-address", "127.0.0.1:1"],
     ("no Ray cluster at 127.0.0.1:1",)),
    ("search-malformed-ray-address", [*SEARCH, "--ray-address", "ray-head:port"],
     ("--ray-address must be HOST:PORT",)),
    # studies and trials that do not exist
    ("trials-missing-study", ["trials", "ghost", "--storage", "{db}"], NO_GHOST),
    ("pareto-missing-study", ["pareto", "ghost", "--storage", "{db}"], NO_GHOST),
    ("export-missing-study", ["export", "ghost", "0", "--out", "{out}/m.pt", "--storage", "{db}"],
     NO_GHOST),
    ("report-missing-study", ["report", "ghost", "--out", "{out}/r", "--storage", "{db}"], NO_GHOST),
    ("resume-missing-study", ["search", "--study", "ghost", "--resume", "--storage", "{db}"],
     NO_GHOST),
    ("search-existing-study", [*SEARCH[:5], "--study", "s", "--storage", "{db}"],
     ("study 's' already exists", "pass --resume")),
    ("export-missing-trial", ["export", "s", "99", "--out", "{out}/m.pt", "--storage", "{db}"],
     ("study 's' has no trial 99; it has 0..1",)),
    ("report-missing-trial", ["report", "s", "--trial", "99", "--out", "{out}/r",
                              "--storage", "{db}"], ("study 's' has no trial 99",)),
    # paths and ports
    ("export-out-in-a-missing-directory",
     ["export", "s", "0", "--out", "/no/such/dir/m.pt", "--storage", "{db}"],
     ("--out '/no/such/dir/m.pt': directory '/no/such/dir' does not exist",)),
    ("export-missing-artifacts-directory",
     ["export", "s", "0", "--out", "{out}/m.pt", "--artifacts", "/no/such/dir", "--storage", "{db}"],
     ("artifacts directory '/no/such/dir' does not exist", "give --artifacts DIR")),
    ("train-export-to-a-missing-directory", [*TRAIN, "--export", "/no/such/dir/m.pt"],
     ("--export '/no/such/dir/m.pt': directory '/no/such/dir' does not exist",)),
    ("pareto-plot-unknown-suffix", ["pareto", "s", "--plot", "{out}/p.txt", "--storage", "{db}"],
     ("plot path must end in one of .html, .png, .svg, .pdf",)),
    ("dashboard-port-0", ["dashboard", "--port", "0", "--storage", "{db}"],
     ("port must be an integer in 1..65535, got 0",)),
]


def _fill(argv: list[str], **values: str) -> list[str]:
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def _cli_params() -> list[Any]:
    """Each case on the SQLite store, and those that name the store on PostgreSQL too."""
    return [
        pytest.param(backend, argv, fragments, id=f"{backend}-{name}")
        for name, argv, fragments in CLI_CASES
        for backend in (("sqlite", "postgresql") if "{db}" in argv else ("sqlite",))
    ]


def _store(searched: Searched, backend: str) -> Store:
    if backend == "sqlite":
        return searched.sqlite
    if searched.pg is None:
        service_missing("no PostgreSQL server at 127.0.0.1:5432")
    return searched.pg


@pytest.mark.slow  # needs the real searches (about 15 s, once per module)
@pytest.mark.parametrize(("backend", "argv", "fragments"), _cli_params())
def test_bad_cli_input_is_one_line_exit_2_and_leaves_the_store_as_it_was(
    searched, spaces, tmp_path, capsys, caplog, backend, argv, fragments
) -> None:
    store = _store(searched, backend)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = _fill(argv, db=store.url, spaces=str(spaces), out=str(out_dir))
    before = store.dump()
    code, out, lines = npas(capsys, caplog, argv)
    assert_one_error_line(code, out, lines, fragments)
    assert PASSWORD not in out + "\n".join(lines)
    assert store.dump() == before
    assert list(out_dir.iterdir()) == []
    assert not Path("/no/such/dir").exists()


def test_the_table_covers_every_command_and_kind_of_input() -> None:
    commands = {argv[0] for _, argv, _ in CLI_CASES}
    assert commands == {"search", "train", "shapeshift", "studies", "trials", "pareto",
                        "export", "report", "dashboard"}
    assert len({i for i, _, _ in CLI_CASES}) == len(CLI_CASES)


# --------------------------------------------------------------------------- wrong password


@pytest.fixture(scope="module")
def mariadb_user() -> Iterator[tuple[str, str]]:
    """A MariaDB database and a user with a password: (URL with the right password, the
    same URL with a wrong one)."""
    admin = mariadb_admin(isolation_level="AUTOCOMMIT")
    tag = uuid.uuid4().hex[:10]
    user, db, password = f"npas_bi_{tag}", f"npas_bi_{tag}", secrets.token_hex(8)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        conn.execute(sa.text(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'"))
    try:
        yield (f"mysql+pymysql://{user}:{password}@127.0.0.1:3306/{db}",
               f"mysql+pymysql://{user}:wrong-{PASSWORD}@127.0.0.1:3306/{db}")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))
        admin.dispose()


@pytest.mark.parametrize("command", [c for c, _ in _readers("x")])
def test_a_wrong_password_is_one_line_without_the_password(
    mariadb_user, tmp_path, capsys, caplog, command
) -> None:
    right, wrong = mariadb_user
    (out_dir := tmp_path / "out").mkdir()
    argv = _fill(dict(_readers(wrong))[command], out=str(out_dir))
    before = dump(right)
    code, out, lines = npas(capsys, caplog, argv)
    assert_one_error_line(code, out, lines, ("Access denied for user", "(using password: YES)",
                                             "check the user name and password in the URL"))
    assert PASSWORD not in out + "\n".join(lines) and ":***@" in lines[0]
    assert dump(right) == before
    assert list(out_dir.iterdir()) == []


def test_the_right_password_is_accepted(mariadb_user, capsys, caplog) -> None:
    right, _ = mariadb_user
    code, _, lines = npas(capsys, caplog, ["studies", "--storage", right])
    assert code == 0, lines


# --------------------------------------------------------------------------- checkpoints


class RunsCode:
    """Unpickling this runs code: it writes ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _ssn_bytes(model: torch.nn.Module, budget: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    allocator.save(allocator.shapeshift(model, budget), buffer)
    return buffer.getvalue()


def bad_checkpoints(real: bytes, marker: Path) -> dict[str, tuple[bytes | None, tuple[str, ...]]]:
    """Name -> (the file's bytes or None for no file, message fragments)."""
    unreadable = "not a checkpoint saved by allocator.save: corrupt, truncated or not a PyTorch file"
    return {
        "random-bytes": (random.Random(0).randbytes(4096), ("cannot read checkpoint",)),
        "truncated": (real[: len(real) // 2], ("cannot read checkpoint", "corrupt or truncated")),
        "empty": (b"", ("cannot read checkpoint", unreadable)),
        "plain-state-dict-of-another-model": (
            _torch_bytes(torch.nn.Linear(3, 2).state_dict()),
            ("is not an npas SSN checkpoint", "('weight', 'bias')", "allocator.save")),
        "ssn-of-another-model": (_ssn_bytes(torch.nn.Sequential(torch.nn.Linear(5, 7))),
                                 ("does not fit this model",)),
        "torch-save-of-code": (
            _torch_bytes({"format": "npas-ssn", "version": 1, "state_dict": RunsCode(marker)}),
            ("refused as unsafe", "it holds a Python object (exec)", "weights_only=True",
             "never unpickles arbitrary objects")),
        "pickle-of-code": (pickle.dumps(RunsCode(marker)),
                           ("cannot read checkpoint", "refused as unsafe", "could run code")),
        "missing": (None, ()),
    }


CHECKPOINTS = list(bad_checkpoints(b"x", Path("x")))


@pytest.fixture(scope="module")
def kept(searched: Searched) -> tuple[str, bytes]:
    """The artifact id and bytes of trial 0's kept weights in the SQLite store."""
    from optuna.artifacts import get_all_artifact_meta

    from allocator.search import StudyStore

    with StudyStore(searched.sqlite.url, must_exist=True) as s:
        trial = s.load_study("s").trials[0]
        (meta,) = get_all_artifact_meta(trial, storage=s.optuna_storage)
    return meta.artifact_id, (searched.sqlite.artifacts / meta.artifact_id).read_bytes()


@pytest.mark.slow  # needs the real searches (about 15 s, once per module)
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_export_refuses_a_bad_kept_checkpoint(
    searched, kept, tmp_path, capsys, caplog, name
) -> None:
    """The kept weights of trial 0 replaced, in a copy of the store."""
    artifact_id, real = kept
    marker = tmp_path / "code-ran"
    data, fragments = bad_checkpoints(real, marker)[name]
    db = tmp_path / "npas.db"
    with closing(sqlite3.connect(searched.sqlite.url.removeprefix("sqlite:///"))) as src, \
            closing(sqlite3.connect(db)) as dst:
        src.backup(dst)
    artifacts = tmp_path / "artifacts"
    shutil.copytree(searched.sqlite.artifacts, artifacts)
    target = artifacts / artifact_id
    if data is None:
        target.unlink()
        fragments = (f"kept weights of trial 0 (artifact {artifact_id}) are missing from",)
    else:
        target.write_bytes(data)
        fragments = ("kept weights of trial 0 cannot be used", str(target), *fragments)
    copy = Store(f"sqlite:///{db}", artifacts)
    before = copy.dump()
    code, out, lines = npas(capsys, caplog, ["export", "s", "0", "--out", str(tmp_path / "m.pt"),
                                             "--storage", copy.url, "--artifacts", str(artifacts)])
    assert_one_error_line(code, out, lines, fragments)
    assert copy.dump() == before
    assert not (tmp_path / "m.pt").exists()
    assert not marker.exists(), "unpickling the checkpoint ran its code"


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_allocator_load_refuses_a_bad_checkpoint(tmp_path, name) -> None:
    marker = tmp_path / "code-ran"
    real = _ssn_bytes(mlp())
    data, fragments = bad_checkpoints(real, marker)[name]
    path = tmp_path / "ssn.pt"
    if data is None:
        fragments = (f"checkpoint {path} does not exist",)
    else:
        path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on the way either
        with pytest.raises(allocator.CheckpointError) as info:
            allocator.load(path, mlp())
    message = str(info.value)
    assert "\n" not in message and (data is None or str(path) in message)
    for fragment in fragments:
        assert fragment in message, message
    assert not marker.exists(), "unpickling the checkpoint ran its code"


def test_the_code_running_checkpoints_would_run_code_if_unpickled(tmp_path) -> None:
    """The payload is real: plain ``pickle.loads`` runs it, ``allocator.load`` does not."""
    marker = tmp_path / "code-ran"
    pickle.loads(pickle.dumps(RunsCode(marker)))  # noqa: S301  (the point of the test)
    assert marker.read_text() == "ran"


@pytest.mark.slow  # needs the real searches (about 15 s, once per module)
def test_the_real_checkpoints_load(searched, kept, tmp_path) -> None:
    """The unchanged file exports, so the refusals above are about the changes."""
    code = main(["export", "s", "0", "--out", str(tmp_path / "m.pt"),
                 "--storage", searched.sqlite.url])
    assert code == 0 and (tmp_path / "m.pt").is_file()
    path = tmp_path / "ssn.pt"
    path.write_bytes(_ssn_bytes(mlp()))
    assert isinstance(allocator.load(path, mlp()), allocator.SSN)


# --------------------------------------------------------------------------- the Python API


def _shapeshift(**kwargs: Any) -> Callable[[], Any]:
    return lambda: allocator.shapeshift(mlp(), **kwargs)


def _run(**fields: Any) -> Callable[[], Any]:
    import trials

    base = {"model": "mlp", "data": "mnist1d", "epochs": 1, "data_size": 100,
            "max_steps_per_epoch": 1}
    return lambda: trials.run({**base, **fields})


def _space_file(name: str) -> Callable[[Path], Any]:
    from search_spaces import load_space

    return lambda spaces: load_space(spaces / name)


API_CASES: list[tuple[str, Callable[..., Any], type[Exception], tuple[str, ...]]] = [
    # allocator.shapeshift
    ("shapeshift-budget-0", _shapeshift(budget=0), allocator.BudgetError, ("budget must be > 0, got 0",)),
    ("shapeshift-budget--1", _shapeshift(budget=-1), allocator.BudgetError, ("got -1",)),
    ("shapeshift-budget-nan", _shapeshift(budget=math.nan), allocator.BudgetError,
     ("positive fraction",)),
    ("shapeshift-budget-abc", _shapeshift(budget="abc"), allocator.BudgetError, ("or a float",)),
    ("shapeshift-budget-below-minimum", _shapeshift(budget=20), allocator.BudgetError,
     ("below the minimum",)),
    ("shapeshift-unknown-downsample", _shapeshift(budget=0.5, downsample="sum"),
     allocator.ConfigError, ("unknown downsample generator 'sum'; choose one of: wavg",)),
    ("shapeshift-unknown-upsample", _shapeshift(budget=0.5, upsample="tile"),
     allocator.ConfigError, ("unknown upsample generator 'tile'; choose one of: repeat",)),
    ("shapeshift-unknown-mapping", _shapeshift(budget=0.5, mapping="hash"),
     allocator.ConfigError, ("unknown mapping 'hash'",)),
    ("shapeshift-groups-0", _shapeshift(budget=0.5, mapping="roundrobin", groups=0),
     allocator.ConfigError, ("groups must be between 1 and the model's 4 shareable layers",)),
    # trials.run (its config checks)
    *[(f"run-budget-{b!r}", _run(budget=b), allocator.BudgetError, POSITIVE)
      for b in (0, -1, math.nan, "abc")],
    ("run-budget-below-minimum", _run(budget=10), allocator.BudgetError,
     ("budget 10 is below the minimum",)),
    ("run-unknown-model", _run(model="vgg-16"), allocator.ConfigError,
     ("unknown model spec 'vgg-16'", "allowed forms")),
    ("run-unknown-dataset", _run(data="imagenet"), allocator.ConfigError,
     ("unknown dataset 'imagenet'; choose one of",)),
    ("run-unknown-generator", _run(downsample="sum"), allocator.ConfigError,
     ("downsample must be one of wavg, emb, avg, slice; got 'sum'",)),
    ("run-unknown-mapping", _run(mapping="hash"), allocator.ConfigError,
     ("mapping must be one of single",)),
    ("run-groups-0", _run(mapping="roundrobin", groups=0), allocator.ConfigError,
     ("groups must be >= 1, got 0",)),
    ("run-unknown-field", _run(bugdet=0.5), allocator.ConfigError,
     ("unknown trial config field 'bugdet'; allowed: amp, batch_size, budget",)),
    # search_spaces
    ("space-typo", _space_file("typo.yaml"), allocator.ConfigError,
     ("unknown dimension 'bugdet'", "searchable fields")),
    ("space-wrong-type", _space_file("wrong-type.yaml"), allocator.ConfigError,
     ("low must be a number, got 'small'",)),
    ("space-empty-range", _space_file("empty-range.yaml"), allocator.ConfigError,
     ("low must be <= high",)),
    ("space-empty-choice", _space_file("empty-choice.yaml"), allocator.ConfigError,
     ("values must not be empty",)),
]


@pytest.mark.parametrize(("call", "error", "fragments"),
                         [pytest.param(c, e, f, id=i) for i, c, e, f in API_CASES])
def test_bad_api_input_raises_the_npas_error_naming_it(spaces, call, error, fragments) -> None:
    with pytest.raises(error) as info:
        call(spaces) if call.__code__.co_argcount else call()
    assert isinstance(info.value, allocator.NPASError)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def _store_api_cases() -> list[Any]:
    from allocator.search import SearchSettings, StudyStore, export_model, run_search
    from dashboards import plot_pareto

    def search(**kw: Any) -> Callable[[str, Path], Any]:
        base = {"study": "new", "model": "mlp", "data": "mnist1d", "trials": 1}
        return lambda url, out: run_search(SearchSettings(storage=url, **{**base, **kw}))

    return [
        pytest.param(search(sampler="cmaes"), allocator.ConfigError,
                     ("sampler must be one of tpe",), id="run_search-unknown-sampler"),
        pytest.param(search(model="vgg-16"), allocator.ConfigError,
                     ("unknown model spec 'vgg-16'",), id="run_search-unknown-model"),
        pytest.param(search(trial_options={"budget": 0}), allocator.ConfigError,
                     ("trial option 'budget' is searched",), id="run_search-budget-0"),
        pytest.param(search(space={"dims": {"bugdet": [0.5]}}), allocator.ConfigError,
                     ("unknown dimension 'bugdet'",), id="run_search-space-typo"),
        pytest.param(search(study="s"), allocator.ConfigError,
                     ("study 's' already exists",), id="run_search-existing-study"),
        pytest.param(lambda url, out: export_model("ghost", 0, out / "m.pt", storage=url),
                     allocator.ConfigError, NO_GHOST, id="export_model-missing-study"),
        pytest.param(lambda url, out: export_model("s", 0, out / "m.pt", storage=url,
                                                   artifacts="/no/such/dir"),
                     allocator.ConfigError, ("artifacts directory '/no/such/dir' does not exist",),
                     id="export_model-missing-artifacts"),
        pytest.param(lambda url, out: plot_pareto(url, "ghost", out / "p.html"),
                     allocator.ConfigError, NO_GHOST[:1], id="plot_pareto-missing-study"),
        pytest.param(lambda url, out: plot_pareto(url, "s", out / "p.gif"),
                     allocator.ConfigError, ("plot path must end in one of .html",),
                     id="plot_pareto-unknown-suffix"),
        pytest.param(lambda url, out: plot_pareto("oracle+cx://u@h/db", "s", out / "p.html"),
                     allocator.StorageError, (BACKENDS,), id="plot_pareto-unknown-scheme"),
        pytest.param(lambda url, out: plot_pareto(MISSING_DB, "s", out / "p.html"),
                     allocator.StorageError, ("does not exist",), id="plot_pareto-missing-dir"),
        pytest.param(lambda url, out: StudyStore("oracle+cx://u@h/db"), allocator.StorageError,
                     ("backend 'oracle' is not supported",), id="StudyStore-unknown-scheme"),
        pytest.param(lambda url, out: StudyStore(MISSING_DB), allocator.StorageError,
                     ("directory /no/such/dir does not exist",), id="StudyStore-missing-dir"),
    ]


@pytest.mark.slow  # needs the real searches (about 15 s, once per module)
@pytest.mark.parametrize(("call", "error", "fragments"), _store_api_cases())
def test_bad_api_input_on_a_store_leaves_it_as_it_was(
    store, tmp_path, call, error, fragments
) -> None:
    before = store.dump()
    with pytest.raises(error) as info:
        call(store.url, tmp_path)
    message = str(info.value)
    assert "\n" not in message and PASSWORD not in message
    for fragment in fragments:
        assert fragment in message, message
    assert store.dump() == before
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- security


@pytest.mark.slow  # needs the real searches (about 15 s, once per module)
def test_the_storage_password_is_nowhere_after_a_real_search(searched) -> None:
    """Progress output and -vv logs, every table (Optuna's user and system attributes,
    npas_results), the kept weights and Ray's session files of a real search."""
    if searched.pg is None:
        service_missing("no PostgreSQL server at 127.0.0.1:5432")
    assert "s: 2/2 done" in searched.pg_output  # the progress line was there
    assert "DEBUG" in searched.pg_output or "INFO" in searched.pg_output  # and the logs
    assert PASSWORD not in searched.pg_output
    tables = searched.pg.dump()
    assert len(tables["npas_results"][1]) == 2
    assert any("npas_settings" in row for row in tables["study_user_attributes"][1])
    assert any("npas_config" in row for row in tables["trial_user_attributes"][1])
    assert PASSWORD not in repr(tables)
    for path in searched.pg.artifacts.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    ray_files = [p for p in searched.ray_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name.startswith("worker-") for p in ray_files)
    for path in ray_files:
        with open(path, "rb") as handle:
            assert PASSWORD.encode() not in handle.read(), path


def test_the_dashboard_listens_on_loopback_by_default() -> None:
    import inspect

    from allocator.cli import build_parser
    from dashboards import DashboardServer

    assert inspect.signature(DashboardServer).parameters["host"].default == "127.0.0.1"
    args = build_parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"


def test_no_code_loads_checkpoints_or_pickles_unsafely() -> None:
    """``torch.load`` only with ``weights_only=True``; no ``pickle.load(s)``, no
    ``torch.load`` through another name, no plain ``pickle.Unpickler`` (the one
    unpickler, for CIFAR batches, allows numpy arrays only)."""
    offenders = []
    for package in ("allocator", "trials", "search_spaces", "dashboards", "benchmarks"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            for match in re.finditer(r"torch\.load\(", text):
                call = text[match.start(): text.find(")", match.end()) + 1]
                if "weights_only=True" not in call:
                    offenders.append(f"{path}: {call}")
            for pattern in (r"pickle\.loads?\(", r"cloudpickle\.loads?\(", r"joblib\.load\(",
                            r"np\.load\([^)]*allow_pickle=True", r"from torch import load"):
                offenders += [f"{path}: {m.group(0)}" for m in re.finditer(pattern, text)]
            for m in re.finditer(r"class (\w+)\(pickle\.Unpickler\)", text):
                if "def find_class" not in text[m.end():]:
                    offenders.append(f"{path}: {m.group(0)} without find_class")
    assert offenders == []
