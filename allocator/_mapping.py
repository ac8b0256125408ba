"""Parameter mapping: which layers share a parameter group.

Each strategy is a pure function of the slots (and a seed) returning one group index per
slot, with groups numbered from 0 and none empty. ``learned`` lives in ``_learned.py``
because it trains a network first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from allocator._errors import ConfigError
from allocator._layers import Slot
from allocator._vocab import MAPPINGS

__all__ = ["MAPPINGS", "assign_groups", "resolve_groups"]


def resolve_groups(mapping: str, groups: int | None, slots: Sequence[Slot]) -> int | None:
    """Validate ``groups`` for ``mapping``; the count, or None when the mapping derives it."""
    if mapping not in MAPPINGS:
        raise ConfigError(f"unknown mapping {mapping!r}; choose one of: {', '.join(MAPPINGS)}")
    if mapping in ("type", "manual"):
        if groups is not None:
            raise ConfigError(
                f"groups is derived by mapping {mapping!r}, got groups={groups}; leave it unset"
            )
        return None
    if groups is None:
        return 1
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise ConfigError(f"groups must be an int, got {groups!r}")
    if mapping == "single" and groups != 1:
        raise ConfigError(
            f"mapping 'single' uses one group, got groups={groups}; use 'roundrobin', "
            "'random' or 'learned' for more"
        )
    if not 1 <= groups <= len(slots):
        raise ConfigError(
            f"groups must be between 1 and the model's {len(slots)} shareable layers, "
            f"got {groups}"
        )
    return groups


def assign_groups(
    mapping: str,
    slots: Sequence[Slot],
    groups: int | None,
    *,
    seed: int = 0,
    manual_map: Mapping[str, object] | None = None,
) -> list[int]:
    """Group index of every slot under a (non-learned) mapping strategy.

    >>> from allocator._layers import Slot
    >>> slots = [Slot((f"l{i}.weight",), "Linear", (4, 4)) for i in range(5)]
    >>> assign_groups("roundrobin", slots, 2)
    [0, 1, 0, 1, 0]
    """
    count = resolve_groups(mapping, groups, slots)
    if mapping == "single":
        return [0] * len(slots)
    if mapping == "roundrobin":
        assert count is not None
        return [i % count for i in range(len(slots))]
    if mapping == "random":
        assert count is not None
        return _random(len(slots), count, seed)
    if mapping == "type":
        keys: dict[tuple[str, tuple[int, ...]], int] = {}
        return [keys.setdefault((s.kind, s.shape), len(keys)) for s in slots]
    if mapping == "manual":
        return _manual(slots, manual_map)
    raise ConfigError("mapping 'learned' needs training data: pass pretrain= to shapeshift()")


def _random(n: int, count: int, seed: int) -> list[int]:
    """Uniform assignment with every group non-empty: a random layer seeds each group."""
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    out = [0] * n
    for rank, layer in enumerate(order):
        out[layer] = rank if rank < count else rng.randrange(count)
    return out


def _manual(slots: Sequence[Slot], manual_map: Mapping[str, object] | None) -> list[int]:
    """Map layer names to groups; a key is a weight name or the module that owns it."""
    if not manual_map:
        raise ConfigError(
            "mapping 'manual' needs manual_map={layer name: group}; layers: "
            + ", ".join(s.name for s in slots)
        )
    used: set[str] = set()
    labels: list[object] = []
    missing: list[str] = []
    for slot in slots:
        key = next(
            (k for k in (*slot.owners, *(o.rpartition(".")[0] for o in slot.owners)) if k in manual_map),
            None,
        )
        if key is None:
            missing.append(slot.name)
            continue
        used.add(key)
        labels.append(manual_map[key])
    if missing:
        raise ConfigError(
            f"manual_map misses {len(missing)} shareable layer(s): {', '.join(missing)}; "
            "every shareable layer needs a group"
        )
    unknown = sorted(set(manual_map) - used)
    if unknown:
        raise ConfigError(
            f"manual_map names unknown layer(s): {', '.join(unknown)}; shareable layers are: "
            + ", ".join(s.name for s in slots)
        )
    index: dict[object, int] = {}
    try:
        return [index.setdefault(label, len(index)) for label in labels]
    except TypeError as exc:
        raise ConfigError(f"manual_map group labels must be hashable: {exc}") from None
