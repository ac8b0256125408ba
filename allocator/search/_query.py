"""Read a study back: its trials, its Pareto front, a trial's config and kept weights.

Everything here only reads the store; the query commands and the dashboards use it.
"""

from __future__ import annotations

from typing import Any

from allocator._errors import ConfigError
from allocator.search._objectives import pareto_indices
from allocator.search._store import StudyStore

__all__ = ["pareto_front", "study_record", "trial_rows"]

_STATES = ("complete", "failed", "pruned", "running")


def trial_rows(
    store: StudyStore, study: str, *, state: str | None = None, sort: str | None = None
) -> list[dict[str, Any]]:
    """The study's rows of ``npas_results`` (optionally one state, sorted by a column).

    Example:
        >>> rows = trial_rows(StudyStore("sqlite:///npas.db"), "demo", state="complete")  # doctest: +SKIP
    """
    store.require_study(study)
    if state is not None and state not in _STATES:
        raise ConfigError(f"state must be one of {', '.join(_STATES)}, got {state!r}")
    return store.results(study, state=state, sort=sort)


def pareto_front(store: StudyStore, study: str) -> list[dict[str, Any]]:
    """The Pareto-optimal complete trials, fewest parameters first.

    The front is over the study's own objectives (accuracy and parameters, and the third
    one if the search had it), computed from ``npas_results``.

    Example:
        >>> for row in pareto_front(StudyStore(), "demo"):  # doctest: +SKIP
        ...     print(row["trainable_params"], row["val_accuracy"])
    """
    record = study_record(store, study)
    names = [o["name"] for o in record.get("objectives", [])] or [
        "val_accuracy",
        "trainable_params",
    ]
    directions = [o["direction"] for o in record.get("objectives", [])] or [
        "maximize",
        "minimize",
    ]
    rows = [
        {**(r.get("metrics") or {}), **{k: v for k, v in r.items() if v is not None}}
        for r in store.results(study, state="complete")
    ]  # a user trial's metrics as columns of their own
    rows = [r for r in rows if all(r.get(n) is not None for n in names)]
    points = [[float(r[n]) for n in names] for r in rows]
    front = [rows[i] for i in pareto_indices(points, directions)]
    sign = [-1.0 if d == "maximize" else 1.0 for d in directions]
    return sorted(front, key=lambda r: (r.get("trainable_params") or 0,
                                        *(s * float(r[n]) for s, n in zip(sign, names, strict=True)),
                                        r["trial_number"]))


def study_record(store: StudyStore, study: str) -> dict[str, Any]:
    """What ``npas search`` recorded about a study (settings, space, objectives)."""
    loaded = store.load_study(study)
    record = loaded.user_attrs.get("npas_settings")
    if not isinstance(record, dict):
        raise ConfigError(f"study {study!r} was not made by `npas search` (no npas settings)")
    return record
