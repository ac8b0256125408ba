"""Storage URLs: the default, parsing, masking, and a reachability check that writes nothing.

A study store is named by a SQLAlchemy URL, exactly as SQLAlchemy spells it:
``sqlite:///npas.db`` (the default, in the working directory),
``postgresql+psycopg://user:pw@host/db``, ``mysql+pymysql://user:pw@host/db``.
Passwords never leave this module unmasked: every message uses :func:`mask_url`.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from allocator._errors import StorageError
from allocator._storage_url import DEFAULT_STORAGE, ENV_STORAGE, mask_url, resolve_url

__all__ = ["DEFAULT_STORAGE", "ENV_STORAGE", "check_reachable", "mask_url", "parse_url", "resolve_url"]

_BACKENDS = {"sqlite", "postgresql", "mysql"}
_EXAMPLES = "sqlite:///npas.db, postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db"
CONNECT_TIMEOUT_S = 5


def parse_url(url: str) -> URL:
    """Parse and check a storage URL; :class:`StorageError` names what is wrong."""
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(
            f"storage {mask_url(url)!r} is not a SQLAlchemy URL; e.g. {_EXAMPLES}"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise StorageError(
            f"storage {mask_url(parsed)!r}: backend {backend!r} is not supported; "
            f"use sqlite, postgresql or mysql, e.g. {_EXAMPLES}"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StorageError(
            f"storage {mask_url(parsed)!r}: an in-memory SQLite store cannot be shared "
            "between the search and its readers; give a file, e.g. sqlite:///npas.db"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError:
        hint = {"postgresql": "postgresql+psycopg://", "mysql": "mysql+pymysql://"}.get(
            backend, "sqlite:///"
        )
        raise StorageError(
            f"storage {mask_url(parsed)!r}: driver {parsed.get_driver_name()!r} is not "
            f"installed; use {hint}..."
        ) from None
    except Exception:
        raise StorageError(
            f"storage {mask_url(parsed)!r}: unknown driver {parsed.get_driver_name()!r}; "
            f"e.g. {_EXAMPLES}"
        ) from None
    return parsed


def connect_args(url: URL) -> dict[str, object]:
    """Driver options: a busy timeout for SQLite, a connect timeout for servers."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"timeout": 30}
    return {"connect_timeout": CONNECT_TIMEOUT_S}


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL (``None`` for other backends)."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database)


def check_reachable(url: str, *, must_exist: bool = False) -> URL:
    """Check that the store can be opened, without writing anything to it.

    SQLite: the file's directory must exist (and the file itself, with ``must_exist``).
    Servers: one connection and ``SELECT 1``. Raises :class:`StorageError`.
    """
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if path.exists():
            if not path.is_file():
                raise StorageError(f"storage {mask_url(parsed)!r}: {path} is not a file")
        elif must_exist:
            raise StorageError(
                f"storage {mask_url(parsed)!r}: {path} does not exist; "
                "run `npas search` first or give --storage"
            )
        elif not path.resolve().parent.is_dir():
            raise StorageError(
                f"storage {mask_url(parsed)!r}: directory {path.resolve().parent} does not exist"
            )
        elif not os.access(path.resolve().parent, os.W_OK):
            raise StorageError(
                f"storage {mask_url(parsed)!r}: directory {path.resolve().parent} is not writable"
            )
        return parsed
    engine = sa.create_engine(parsed, connect_args=connect_args(parsed), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        raise StorageError(
            f"cannot reach storage {mask_url(parsed)!r}: {describe_db_error(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()
    return parsed


def describe_db_error(exc: BaseException, url: URL) -> str:
    """The first line of a driver error, with the password (if any) blanked out."""
    inner = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(inner).__name__
    if len(lines) > 1 and lines[0].endswith("failed:"):
        text = f"{lines[0]} {lines[1]}"
    if url.password:
        text = text.replace(str(url.password), "***")
    if any(s in text for s in ("Access denied", "password authentication failed")):
        text += "; check the user name and password in the URL"
    return text
