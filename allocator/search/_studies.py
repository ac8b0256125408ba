"""Study lifecycle rules of the store: whose database it is, which names are free,
creating a study race-free and deleting one by id.

- npas writes only into a database whose every table is npas's or Optuna's own schema.
- Study names are compared exactly (bytes), whatever the server's collation; a new name
  that the server would take as equal to a stored one is refused before anything is
  written (MariaDB's default collation takes ``'S'``, ``'s '`` and ``'ś'`` as ``'s'``).
- Rows are deleted by the study's id or the trial's id, never by name alone.

:class:`~allocator.search.StudyStore` exposes these as methods.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from allocator._errors import ConfigError, StorageError
from allocator.search._table import CONTROLLERS, LAUNCH_LEASES, RESULTS, metadata

if TYPE_CHECKING:
    import optuna

    from allocator.search._store import StudyStore

__all__ = ["check_new_study", "check_schema", "create_study", "delete_rows", "delete_study",
           "optuna_schema"]


def check_schema(store: StudyStore) -> None:
    """:class:`StorageError` unless every table is npas's or Optuna's own (checked
    before npas writes anything: it never writes into another program's database)."""
    tables = store.tables()
    if not tables:
        return
    schema = optuna_schema()
    foreign = sorted(tables - set(schema) - set(metadata.tables))
    if not foreign:
        for name in sorted(tables & set(schema)):
            with store._errors("read"):
                have = {c["name"] for c in sa.inspect(store.engine).get_columns(name)}
            if not schema[name] <= have:
                foreign.append(name)
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StorageError(
            f"storage {store.masked_url!r} holds tables that are neither npas's nor "
            f"Optuna's ({shown}); npas writes only into its own database: give "
            "--storage a new SQLite file or an empty database"
        )


def check_new_study(store: StudyStore, name: str) -> None:
    """Before a new study is written: the database is npas's or Optuna's own, there
    is no study ``name``, and no stored name the server takes as equal to it
    (:class:`ConfigError` / :class:`StorageError`; reads only)."""
    if not store.tables():
        return
    check_schema(store)
    if name in store.study_names():
        raise ConfigError(
            f"study {name!r} already exists in {store.masked_url!r}; pass --resume to "
            "continue it (or to join the searches running it), or choose another --study"
        )
    lookups = [(sa.table("studies", sa.column("study_name")).c.study_name, "studies")]
    lookups += [(t.c.study, t.name) for t in (RESULTS, CONTROLLERS, LAUNCH_LEASES)]
    tables = store.tables()
    clashes: set[str] = set()
    with store._errors("read"), store.engine.connect() as conn:
        for column, table in lookups:
            if table in tables:
                query = sa.select(column).where(column == name).distinct()
                clashes.update(str(v) for v in conn.execute(query).scalars())
    clashes.discard(name)
    if clashes:
        raise ConfigError(
            f"study name {name!r} is taken as equal to the stored name "
            f"{sorted(clashes)[0]!r} by this {store.engine.dialect.name} database (its "
            "collation ignores case, accents or trailing spaces); choose a name that "
            "differs from every stored study by more than that"
        )


def create_study(
    store: StudyStore,
    name: str,
    *,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create the Optuna study ``name``: atomic between controllers (the database's
    unique name decides; the losers get :class:`ConfigError` and write nothing), then
    drop ``npas_results`` rows an earlier, deleted study of that name left, by their
    trial ids (the new study has no trials yet)."""
    import optuna

    check_new_study(store, name)
    with store._errors("write to"):
        try:
            study = optuna.create_study(
                storage=store.optuna_storage, study_name=name,
                directions=[cast(Any, d) for d in directions], sampler=sampler,
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise ConfigError(
                f"study {name!r} was created in {store.masked_url!r} by another search "
                "just now; pass --resume to join it, or choose another --study"
            ) from None
        delete_rows(store, name, keep=set())
    return study


def delete_study(store: StudyStore, name: str) -> int:
    """Delete the study ``name`` (exactly that name): Optuna's rows by its study id,
    its ``npas_results`` rows by their trial ids, its controllers by their ids and
    its launch lease. Returns how many ``npas_results`` rows went."""
    store.require_study(name)
    storage = store.optuna_storage
    with store._errors("write to"):
        study_id = storage.get_study_id_from_name(name)
        trials = sa.table("trials", sa.column("trial_id"), sa.column("study_id"))
        with store.engine.connect() as conn:
            trial_ids = set(conn.execute(
                sa.select(trials.c.trial_id).where(trials.c.study_id == study_id)
            ).scalars())
        storage.delete_study(study_id)
        gone = delete_rows(store, name, keep=set(), only=trial_ids)
        with store.engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if CONTROLLERS.name in tables:
                ids = [r.id for r in conn.execute(
                    sa.select(CONTROLLERS.c.id, CONTROLLERS.c.study)
                    .where(store.named(CONTROLLERS.c.study, name))) if r.study == name]
                if ids:
                    conn.execute(sa.delete(CONTROLLERS).where(CONTROLLERS.c.id.in_(ids)))
            if LAUNCH_LEASES.name in tables:
                conn.execute(sa.delete(LAUNCH_LEASES).where(
                    store.named(LAUNCH_LEASES.c.study, name)))
    return gone


def delete_rows(store: StudyStore, name: str, *, keep: set[int], only: set[int] | None = None) -> int:
    """Delete rows of ``npas_results`` named exactly ``name``, by trial id: those of
    ``only`` (all, if ``None``) but not those of ``keep``."""
    if not store.has_results():
        return 0
    with store.engine.begin() as conn:
        rows = conn.execute(
            sa.select(RESULTS.c.study, RESULTS.c.trial_id)
            .where(store.named(RESULTS.c.study, name))
        ).all()
        ids = {r.trial_id for r in rows if r.study == name} - keep
        if only is not None:
            ids &= only
        if not ids:
            return 0
        return int(conn.execute(sa.delete(RESULTS).where(
            store.named(RESULTS.c.study, name), RESULTS.c.trial_id.in_(sorted(ids))
        )).rowcount)


@functools.cache
def optuna_schema() -> dict[str, frozenset[str]]:
    """Optuna's own tables and their columns, as this Optuna creates them (in memory)."""
    import optuna

    storage = optuna.storages.RDBStorage("sqlite://")
    try:
        inspector = sa.inspect(storage.engine)
        return {
            name: frozenset(c["name"] for c in inspector.get_columns(name))
            for name in inspector.get_table_names()
        }
    finally:
        storage.engine.dispose()
