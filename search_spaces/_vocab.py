"""The vocabulary of a search space: which trial-config fields can be searched.

Every dimension of a space is named after a field of a trial configuration (the
``trials.TrialConfig`` dataclass; this package does not import it, the names are
repeated here and a test pins them to each other). Each field has a type, a domain, and
possibly a rule saying when it matters at all (``allocator._vocab.RULES``, the one
definition the trials and the dashboards read too): ``templates`` only for the
downsampling generators that use templates, ``groups`` only for mapping strategies that
take a group count, every SSN knob only for ``method = "ssn"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from allocator._vocab import DEFAULTS, DOWNSAMPLE, MAPPINGS, METHODS, RULES, UPSAMPLE

__all__ = ["FIELDS", "FIXED_ONLY", "RULES", "Field", "check_value"]


@dataclass(frozen=True)
class Field:
    """One searchable trial-config field: its Python type and its domain."""

    name: str
    kind: type
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive lower bound
    low_open: bool = False  # True: the lower bound itself is excluded
    high_open: float | None = None  # exclusive upper bound
    help: str = ""

    def describe(self) -> str:
        """What is allowed, in words: ``an integer >= 1``, ``one of wavg, emb``."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a number", str: "a string"}[self.kind]
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high_open is not None:
            parts.append(f"< {self.high_open:g}")
        return noun + (" " + " and ".join(parts) if parts else "")



#: Fields a space may search (``dims``) or pin (``fixed``).
FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("method", str, METHODS, help="full network, SSN, or a baseline"),
        Field("budget", float, low=0.0, low_open=True, help="fraction of the model's params"),
        Field("groups", int, low=1, help="number of parameter groups P"),
        Field("templates", int, low=1, help="maximum templates per layer K_max"),
        Field("downsample", str, DOWNSAMPLE, help="generator when a layer is smaller"),
        Field("upsample", str, UPSAMPLE, help="generator when a layer is larger"),
        Field("mapping", str, MAPPINGS, help="which layers share a group"),
        Field("pretrain_epochs", int, low=0, help="epochs of the `learned` mapping's pretraining"),
        Field("epochs", int, low=1, help="training epochs"),
        Field("batch_size", int, low=1, help="training batch size"),
        Field("optimizer", str, help="optimiser name"),
        Field("lr", float, low=0.0, low_open=True, help="learning rate"),
        Field("weight_decay", float, low=0.0, help="weight decay"),
        Field("schedule", str, help="learning-rate schedule name"),
        Field("label_smoothing", float, low=0.0, high_open=1.0, help="label smoothing"),
        Field("grad_clip", float, low=0.0, help="gradient-norm clip (0: off)"),
    )
}

#: Fields a space may pin in ``fixed`` but never search.
FIXED_ONLY: dict[str, str] = {
    "manual_map": "a table layer name -> group, needed by mapping = manual",
}

#: Values assumed for a rule's field when the space neither searches nor pins it (the
#: trials' own defaults: downsample None is `slice` below the model's size, `wavg` up).
RULE_DEFAULTS: Mapping[str, Any] = {"method": "ssn", "downsample": DEFAULTS["downsample"]}


def check_value(field: Field, value: Any) -> str | None:
    """Why ``value`` is not in ``field``'s domain, or ``None`` when it is."""
    if isinstance(value, bool) or not _is_kind(field.kind, value):
        return f"must be {field.describe()}, got {value!r}"
    if field.choices is not None and value not in field.choices:
        return f"must be {field.describe()}, got {value!r}"
    if field.low is not None and (
        value < field.low or (field.low_open and value == field.low)
    ):
        return f"must be {field.describe()}, got {value!r}"
    if field.high_open is not None and value >= field.high_open:
        return f"must be {field.describe()}, got {value!r}"
    return None


def _is_kind(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
