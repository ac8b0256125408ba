"""``npas_results``: one flat row per trial, beside Optuna's own tables.

Optuna's schema spreads a trial over five tables (params, values, attributes); this one
table holds everything a user wants to plot or filter with plain SQL or pandas:

    SELECT budget, mapping, val_accuracy, trainable_params
    FROM npas_results WHERE study = 'demo' AND state = 'complete';

Only the search controller writes it. docs/search.md documents every column.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

__all__ = [
    "CONFIG_COLUMNS", "CONTROLLERS", "LAUNCH_LEASES", "METRIC_COLUMNS", "RESULTS", "metadata",
    "row_for",
]

metadata = sa.MetaData()

#: Trial-config fields and their column types (every field of trials.TrialConfig).
CONFIG_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "model": sa.String(256),
    "data": sa.String(256),
    "data_root": sa.Text(),
    "data_size": sa.Integer(),
    "method": sa.String(32),
    "budget": sa.Float(),
    "groups": sa.Integer(),
    "templates": sa.Integer(),
    "downsample": sa.String(32),
    "upsample": sa.String(32),
    "mapping": sa.String(32),
    "manual_map": sa.Text(),  # JSON
    "pretrain_epochs": sa.Integer(),
    "epochs": sa.Integer(),
    "batch_size": sa.Integer(),
    "optimizer": sa.String(32),
    "lr": sa.Float(),
    "weight_decay": sa.Float(),
    "schedule": sa.String(32),
    "label_smoothing": sa.Float(),
    "grad_clip": sa.Float(),
    "seed": sa.Integer(),
    "threads": sa.Integer(),
    "device": sa.String(32),
    "amp": sa.Boolean(),
    "max_steps_per_epoch": sa.Integer(),
    "eval_test": sa.Boolean(),
    "trial": sa.String(512),  # the user's trial function, MODULE:FUNCTION
    "hp": sa.Text(),  # JSON: the user's own hyperparameters
}

#: Measurements of trials.TrialResult, flattened.
METRIC_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "val_accuracy": sa.Float(),
    "val_loss": sa.Float(),
    "test_accuracy": sa.Float(),
    "test_loss": sa.Float(),
    "trainable_params": sa.BigInteger(),
    "params_by_kind": sa.Text(),  # JSON
    "flops": sa.BigInteger(),
    "train_time_s": sa.Float(),
    "step_time_s": sa.Float(),
    "peak_memory_bytes": sa.BigInteger(),
    "epochs_run": sa.Integer(),
    "steps": sa.Integer(),
    "method_info": sa.Text(),  # JSON
    "metrics": sa.Text(),  # JSON: what a user's trial function returned
}

RESULTS = sa.Table(
    "npas_results",
    metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("trial_number", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("trial_id", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("retry_of", sa.Integer()),
    *(sa.Column(name, type_) for name, type_ in CONFIG_COLUMNS.items()),
    *(sa.Column(name, type_) for name, type_ in METRIC_COLUMNS.items()),
    sa.Column("started_at", sa.DateTime()),
    sa.Column("finished_at", sa.DateTime()),
    sa.Column("duration_s", sa.Float()),
    sa.Column("host", sa.String(256)),
    sa.Column("node_id", sa.String(128)),
    sa.Column("worker_pid", sa.Integer()),
    sa.Column("failure_reason", sa.Text()),
    sa.Column("controller", sa.String(32)),  # id of the controller that ran it (npas_controllers)
    sa.Column("engine", sa.String(16)),  # what ran it: pool (Ray actors) or tune (Ray Tune)
    sa.Column("rung", sa.Integer()),  # a pruned trial: the epoch early stopping stopped it at
    sa.Index("ix_npas_results_study_state", "study", "state"),
)

#: One row per controller that ran a study (``npas search``, ``--resume``): who it is, where
#: it runs and when it was last seen alive (see allocator/search/_sharing.py).
CONTROLLERS = sa.Table(
    "npas_controllers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("study", sa.String(512), nullable=False),
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer()),
    sa.Column("process", sa.String(256)),  # boot id, pid namespace, pid, start: same-machine check
    sa.Column("started_at", sa.Float()),  # Unix seconds, database clock
    sa.Column("heartbeat_at", sa.Float()),  # Unix seconds, database clock
    sa.Column("state", sa.String(16), nullable=False),  # running | stopped
    sa.Index("ix_npas_controllers_study", "study"),
)

#: One row per study: the controller that may launch a trial right now (a lease).
LAUNCH_LEASES = sa.Table(
    "npas_launch_leases",
    metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("holder", sa.String(32)),
    sa.Column("since", sa.Float()),  # Unix seconds, database clock
)

_JSON_COLUMNS = {"manual_map", "params_by_kind", "method_info", "hp", "metrics"}
_INTS = {name for name, t in {**CONFIG_COLUMNS, **METRIC_COLUMNS}.items() if isinstance(t, sa.Integer)}


def row_for(
    *,
    study: str,
    trial_number: int,
    trial_id: int,
    state: str,
    config: Mapping[str, Any] | None = None,
    result: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A row of ``npas_results`` from a trial's config and result dicts.

    Keys outside the table are dropped; JSON-valued fields are serialised; NaN and
    infinities become NULL (not every database stores them).

    Example:
        >>> row = row_for(study="s", trial_number=0, trial_id=1, state="complete",
        ...               config={"budget": 0.5}, result={"val_accuracy": 0.9})
        >>> row["budget"], row["val_accuracy"], row["state"]
        (0.5, 0.9, 'complete')
    """
    row: dict[str, Any] = {
        "study": study,
        "trial_number": trial_number,
        "trial_id": trial_id,
        "state": state,
    }
    for source, columns in ((config or {}, CONFIG_COLUMNS), (result or {}, METRIC_COLUMNS)):
        for name in columns:
            if name in source:
                row[name] = _cell(name, source[name])
    for name, value in extra.items():
        if name in RESULTS.c:
            row[name] = _cell(name, value)
    return row


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _JSON_COLUMNS:
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if name in _INTS and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value
