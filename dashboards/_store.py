"""Reading a study store: the URL, Optuna's storage on it, and a study as one flat table.

The dashboards read and never write. A SQLite file that does not exist is an error (not a
new, empty store), and so is a database without Optuna's tables. A study made by
``npas search`` has the flat ``npas_results`` table beside Optuna's; :func:`load_trials`
reads that (one query, fast at 10,000 trials) and falls back to Optuna's API for any
other Optuna study.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from allocator._errors import ConfigError, StorageError
from allocator._storage_url import (
    DEFAULT_STORAGE,
    describe_db_error,
    engine_options,
    mask_url,
    parse_url,
    resolve_url,
    sqlite_path,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["DEFAULT_STORAGE", "StudyData", "load_study", "load_trials", "mask_url", "resolve_url"]

logger = logging.getLogger(__name__)

RESULTS_TABLE = "npas_results"

#: Optuna's trial states as ``npas_results`` spells them.
_STATES = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned",
           "RUNNING": "running", "WAITING": "waiting"}


def check_store(url: str | None) -> str:
    """The resolved URL of an existing study store; :class:`StorageError` otherwise.

    Reads only: a SQLite file must exist and hold Optuna's tables; a server must answer
    within a few seconds.
    """
    url = resolve_url(url)
    shown = mask_url(url)
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.is_file():
        raise StorageError(
            f"storage {shown!r}: {path} does not exist; run `npas search` first or give --storage"
        )
    engine = _engine(parsed)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    except Exception as exc:
        raise StorageError(f"cannot read storage {shown!r}: {describe_db_error(exc, parsed)}") from None
    finally:
        engine.dispose()
    if "studies" not in tables:
        raise StorageError(f"storage {shown!r} holds no Optuna studies; run `npas search` first")
    return url


@dataclass
class StudyData:
    """One study, read: its trials as a table and what the study says about itself.

    ``frame`` has one row per trial: ``trial_number``, ``state``, one column per objective
    (named by the study's metric names), the trial's config fields (``method``,
    ``budget``, ``mapping``...) where known, and ``pareto`` (on the study's Pareto front).
    """

    name: str
    storage: str  # masked
    metric_names: list[str]
    directions: list[str]  # "maximize" | "minimize"
    user_attrs: dict[str, Any]
    frame: pd.DataFrame
    source: str  # "npas_results" | "optuna"

    @property
    def settings(self) -> dict[str, Any]:
        """What ``npas search`` recorded (``npas_settings``), or ``{}``."""
        record = self.user_attrs.get("npas_settings")
        return record if isinstance(record, dict) else {}


def load_study(storage: str | None, name: str) -> optuna.Study:
    """The Optuna study ``name`` (read only); :class:`ConfigError` names the studies there.

    Example:
        >>> load_study("sqlite:///npas.db", "demo").best_trials  # doctest: +SKIP
    """
    import optuna

    url = check_store(storage)
    rdb = open_optuna_storage(url)
    with _errors(url):
        names = [s.study_name for s in rdb.get_all_studies()]
    if name not in names:
        there = ", ".join(names) if names else "none"
        raise ConfigError(f"no study {name!r} in storage {mask_url(url)!r}; studies there: {there}")
    with _errors(url):
        return optuna.load_study(study_name=name, storage=rdb)


def open_optuna_storage(url: str, *, read_only: bool = True) -> optuna.storages.RDBStorage:
    """Optuna's storage on the store; SQLite files opened read-only unless asked."""
    import optuna

    parsed = make_url(url)
    kwargs: dict[str, Any] = engine_options(parsed, read_only=read_only)
    with _errors(url):
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)


def load_trials(storage: str | None, study: str | optuna.Study) -> StudyData:
    """A study's trials as one table, with the Pareto front marked.

    ``storage`` is the URL of the store that holds the study (``None``: ``$NPAS_STORAGE``,
    else ``sqlite:///npas.db``); ``study`` its name, or the study already loaded from it.

    Example:
        >>> data = load_trials("sqlite:///npas.db", "demo")  # doctest: +SKIP
        >>> data.frame.loc[data.frame.pareto, ["trainable_params", "val_accuracy"]]  # doctest: +SKIP
    """
    from dashboards._pareto import pareto_mask

    loaded = study if not isinstance(study, str) else load_study(storage, study)
    url = resolve_url(storage)
    names = _metric_names(loaded)
    directions = [d.name.lower() for d in loaded.directions]
    frame = _from_results(url, loaded.study_name, names)
    source = "npas_results"
    if frame is None:
        frame, source = _from_optuna_tables(url, loaded.study_name, names), "optuna"
    if frame is None:
        frame = _from_optuna(loaded, names)
    complete = (frame["state"] == "complete").to_numpy()
    values = frame[names].to_numpy(dtype=float, na_value=math.nan)
    usable = complete & ~_any_nan(values)
    mask = pareto_mask(values[usable], directions)
    frame["pareto"] = False
    frame.loc[frame.index[usable][mask], "pareto"] = True
    return StudyData(
        name=loaded.study_name,
        storage=mask_url(url),
        metric_names=names,
        directions=directions,
        user_attrs=dict(loaded.user_attrs),
        frame=frame,
        source=source,
    )


# ------------------------------------------------------------------ the two readers


def _from_results(url: str, study: str, names: list[str]) -> pd.DataFrame | None:
    """The study's rows of ``npas_results``, or ``None`` when it has none there."""
    import pandas as pd

    parsed = make_url(url)
    engine = _engine(parsed)
    try:
        with engine.connect() as conn:
            if RESULTS_TABLE not in sa.inspect(conn).get_table_names():
                return None
            table = sa.Table(RESULTS_TABLE, sa.MetaData(), autoload_with=conn)
            query = sa.select(table).where(table.c.study == study).order_by(table.c.trial_number)
            frame = pd.read_sql(query, conn)
    except Exception as exc:
        raise StorageError(f"cannot read storage {mask_url(url)!r}: {describe_db_error(exc, parsed)}") from None
    finally:
        engine.dispose()
    if frame.empty or not set(names) <= set(frame.columns):
        return None
    return frame.reset_index(drop=True)


def _from_optuna(study: optuna.Study, names: list[str]) -> pd.DataFrame:
    """The same table from Optuna's trials: values, the ``npas_config`` and the params."""
    rows: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        config = t.user_attrs.get("npas_config")
        rows.append(_row(t.number, t.state.name, t.values, t.params, config, names))
    return _frame(rows, names)


def _from_optuna_tables(url: str, study: str, names: list[str]) -> pd.DataFrame | None:
    """:func:`_from_optuna` in four queries of Optuna's own tables (``get_trials`` builds
    every trial object: 3 s for 10,000 trials, against a few tenths of a second here).
    ``None`` if the tables are not as Optuna 3 to 5 lay them out (the caller then asks
    Optuna)."""
    from optuna.distributions import json_to_distribution

    parsed = make_url(url)
    engine = _engine(parsed)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn, only=("studies", "trials", "trial_values", "trial_params",
                                     "trial_user_attributes"))
            studies, trials = meta.tables["studies"], meta.tables["trials"]
            values_t, params_t = meta.tables["trial_values"], meta.tables["trial_params"]
            attrs_t = meta.tables["trial_user_attributes"]
            study_id = conn.execute(
                sa.select(studies.c.study_id).where(studies.c.study_name == study)
            ).scalar_one()
            mine = sa.select(trials.c.trial_id).where(trials.c.study_id == study_id)
            heads = conn.execute(
                sa.select(trials.c.trial_id, trials.c.number, trials.c.state)
                .where(trials.c.study_id == study_id).order_by(trials.c.number)
            ).all()
            values: dict[int, dict[int, float | None]] = {}
            for trial_id, objective, value, kind in conn.execute(
                sa.select(values_t.c.trial_id, values_t.c.objective, values_t.c.value,
                          values_t.c.value_type).where(values_t.c.trial_id.in_(mine))
            ):
                values.setdefault(trial_id, {})[objective] = _value(value, kind)
            params: dict[int, dict[str, Any]] = {}
            dists: dict[str, Any] = {}
            for trial_id, name, value, dist_json in conn.execute(
                sa.select(params_t.c.trial_id, params_t.c.param_name, params_t.c.param_value,
                          params_t.c.distribution_json).where(params_t.c.trial_id.in_(mine))
            ):
                if dist_json not in dists:
                    dists[dist_json] = json_to_distribution(dist_json)
                params.setdefault(trial_id, {})[name] = dists[dist_json].to_external_repr(value)
            configs = dict(conn.execute(
                sa.select(attrs_t.c.trial_id, attrs_t.c.value_json)
                .where(attrs_t.c.trial_id.in_(mine), attrs_t.c.key == "npas_config")
            ).all())
    except Exception as exc:  # another layout: let Optuna read it
        logger.debug("reading Optuna's tables directly failed (%s); using Optuna's API", exc)
        return None
    finally:
        engine.dispose()
    rows = []
    for trial_id, number, state in heads:
        state_name = getattr(state, "name", str(state))
        got = values.get(trial_id)
        trial_values = [got.get(i) for i in range(len(names))] if got else None
        config = json.loads(configs[trial_id]) if trial_id in configs else None
        rows.append(_row(number, state_name, trial_values, params.get(trial_id, {}), config, names))
    return _frame(rows, names)


