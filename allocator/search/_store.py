"""The study store: Optuna's RDB storage and the ``npas_results`` table in one database.

Opening a store writes nothing; :meth:`StudyStore.initialise` creates the tables (Optuna's
and ``npas_results``) and is the first write a search makes. SQLite files are switched to
WAL mode with a busy timeout, so a dashboard can read while a search writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from allocator._errors import ConfigError, StorageError
from allocator.search._table import RESULTS, metadata
from allocator.search._urls import (
    check_reachable,
    connect_args,
    describe_db_error,
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
    store. Errors are :class:`allocator.StorageError`; the password is never shown.

    Example:
        >>> import tempfile, os
        >>> from allocator.search import StudyStore
        >>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "npas.db")
        >>> with StudyStore(url) as store:
        ...     store.initialise()
        ...     store.study_names()
        []
    """

    def __init__(self, url: str | None = None, *, must_exist: bool = False) -> None:
        self.url = resolve_url(url)
        self.masked_url = mask_url(self.url)
        self._parsed = check_reachable(self.url, must_exist=must_exist)
        self._sqlite = sqlite_path(self._parsed) is not None
        self._engine = sa.create_engine(
            self._parsed,
            connect_args=connect_args(self._parsed),
            pool_pre_ping=not self._sqlite,
        )
        if self._sqlite:
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._optuna: optuna.storages.RDBStorage | None = None

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every connection (the store can be opened again later)."""
        if self._optuna is not None:
            self._optuna.remove_session()
            self._optuna.engine.dispose()
            self._optuna = None
        self._engine.dispose()

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite store, ``None`` for a server."""
        return sqlite_path(self._parsed)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for plain SQL or ``pandas.read_sql``)."""
        return self._engine

    def exists(self) -> bool:
        """Whether the database already holds npas tables (reading only)."""
        path = sqlite_path(self._parsed)
        if path is not None and not path.exists():
            return False
        with self._errors("read"):
            names = set(sa.inspect(self._engine).get_table_names())
        return {"studies", RESULTS.name} <= names

    def initialise(self) -> None:
        """Create Optuna's tables and ``npas_results`` if missing (idempotent)."""
        with self._errors("create tables in"):
            metadata.create_all(self._engine)
            self._add_missing_columns()
        self.optuna_storage  # noqa: B018  (creating it creates Optuna's tables)

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

            kwargs: dict[str, Any] = {"connect_args": connect_args(self._parsed)}
            if not self._sqlite:
                kwargs["pool_pre_ping"] = True
            with self._errors("open"):
                storage = optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)
            if self._sqlite:
                sa.event.listen(storage.engine, "connect", _sqlite_pragmas)
            self._optuna = storage
        return self._optuna

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
        counts: dict[str, dict[str, int]] = {}
        query = sa.select(RESULTS.c.study, RESULTS.c.state, sa.func.count()).group_by(
            RESULTS.c.study, RESULTS.c.state
        )
        with self._errors("read"), self._engine.connect() as conn:
            for study, state, n in conn.execute(query):
                counts.setdefault(study, {})[state] = int(n)
        for name in self.study_names():
            study = self.load_study(name)
            trials = study.get_trials(deepcopy=False)
            starts = [t.datetime_start for t in trials if t.datetime_start is not None]
            out.append(
                {
                    "study": name,
                    "objectives": ",".join(study.metric_names or []),
                    "trials": len(trials),
                    "complete": counts.get(name, {}).get("complete", 0),
                    "failed": counts.get(name, {}).get("failed", 0),
                    "running": counts.get(name, {}).get("running", 0),
                    "space": study.user_attrs.get("npas_settings", {}).get("space_name", ""),
                    "started": min(starts).isoformat(timespec="seconds") if starts else "",
                }
            )
        return out

    # ---------------------------------------------------------------- npas_results

    def write_result(self, row: Mapping[str, Any]) -> None:
        """Insert or update one trial's row (keyed by study and trial number)."""
        key = (RESULTS.c.study == row["study"]) & (RESULTS.c.trial_number == row["trial_number"])
        values = {k: v for k, v in row.items() if k not in ("study", "trial_number")}
        with self._errors("write to"), self._engine.begin() as conn:
            updated = conn.execute(sa.update(RESULTS).where(key).values(**values)).rowcount
            if not updated:
                conn.execute(sa.insert(RESULTS).values(**row))

    def delete_results(self, study: str) -> int:
        """Drop every row of ``study`` (left over from a deleted study of that name)."""
        with self._errors("write to"), self._engine.begin() as conn:
            return int(conn.execute(sa.delete(RESULTS).where(RESULTS.c.study == study)).rowcount)

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
        if not self.exists():
            return []
        query = sa.select(*self._columns()).where(RESULTS.c.study == study)
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

        if not self.exists():
            return pd.DataFrame(columns=list(RESULTS.c.keys()))
        query = sa.select(*self._columns())
        if study is not None:
            query = query.where(RESULTS.c.study == study)
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
    """WAL (readers never block the writer) and a busy timeout on every connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()

