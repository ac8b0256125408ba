"""The allocation plan: every decision of an SSN as plain data.

A :class:`Plan` says which group each weight draws from, the size of every group and
the generator of every layer. It is computed once from the model, the budget and the
options (:func:`make_plan`), is enough to rebuild the SSN's structure, and travels with
the SSN's ``state_dict`` as plain JSON-able data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from allocator._budget import (
    EMB_DIM,
    MASK_WINDOW,
    GroupChoice,
    LayerGen,
    group_floor,
    layer_generator,
    split_budget,
)
from allocator._errors import BudgetError, CheckpointError
from allocator._layers import Owned, Slot, UnsharedWeight

__all__ = [
    "Allocation",
    "GroupPlan",
    "Plan",
    "SlotPlan",
    "largest_unshared",
    "make_plan",
    "make_pretrain_plan",
    "minimum_budget",
]

#: 2: upsampling layers read from their own offsets, and `repeat`/`inter` carry fixed
#: signs; an allocation of format 1 would load into different weights, so it is refused.
#: 3: `avg` mixes ``K`` templates as their sum over ``sqrt(K)``; a format-2 allocation
#: loads unless it has an `avg` layer of two or more templates (its weights would change).
PLAN_FORMAT = 3
#: Templates of the single-group ``emb`` network that the learned mapping pre-trains.
PRETRAIN_TEMPLATES = 4


@dataclass(frozen=True)
class SlotPlan(Owned):
    """One generated weight: its owners, shape, group, generator and window offset."""

    owners: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]
    group: int
    gen: LayerGen
    offset: int


@dataclass(frozen=True)
class GroupPlan:
    """A parameter group: ``size`` shared values, and ``emb_templates`` rows of the
    ``emb`` projection ``A`` (0 when no layer of the group uses ``emb``)."""

    size: int
    k_max: int
    emb_templates: int


@dataclass(frozen=True)
class Plan:
    """Everything needed to rebuild an SSN's structure, as plain data."""

    budget: int
    base_params: int
    unshared: int
    slots: tuple[SlotPlan, ...]
    groups: tuple[GroupPlan, ...]
    options: dict[str, Any] = field(default_factory=dict)
    #: Every parameter left with its layer, and why (the allocation table lists them).
    unshared_weights: tuple[UnsharedWeight, ...] = ()

    @property
    def generator_params(self) -> int:
        own = sum(s.gen.params for s in self.slots)
        return own + sum(g.emb_templates * (EMB_DIM + 1) for g in self.groups)

    @property
    def group_params(self) -> int:
        return sum(g.size for g in self.groups)

    @property
    def trainable(self) -> int:
        return self.unshared + self.group_params + self.generator_params

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "budget": self.budget,
            "base_params": self.base_params,
            "unshared": self.unshared,
            "options": dict(self.options),
            "groups": [asdict(g) for g in self.groups],
            "slots": [
                {
                    "owners": list(s.owners),
                    "kind": s.kind,
                    "shape": list(s.shape),
                    "group": s.group,
                    "offset": s.offset,
                    "gen": asdict(s.gen),
                }
                for s in self.slots
            ],
            "unshared_weights": [
                {"owners": list(u.owners), "shape": list(u.shape), "reason": u.reason,
                 "trainable": u.trainable}
                for u in self.unshared_weights
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        try:
            if data["format"] not in (2, PLAN_FORMAT):
                raise CheckpointError(
                    f"allocation format {data['format']!r} is not supported (expected {PLAN_FORMAT})"
                )
            if data["format"] == 2 and any(
                s["gen"]["combine"] == "avg" and s["gen"]["templates"] > 1 for s in data["slots"]
            ):
                raise CheckpointError(
                    "allocation format 2 has `avg` layers of several templates, whose weights "
                    "this npas computes differently (the templates' sum over sqrt(K), format "
                    f"{PLAN_FORMAT}); load it with the npas that saved it"
                )
            slots = tuple(
                SlotPlan(
                    owners=tuple(str(o) for o in s["owners"]),
                    kind=str(s["kind"]),
                    shape=tuple(int(d) for d in s["shape"]),
                    group=int(s["group"]),
                    offset=int(s["offset"]),
                    gen=LayerGen(**s["gen"]),
                )
                for s in data["slots"]
            )
            groups = tuple(GroupPlan(**g) for g in data["groups"])
            kept = tuple(
                UnsharedWeight(
                    owners=tuple(str(o) for o in u["owners"]),
                    shape=tuple(int(d) for d in u["shape"]),
                    reason=str(u["reason"]),
                    trainable=bool(u["trainable"]),
                )
                for u in data.get("unshared_weights", ())  # absent in files before it
            )
            return cls(
                budget=int(data["budget"]),
                base_params=int(data["base_params"]),
                unshared=int(data["unshared"]),
                slots=slots,
                groups=groups,
                options=dict(data["options"]),
                unshared_weights=kept,
            )
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not an npas allocation: {type(exc).__name__}: {exc}") from None


def _place(slots: Sequence[Slot], assignment: Sequence[int], sizes: Sequence[int],
           gens: Sequence[LayerGen]) -> list[int]:
    """Window offsets: a group's windows laid end to end around its theta.

    A layer larger than its group reads all of theta, rotated: the ``j``-th of ``u``
    such layers starts at ``j * m // u``, so that two of them with the same shape do
    not generate the same weight.
    """
    cursor = [0] * len(sizes)
    upsampling = [0] * len(sizes)
    for group, gen in zip(assignment, gens, strict=True):
        upsampling[group] += gen.expand is not None
    seen = [0] * len(sizes)
    offsets = []
    for group, gen in zip(assignment, gens, strict=True):
        m = sizes[group]
        if gen.expand is not None:
            offsets.append(seen[group] * m // upsampling[group])
            seen[group] += 1
            continue
        offsets.append(cursor[group] % m)
        cursor[group] = (cursor[group] + gen.templates * gen.window) % m
    return offsets


def _members(slots: Sequence[Slot], assignment: Sequence[int]) -> list[list[int]]:
    """Each group's layer sizes."""
    members: list[list[int]] = [[] for _ in range(max(assignment) + 1)]
    for slot, group in zip(slots, assignment, strict=True):
        members[group].append(slot.numel)
    return members


def minimum_budget(slots: Sequence[Slot], unshared: int, assignment: Sequence[int], *,
                   downsample: str, upsample: str, templates: int) -> int:
    """The least budget :func:`make_plan` accepts for this configuration: the unshared
    parameters and every group's :func:`allocator._budget.group_floor`."""
    return unshared + sum(group_floor(g, downsample, upsample, templates)
                          for g in _members(slots, assignment))


def make_plan(
    slots: Sequence[Slot],
    unshared: int,
    base_params: int,
    budget: int,
    assignment: Sequence[int],
    *,
    downsample: str,
    upsample: str,
    templates: int,
    options: dict[str, Any] | None = None,
    unshared_weights: Sequence[UnsharedWeight] = (),
) -> Plan:
    """Split ``budget`` over the groups of ``assignment`` and pick every generator.

    ``unshared_weights`` (from :func:`allocator._layers.inventory`) travel with the plan
    and name the largest of them when the budget is too small."""
    choices = split_budget(budget - unshared, _members(slots, assignment), downsample,
                           upsample, templates)
    if choices is None:
        need = minimum_budget(slots, unshared, assignment, downsample=downsample,
                              upsample=upsample, templates=templates)
        raise BudgetError(
            f"budget {budget:,} is below the minimum {need:,} that this configuration needs "
            f"({unshared:,} unshared parameters plus at least "
            f"{f'{MASK_WINDOW} values' if upsample == 'mask' else 'one value'} per group and the "
            f"generators' own); raise the budget, use fewer groups or another upsample "
            f"generator than {upsample!r}{largest_unshared(unshared_weights)}"
        )
    plan = _assemble(slots, unshared, base_params, budget, assignment, choices,
                     downsample, upsample, options or {})
    return replace(plan, unshared_weights=tuple(unshared_weights))


def largest_unshared(kept: Sequence[UnsharedWeight], count: int = 3) -> str:
    """``"; the largest unshareable weights: a (64x64, 4,096: why), ..."`` or ``""``."""
    largest = sorted((u for u in kept if u.trainable), key=lambda u: -u.numel)[:count]
    if not largest:
        return ""
    named = ", ".join(
        f"{u.name} ({'x'.join(map(str, u.shape))}, {u.numel:,}: {u.reason})" for u in largest
    )
    return f"; the largest unshareable weights: {named}"


def _assemble(
    slots: Sequence[Slot],
    unshared: int,
    base_params: int,
    budget: int,
    assignment: Sequence[int],
    choices: Sequence[GroupChoice],
    down: str,
    up: str,
    options: dict[str, Any],
) -> Plan:
    gens = [
        layer_generator(s.numel, choices[g].size, down, up, choices[g].k_max)
        for s, g in zip(slots, assignment, strict=True)
    ]
    sizes = [c.size for c in choices]
    offsets = _place(slots, assignment, sizes, gens)
    emb_k = [0] * len(choices)
    for gen, g in zip(gens, assignment, strict=True):
        if gen.combine == "emb":
            emb_k[g] = max(emb_k[g], gen.templates)
    return Plan(
        budget=budget,
        base_params=base_params,
        unshared=unshared,
        slots=tuple(
            SlotPlan(s.owners, s.kind, s.shape, g, gen, off)
            for s, g, gen, off in zip(slots, assignment, gens, offsets, strict=True)
        ),
        groups=tuple(GroupPlan(c.size, c.k_max, k) for c, k in zip(choices, emb_k, strict=True)),
        options=options,
    )


def make_pretrain_plan(slots: Sequence[Slot], unshared: int, base_params: int, budget: int) -> Plan:
    """The single-group network the ``learned`` mapping trains first: every layer mixes
    ``PRETRAIN_TEMPLATES`` windows through ``emb`` (interpolating where it is larger than
    the group), so that every layer learns an embedding to cluster."""
    k = PRETRAIN_TEMPLATES
    fixed = unshared + len(slots) * EMB_DIM + k * (EMB_DIM + 1)
    # Not the user's budget when that is too small to learn from: this network is only
    # trained to find the groups and is thrown away.
    m = max(budget - fixed, max(s.numel for s in slots) // 4, 1)
    gens = []
    for s in slots:
        window = min(s.numel, m)
        gens.append(LayerGen("emb", k, window, "inter" if window < s.numel else None, EMB_DIM))
    cursor, offsets = 0, []
    for gen in gens:
        offsets.append(cursor % m)
        cursor += gen.templates * gen.window
    return Plan(
        budget=max(budget, fixed + m),
        base_params=base_params,
        unshared=unshared,
        slots=tuple(
            SlotPlan(s.owners, s.kind, s.shape, 0, gen, off)
            for s, gen, off in zip(slots, gens, offsets, strict=True)
        ),
        groups=(GroupPlan(m, k, k),),
        options={"mapping": "pretrain"},
    )


class Allocation:
    """What an SSN allocated: a table with one row per generated weight, and totals.

    ``str(allocation)`` is the table; :meth:`to_dict` is JSON-able.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    @property
    def budget(self) -> int:
        return self.plan.budget

    @property
    def trainable(self) -> int:
        return self.plan.trainable

    @property
    def by_kind(self) -> dict[str, int]:
        return {
            "groups": self.plan.group_params,
            "generators": self.plan.generator_params,
            "unshared": self.plan.unshared,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "layer": " = ".join(s.owners),
                "kind": s.kind,
                "shape": "x".join(str(d) for d in s.shape),
                "weights": s.numel,
                "group": s.group,
                "generator": s.gen.name,
                "templates": s.gen.templates,
                "params": s.gen.params,
            }
            for s in self.plan.slots
        ]

    def unshared_rows(self) -> list[dict[str, Any]]:
        """One row per parameter left with its layer: name(s), shape, count, reason."""
        return [
            {
                "layer": " = ".join(u.owners),
                "shape": "x".join(str(d) for d in u.shape),
                "params": u.numel if u.trainable else 0,
                "reason": u.reason,
            }
            for u in self.plan.unshared_weights
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "trainable": self.trainable,
            "base_params": self.plan.base_params,
            "by_kind": self.by_kind,
            "groups": [asdict(g) for g in self.plan.groups],
            "options": dict(self.plan.options),
            "layers": self.rows(),
            "unshared": self.unshared_rows(),
        }

    def __str__(self) -> str:
        lines = _table(self.rows(), ["layer", "shape", "group", "generator", "templates", "params"])
        kept = self.unshared_rows()
        if kept:
            lines += ["", "not shared:"]
            lines += _table(kept, ["layer", "shape", "params", "reason"])
        p = self.plan
        lines.append("")
        for i, g in enumerate(p.groups):
            lines.append(f"group {i}: {g.size:,} shared parameters, templates <= {g.k_max}")
        used = 100.0 * self.trainable / self.budget
        lines.append(
            f"trainable {self.trainable:,} of budget {self.budget:,} ({used:.2f} %); "
            f"groups {p.group_params:,}, generators {p.generator_params:,}, "
            f"unshared {p.unshared:,}; the model has {p.base_params:,}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Allocation(trainable={self.trainable}, budget={self.budget})"


def _table(rows: Sequence[dict[str, Any]], cols: list[str]) -> list[str]:
    """Rows as aligned text lines under a header and a rule."""
    table = [cols] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