def _row(
    number: int, state: str, values: Any, params: dict[str, Any], config: Any, names: list[str]
) -> dict[str, Any]:
    row: dict[str, Any] = dict(config) if isinstance(config, dict) else {}
    row.update(params)
    row["trial_number"] = number
    row["state"] = _STATES.get(state, state.lower())
    for name, value in zip(names, values if values is not None else [None] * len(names),
                           strict=False):
        row[name] = value
    return row


def _frame(rows: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=None if rows else ["trial_number", "state", *names])
    for name in names:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def _value(value: float | None, kind: Any) -> float | None:
    """A stored objective value (Optuna keeps infinities as a type, the value NULL)."""
    name = getattr(kind, "name", str(kind))
    if name == "INF_POS":
        return math.inf
    if name == "INF_NEG":
        return -math.inf
    return value


def _metric_names(study: optuna.Study) -> list[str]:
    n = len(study.directions)
    names = list(study.metric_names or [])
    if len(names) != n:
        names = [f"objective_{i}" for i in range(n)]
    return names


# ------------------------------------------------------------------ helpers


def _any_nan(values: Any) -> Any:
    import numpy as np

    return np.isnan(values).any(axis=1) if values.size else np.zeros(len(values), dtype=bool)


def _engine(parsed: URL) -> sa.Engine:
    try:
        return sa.create_engine(parsed, **engine_options(parsed, read_only=True),
                                poolclass=sa.NullPool)
    except Exception as exc:
        raise StorageError(
            f"storage {mask_url(parsed)!r}: {describe_db_error(exc, parsed)}; use sqlite, postgresql "
            "or mysql, e.g. sqlite:///npas.db, postgresql+psycopg://user@host/db"
        ) from None


@contextmanager
def _errors(url: str) -> Iterator[None]:
    """Database errors (SQLAlchemy's, Optuna's) as one-line :class:`StorageError`."""
    try:
        yield
    except (StorageError, ConfigError):
        raise
    except Exception as exc:
        if isinstance(exc, sa.exc.SQLAlchemyError) or type(exc).__module__.startswith("optuna"):
            cause = exc.__cause__ or exc
            raise StorageError(
                f"cannot read storage {mask_url(url)!r}: {describe_db_error(cause, make_url(url))}"
            ) from None
        raise


def decode_json(value: Any) -> Any:
    """A JSON column's value decoded (``npas_results`` keeps dicts as text)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
