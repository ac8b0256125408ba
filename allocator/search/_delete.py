"""Deleting a study: Optuna's rows, its ``npas_results`` rows and its kept files together.

Optuna Dashboard (or ``optuna.delete_study``) deletes only Optuna's rows; the flat rows
and the weights on disk would be left behind, and a later study of the same name would
meet them. :func:`delete_study` reads what to delete first, deletes the rows (by the
study's id and the trials' ids), and removes the files last, once the rows are gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from allocator._errors import ConfigError
from allocator.search._store import StudyStore

__all__ = ["DeletePlan", "delete_study", "plan_delete"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletePlan:
    """What deleting a study removes (read before anything is deleted)."""

    study: str
    storage: str  # masked
    trials: int
    artifacts_dir: str | None
    artifact_ids: tuple[str, ...]


def plan_delete(study: str, *, storage: str | None = None,
                artifacts: str | None = None) -> DeletePlan:
    """What :func:`delete_study` would remove (reads only).

    Example:
        >>> plan_delete("demo").trials  # doctest: +SKIP
        24
    """
    from optuna.artifacts import get_all_artifact_meta

    with StudyStore(storage, read_only=True) as store:
        loaded = store.load_study(study)
        record = loaded.user_attrs.get("npas_settings")
        recorded = record.get("artifacts") if isinstance(record, dict) else None
        art_dir = artifacts or recorded
        with store._errors("read"):
            trials = loaded.get_trials(deepcopy=False)
            metas = list(get_all_artifact_meta(loaded, storage=store.optuna_storage))
            for trial in trials:
                metas += get_all_artifact_meta(trial, storage=store.optuna_storage)
        ids = tuple(m.artifact_id for m in metas)
        if ids and not art_dir:
            raise ConfigError(
                f"study {study!r} has {len(ids)} kept files but records no artifacts "
                "directory; give --artifacts DIR"
            )
        return DeletePlan(study, store.masked_url, len(trials), art_dir, ids)


def delete_study(plan: DeletePlan, *, storage: str | None = None) -> int:
    """Delete what ``plan`` names; returns the number of files removed."""
    with StudyStore(storage, must_exist=True) as store:
        store.check_schema()
        store.delete_study(plan.study)
    removed = 0
    if plan.artifacts_dir:
        from optuna.artifacts import FileSystemArtifactStore

        files = FileSystemArtifactStore(base_path=Path(plan.artifacts_dir))
        for artifact_id in plan.artifact_ids:
            try:
                files.remove(artifact_id)
                removed += 1
            except Exception:  # noqa: BLE001 - a file already gone is no reason to stop
                logger.warning("kept file %s was already gone", artifact_id)
    return removed
