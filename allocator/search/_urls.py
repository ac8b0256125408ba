"""Storage URLs for the search: a reachability check that writes nothing, beside the
parsing, masking and driver options of :mod:`allocator._storage_url`.

A study store is named by a SQLAlchemy URL, exactly as SQLAlchemy spells it:
``sqlite:///npas.db`` (the default, in the working directory),
``postgresql+psycopg://user:pw@host/db``, ``mysql+pymysql://user:pw@host/db``.
Passwords never leave this module unmasked: every message uses :func:`mask_url`.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.engine import URL

from allocator._errors import StorageError
from allocator._storage_url import (
    DEFAULT_STORAGE,
    ENV_STORAGE,
    connect_args,
    describe_db_error,
    engine_options,
    mask_url,
    parse_url,
    resolve_url,
    sqlite_path,
)

__all__ = [
    "DEFAULT_STORAGE",
    "ENV_STORAGE",
    "check_reachable",
    "connect_args",
    "describe_db_error",
    "engine_options",
    "mask_url",
    "parse_url",
    "resolve_url",
    "sqlite_path",
]


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

