"""The vocabulary of a parameter allocation, defined once: method, generator and mapping
names, and which trial field applies when.

The SSN core (``_budget``, ``_mapping``), the trial configuration (``trials.config``),
the search spaces (``search_spaces._vocab``) and the dashboards (``dashboards._plots``)
all read these names from here; none keeps a copy.

Example:
    >>> from allocator._vocab import RULES, applies
    >>> applies("groups", {"method": "ssn", "mapping": "roundrobin"})
    True
    >>> applies("templates", {"method": "ssn", "downsample": "slice"})
    False
    >>> applies("templates", {"method": "ssn", "downsample": None})  # the default
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BASELINES",
    "DEFAULTS",
    "DOWNSAMPLE",
    "GROUPED",
    "MAPPINGS",
    "METHODS",
    "RULES",
    "SSN_FIELDS",
    "TEMPLATED",
    "UPSAMPLE",
    "applies",
]

#: Parameter methods: the full network, a Shapeshifter Network, and two baselines.
METHODS: tuple[str, ...] = ("full", "ssn", "reduced_width", "hashed")
#: The methods an SSN is compared with.
BASELINES: tuple[str, ...] = ("full", "reduced_width", "hashed")
#: Generators for a layer smaller than its group (combine templates of the group).
DOWNSAMPLE: tuple[str, ...] = ("wavg", "emb", "avg", "slice")
#: Generators for a layer larger than its group (expand the group).
UPSAMPLE: tuple[str, ...] = ("repeat", "inter", "hash", "mask")
#: Strategies that map layers to parameter groups.
MAPPINGS: tuple[str, ...] = ("single", "type", "roundrobin", "random", "manual", "learned")

#: An SSN's settings where the user gives none: ``shapeshift``'s keyword defaults, the
#: trials' (``TrialConfig``) and the CLI's (chosen by measurement, ``docs/ssn.md``).
#: ``downsample`` None: ``slice`` below the model's size, ``wavg`` from it up
#: (``allocator._budget.downsample_for``).
DEFAULTS: dict[str, Any] = {"mapping": "single", "templates": 4, "downsample": None,
                            "upsample": "hash"}

#: Downsampling generators that mix several templates (``templates`` matters for them).
TEMPLATED: frozenset[str] = frozenset({"wavg", "emb", "avg"})
#: Mappings that take a group count (``groups`` matters for them).
GROUPED: frozenset[str] = frozenset({"roundrobin", "random", "learned"})

_SSN = frozenset({"ssn"})

#: When a field matters: field -> {other field: values it must take}. All must hold.
RULES: dict[str, dict[str, frozenset[Any]]] = {
    "budget": {"method": frozenset({"ssn", "reduced_width", "hashed"})},
    "groups": {"method": _SSN, "mapping": GROUPED},
    # downsample None, the default, is `wavg` from the model's size up: templates count
    "templates": {"method": _SSN, "downsample": TEMPLATED | {None}},
    "downsample": {"method": _SSN},
    "upsample": {"method": _SSN},
    "mapping": {"method": _SSN},
    "pretrain_epochs": {"method": _SSN, "mapping": frozenset({"learned"})},
    "manual_map": {"method": _SSN, "mapping": frozenset({"manual"})},
}

#: The fields that only an SSN uses.
SSN_FIELDS: frozenset[str] = frozenset(
    name for name, rule in RULES.items() if rule.get("method") == _SSN
)


def applies(name: str, values: Mapping[str, Any]) -> bool:
    """Whether field ``name`` matters for a trial whose other fields are ``values``
    (a field the rule names but ``values`` lacks counts as not matching)."""
    return all(values.get(key) in allowed for key, allowed in RULES.get(name, {}).items())
