"""The study store's address, shared by the search service and the dashboards:
the default, parsing and checking a URL, driver options, and errors without passwords.

``import allocator`` does not load this module (it needs SQLAlchemy); both the controller
(``allocator.search``) and ``dashboards`` import it, so the default store, the
environment variable and the masking of passwords are defined once.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from allocator._errors import StorageError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_STORAGE",
    "ENV_STORAGE",
    "connect_args",
    "describe_db_error",
    "engine_options",
    "mask_url",
    "parse_url",
    "resolve_url",
    "sqlite_path",
    "store_files",
]

DEFAULT_STORAGE = "sqlite:///npas.db"
ENV_STORAGE = "NPAS_STORAGE"
_BACKENDS = {"sqlite", "postgresql", "mysql"}
_EXAMPLES = "sqlite:///npas.db, postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db"
CONNECT_TIMEOUT_S = 5


def resolve_url(url: str | None) -> str:
    """``url``, else ``$NPAS_STORAGE``, else ``sqlite:///npas.db``.

    Example:
        >>> resolve_url("sqlite:///x.db")
        'sqlite:///x.db'
    """
    return url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (safe to print or log).

    Example:
        >>> mask_url("postgresql+psycopg://ann:secret@db:5432/npas")
        'postgresql+psycopg://ann:***@db:5432/npas'
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    scheme, sep, rest = text.partition("://")
    netloc = rest.split("/", 1)[0]
    if sep and netloc.count("@") > 1:  # an un-encoded '@' in the password: mask up to the last
        user_part, host = netloc.rsplit("@", 1)
        user = user_part.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}{rest[len(netloc):]}"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show only the scheme, never the rest
        return scheme + "://..." if sep else "<invalid URL>"


def parse_url(url: str) -> URL:
    """Parse and check a storage URL; :class:`StorageError` names what is wrong."""
    netloc = url.partition("://")[2].split("/", 1)[0]
    if netloc.count("@") > 1:
        raise StorageError(
            f"storage {mask_url(url)!r}: the user and password hold an '@' that is not "
            "percent-encoded; write each @ in a password as %40"
        )
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


def engine_options(url: URL, *, read_only: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``sqlalchemy.create_engine`` (and Optuna's ``engine_kwargs``).

    ``read_only`` opens a SQLite file with ``mode=ro``: nothing, not even the journal
    mode, can change its bytes. Servers are read as they are (commands that only read
    issue no writes).

    Example:
        >>> sorted(engine_options(make_url("sqlite:///x.db"), read_only=True))
        ['connect_args', 'creator']
    """
    options: dict[str, Any] = {"connect_args": connect_args(url)}
    path = sqlite_path(url)
    if read_only and path is not None:
        uri = path.resolve().as_uri() + "?mode=ro"

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)

        options["creator"] = creator
    return options


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL (``None`` for other backends)."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database)


def store_files(url: str | None) -> tuple[Path, ...]:
    """The files of a SQLite store (the database, its ``-wal``, ``-shm`` and ``-journal``)
    that no output may overwrite; none for a server or a URL that does not parse.

    Example:
        >>> [p.name for p in store_files("sqlite:///npas.db")]
        ['npas.db', 'npas.db-wal', 'npas.db-shm', 'npas.db-journal']
    """
    try:
        path = sqlite_path(make_url(resolve_url(url)))
    except Exception:
        return ()
    if path is None:
        return ()
    return tuple(path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal"))


def describe_db_error(exc: BaseException, url: URL) -> str:
    """The first line of a driver error, with the password (if any) blanked out."""
    inner = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(inner).__name__
    if len(lines) > 1 and lines[0].endswith("failed:"):
        text = f"{lines[0]} {lines[1]}"
    if url.password:
        text = text.replace(str(url.password), "***")
    if url.host and "@" in url.host:  # a driver echoing a host made of a password's tail
        text = text.replace(url.host, "***@" + url.host.rsplit("@", 1)[1])
    if any(s in text for s in ("Access denied", "password authentication failed")):
        text += "; check the user name and password in the URL"
    return text
