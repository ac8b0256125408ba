"""The study store: Optuna's RDB storage and the ``npas_results`` table in one database.

Opening a store writes nothing; :meth:`StudyStore.initialise` creates the tables (Optuna's
and ``npas_results``) and is the first write a search makes. SQLite files are switched to
WAL mode with a busy timeout, so a dashboard can read while a search writes; a store
opened ``read_only`` is opened with SQLite's ``mode=ro`` and its journal mode is left alone.

Safety rules, whatever the database:

- npas writes only into a database whose every table is npas's or Optuna's own schema.
- Study names are compared exactly (bytes), whatever the server's collation; a new name
  that the server would take as equal to a stored one is refused before anything is
  written (MariaDB's default collation takes ``'S'``, ``'s '`` and ``'ś'`` as ``'s'``).
- Rows are deleted by the study's id or the trial's id, never by name alone.

The rules themselves live in :mod:`allocator.search._studies`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from allocator._errors import ConfigError, StorageError
from allocator.search import _studies
from allocator.search._table import RESULTS, metadata
from allocator.search._urls import (
    check_reachable,
    describe_db_error,
    engine_options,
    mask_url,
    resolve_url,
    sqlite_path,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["StudyStore"]

logger = logging.getLogger(__name__)

_JSON = ("manual_map", "params_by_kind", "method_info", "hp", "metrics")
_BUSY_TIMEOUT_MS = 30_000


class StudyStore:
    """A SQL database holding npas studies: Optuna's tables plus ``npas_results``.

    ``url`` is a SQLAlchemy URL (``None``: ``$NPAS_STORAGE``, else ``sqlite:///npas.db``).
    With ``must_exist`` a SQLite file that does not exist is an error rather than a new
    store; ``read_only`` (the commands that only read) opens a SQLite file read-only.
    Errors are :class:`allocator.StorageError`; the password is never shown.

    Example:
        >>> import tempfile, os
        >>> from allocator.search import StudyStore
        >>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "npas.db")
        >>> with StudyStore(url) as store:
        ...     store.initialise()
        ...     store.study_names()
        []
    """

    def __init__(
        self, url: str | None = None, *, must_exist: bool = False, read_only: bool = False
    ) -> None:
        self.url = resolve_url(url)
        self.masked_url = mask_url(self.url)
        self.read_only = read_only
        self._parsed = check_reachable(self.url, must_exist=must_exist or read_only)
        self._sqlite = sqlite_path(self._parsed) is not None
        self._engine = sa.create_engine(
            self._parsed,
            **engine_options(self._parsed, read_only=read_only),
            pool_pre_ping=not self._sqlite,
        )
        if self._sqlite and not read_only:
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._optuna: optuna.storages.RDBStorage | None = None

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every connection (the store can be opened again later)."""
        self.reconnect()
        self._optuna = None

    def reconnect(self) -> None:
        """Let every pooled connection go; the next call opens a new one.

        A signal raised inside a read (SIGTERM or Ctrl-C in the middle of a query) can
        leave the read's statement open on a pooled SQLite connection, and with it the
        read's snapshot: that connection's next write fails at once with
        ``SQLITE_BUSY_SNAPSHOT`` ("database is locked") once anyone else has written.
        What a search writes after an interrupt goes through new connections.
        """
        if self._optuna is not None:
            self._optuna.remove_session()
            self._optuna.engine.dispose()
        self._engine.dispose()

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite store, ``None`` for a server."""
        return sqlite_path(self._parsed)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for plain SQL or ``pandas.read_sql``)."""
        return self._engine

    def tables(self) -> set[str]:
        """The names of the database's tables (reading only; none for a new SQLite file)."""
        path = sqlite_path(self._parsed)
        if path is not None and (not path.exists() or path.stat().st_size == 0):
            return set()
        with self._errors("read"):
            return set(sa.inspect(self._engine).get_table_names())

    def exists(self) -> bool:
        """Whether the database holds Optuna's tables (an npas store or a plain Optuna one)."""
        return "studies" in self.tables()

    def has_results(self) -> bool:
        """Whether the database holds ``npas_results``."""
        return RESULTS.name in self.tables()

    def check_schema(self) -> None:
        """:class:`StorageError` unless every table is npas's or Optuna's own (npas never
        writes into another program's database)."""
        _studies.check_schema(self)

    def initialise(self) -> None:
        """Create Optuna's tables and ``npas_results`` if missing (idempotent; safe when
        several controllers do it at once)."""
        if self.read_only:
            raise StorageError(f"storage {self.masked_url!r} was opened read-only")
        self.check_schema()
        if self._sqlite:  # the first write: WAL from now on (persistent in the file)
            with self._errors("write to"), self._engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        for attempt in range(4):
            try:
                with self._errors("create tables in"):
                    metadata.create_all(self._engine)
                    self._add_missing_columns()
                self.optuna_storage  # noqa: B018  (creating it creates Optuna's tables)
                return
            except StorageError:  # another controller created a table at the same moment
                if attempt == 3:
                    raise
                self._drop_optuna()
                time.sleep(0.2 + random.random())

    def _add_missing_columns(self) -> None:
        """Columns of ``npas_results`` newer than the store (``controller``), added."""
        have = {c["name"] for c in sa.inspect(self._engine).get_columns(RESULTS.name)}
        for column in RESULTS.c:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=self._engine.dialect)
            try:
                with self._engine.begin() as conn:
                    conn.execute(sa.text(
                        f"ALTER TABLE {RESULTS.name} ADD COLUMN {column.name} {kind}"
                    ))
            except sa.exc.SQLAlchemyError:  # another controller added it at the same moment
                have = {c["name"] for c in sa.inspect(self._engine).get_columns(RESULTS.name)}
                if column.name not in have:
                    raise

    @property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's :class:`~optuna.storages.RDBStorage` on the same database."""
        if self._optuna is None:
            import optuna

            kwargs: dict[str, Any] = engine_options(self._parsed, read_only=self.read_only)
            if not self._sqlite:
                kwargs["pool_pre_ping"] = True
            with self._errors("open"):
                storage = optuna.storages.RDBStorage(
                    self.url, engine_kwargs=kwargs, skip_table_creation=self.read_only
                )
            if self._sqlite and not self.read_only:
                sa.event.listen(storage.engine, "connect", _sqlite_pragmas)
            self._optuna = storage
        return self._optuna

    def _drop_optuna(self) -> None:
        if self._optuna is not None:
            self._optuna.remove_session()
            self._optuna.engine.dispose()
            self._optuna = None

    def named(self, column: Any, name: str) -> Any:
        """``column == name``, exactly: MySQL and MariaDB compare the bytes as well (their
        collations take case, accents and trailing spaces as equal)."""
        condition = column == name
        if self._engine.dialect.name == "mysql":
            condition = condition & (
                sa.cast(column, sa.LargeBinary) == sa.cast(sa.literal(name), sa.LargeBinary)
            )
        return condition

    # ---------------------------------------------------------------- studies

    def study_names(self) -> list[str]:
        """The names of every study in the store, oldest first."""
        if not self.exists():
            return []
        import optuna

        with self._errors("read"):
            return list(optuna.get_all_study_names(self.optuna_storage))

    def require_study(self, name: str) -> None:
        """:class:`ConfigError` naming the studies there are, unless ``name`` is one."""
        names = self.study_names()
        if name not in names:
            there = ", ".join(names) if names else "none"
            raise ConfigError(
                f"no study {name!r} in storage {self.masked_url!r}; studies there: {there}"
            )

    def check_new_study(self, name: str) -> None:
        """Before a new study is written: the database is npas's or Optuna's, and no
        stored name is ``name`` or taken as equal to it by the server's collation."""
        _studies.check_new_study(self, name)

    def create_study(
        self,
        name: str,
        *,
        directions: Sequence[str],
        sampler: optuna.samplers.BaseSampler | None = None,
    ) -> optuna.Study:
        """Create the study ``name``, race-free between controllers (the losers get
        :class:`ConfigError` and write nothing); old rows of the name go by trial id."""
        return _studies.create_study(self, name, directions=directions, sampler=sampler)

    def delete_study(self, name: str) -> int:
        """Delete the study ``name`` with its ``npas_results`` rows (by study and trial
        id), controllers and launch lease; the number of rows deleted."""
        return _studies.delete_study(self, name)

    def load_study(
        self, name: str, sampler: optuna.samplers.BaseSampler | None = None
    ) -> optuna.Study:
        """The Optuna study ``name`` (:class:`ConfigError` if there is none)."""
        self.require_study(name)
        import optuna

        with self._errors("read"):
            return optuna.load_study(study_name=name, storage=self.optuna_storage, sampler=sampler)

    def summaries(self) -> list[dict[str, Any]]:
        """One dict per study: name, objectives, trials per state, first and last time."""
        out: list[dict[str, Any]] = []
        if not self.exists():
            return out
        for name in self.study_names():
            study = self.load_study(name)
            trials = study.get_trials(deepcopy=False)
            starts = [t.datetime_start for t in trials if t.datetime_start is not None]
            states = [t.state.name for t in trials]
            out.append(
                {
                    "study": name,
                    "objectives": ",".join(study.metric_names or []),
                    "trials": len(trials),
                    "complete": states.count("COMPLETE"),
                    "failed": states.count("FAIL"),
                    "running": states.count("RUNNING"),
                    "space": study.user_attrs.get("npas_settings", {}).get("space_name", ""),
                    "started": min(starts).isoformat(timespec="seconds") if starts else "",
                }
            )
        return out

    # ---------------------------------------------------------------- npas_results

    def write_result(self, row: Mapping[str, Any]) -> None:
        """Insert or update one trial's row (keyed by study and trial number)."""
        key = self.named(RESULTS.c.study, row["study"]) & (
            RESULTS.c.trial_number == row["trial_number"]
        )
        values = {k: v for k, v in row.items() if k not in ("study", "trial_number")}
        with self._errors("write to"), self._engine.begin() as conn:
            updated = conn.execute(sa.update(RESULTS).where(key).values(**values)).rowcount
            if not updated:
                conn.execute(sa.insert(RESULTS).values(**row))

    def results(
        self,
        study: str,
        *,
        state: str | None = None,
        sort: str | None = None,
        descending: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``npas_results`` for one study, JSON columns decoded.

        ``sort`` is any column (default: trial number); metrics where larger is better
        (accuracy) sort descending unless ``descending`` says otherwise.
        """
        if sort is not None and sort not in RESULTS.c:
            raise ConfigError(
                f"sort must be a column of npas_results ({', '.join(RESULTS.c.keys())}), "
                f"got {sort!r}"
            )
        column = RESULTS.c[sort or "trial_number"]
        if descending is None:
            descending = sort is not None and sort.endswith("accuracy")
        order = column.desc() if descending else column.asc()
        if not self.has_results():
            return []
        query = sa.select(*self._columns()).where(self.named(RESULTS.c.study, study))
        if state is not None:
            query = query.where(RESULTS.c.state == state)
        # NULLs last, portably (MySQL and MariaDB have no NULLS LAST)
        nulls = sa.case((column.is_(None), 1), else_=0)
        query = query.order_by(nulls, order, RESULTS.c.trial_number)
        with self._errors("read"), self._engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            for name in _JSON:
                if row.get(name) is not None:
                    row[name] = json.loads(row[name])
        return rows

    def dataframe(self, study: str | None = None) -> pd.DataFrame:
        """``npas_results`` (one study, or all) as a pandas DataFrame.

        Example:
            >>> store.dataframe("demo").plot.scatter("trainable_params", "val_accuracy")  # doctest: +SKIP
        """
        import pandas as pd

        if not self.has_results():
            return pd.DataFrame(columns=list(RESULTS.c.keys()))
        query = sa.select(*self._columns())
        if study is not None:
            query = query.where(self.named(RESULTS.c.study, study))
        with self._errors("read"), self._engine.connect() as conn:
            return pd.read_sql(query.order_by(RESULTS.c.study, RESULTS.c.trial_number), conn)

    # ---------------------------------------------------------------- helpers

    def _columns(self) -> list[Any]:
        """The columns of ``npas_results`` this store has (one made by an earlier npas
        lacks the newer ones until a search opens it); the missing ones read as NULL."""
        with self._errors("read"):
            have = {c["name"] for c in sa.inspect(self._engine).get_columns(RESULTS.name)}
        return [c if c.name in have else sa.null().label(c.name) for c in RESULTS.c]

    @contextmanager
    def _errors(self, verb: str) -> Iterator[None]:
        """Turn database errors into one-line :class:`StorageError` messages."""
        try:
            yield
        except (StorageError, ConfigError):
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"cannot {verb} storage {self.masked_url!r}: "
                f"{describe_db_error(exc, self._parsed)}"
            ) from None
        except Exception as exc:
            if type(exc).__module__.startswith("optuna"):
                cause = exc.__cause__ or exc
                raise StorageError(
                    f"cannot {verb} storage {self.masked_url!r}: "
                    f"{describe_db_error(cause, self._parsed)}"
                ) from None
            raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """A busy timeout on every connection (:meth:`StudyStore.initialise` switches the
    file to WAL, so that readers never block the writer: opening a store changes nothing)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()

