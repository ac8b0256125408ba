"""The budget arithmetic: never above the budget, and (nearly) all of it used."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import allocator
from allocator._budget import (
    DOWNSAMPLE,
    UPSAMPLE,
    group_capacity,
    group_cost,
    group_floor,
    layer_generator,
    resolve_budget,
    smallest_group,
    split_budget,
)
from allocator._layers import Slot
from allocator._mapping import assign_groups
from allocator._plan import make_plan

MAPPINGS = ("single", "type", "roundrobin", "random")


def _slots(shapes: list[tuple[int, ...]]) -> list[Slot]:
    return [Slot((f"layer{i}.weight",), "Linear" if len(s) == 2 else "Conv2d", s)
            for i, s in enumerate(shapes)]


shape = st.one_of(
    st.tuples(st.integers(4, 96), st.integers(4, 96)),
    st.tuples(st.integers(4, 48), st.integers(1, 48), st.sampled_from([1, 3]), st.sampled_from([1, 3])),
)
config = st.fixed_dictionaries(
    {
        "shapes": st.lists(shape, min_size=1, max_size=12),
        "unshared": st.integers(0, 2000),
        "down": st.sampled_from(DOWNSAMPLE),
        "up": st.sampled_from(UPSAMPLE),
        "templates": st.integers(1, 8),
        "mapping": st.sampled_from(MAPPINGS),
        "groups": st.integers(1, 6),
        "fraction": st.floats(0.0, 1.0),
        "seed": st.integers(0, 10),
    }
)


def _limits(members: list[list[int]], unshared: int, down: str, up: str, k: int) -> tuple[int, int]:
    low = unshared + sum(group_floor(g, down, up, k) for g in members)
    high = unshared + sum(group_cost(group_capacity(g, down, k), g, down, up, k) for g in members)
    return low, high


@settings(max_examples=400, deadline=None)
@given(config)
def test_budget_is_never_exceeded_and_nearly_all_used(cfg: dict) -> None:
    slots = _slots(cfg["shapes"])
    mapping = cfg["mapping"]
    groups = None if mapping in ("type", "single") else min(cfg["groups"], len(slots))
    assignment = assign_groups(mapping, slots, groups, seed=cfg["seed"])
    members: list[list[int]] = [[] for _ in range(max(assignment) + 1)]
    for s, g in zip(slots, assignment, strict=True):
        members[g].append(s.numel)
    low, high = _limits(members, cfg["unshared"], cfg["down"], cfg["up"], cfg["templates"])
    # Budgets from the minimum to 20 % above what the configuration can use.
    budget = low + math.floor(cfg["fraction"] * (1.2 * high - low))
    plan = make_plan(slots, cfg["unshared"], 10**6, budget, assignment, downsample=cfg["down"],
                     upsample=cfg["up"], templates=cfg["templates"])
    assert plan.trainable <= budget
    # Up to one window of templates per layer, the count grows with the budget in steps of
    # one parameter; past it, a group grows a whole template at a time (with its
    # coefficients), so a budget between two template counts keeps the smaller.
    one_window = _limits(members, cfg["unshared"], cfg["down"], cfg["up"], 1)[1]
    assert plan.trainable >= 0.995 * min(budget, one_window)
    if budget >= high:
        assert plan.trainable >= 0.995 * high
    # every group holds at least one value, and with `mask` a mask window's worth
    assert all(g.size >= smallest_group(sizes, cfg["up"]) >= 1
               for g, sizes in zip(plan.groups, members, strict=True))


@settings(max_examples=200, deadline=None)
@given(config)
def test_budget_below_the_minimum_is_refused_with_the_minimum(cfg: dict) -> None:
    slots = _slots(cfg["shapes"])
    assignment = assign_groups("single", slots, None)
    low, _ = _limits([[s.numel for s in slots]], cfg["unshared"], cfg["down"], cfg["up"],
                     cfg["templates"])
    with pytest.raises(allocator.BudgetError, match=f"minimum {low:,}"):
        make_plan(slots, cfg["unshared"], 10**6, low - 1, assignment, downsample=cfg["down"],
                  upsample=cfg["up"], templates=cfg["templates"])


@settings(max_examples=60, deadline=None)
@given(
    widths=st.lists(st.integers(2, 40), min_size=2, max_size=6),
    fraction=st.floats(0.05, 5.0),
    down=st.sampled_from(DOWNSAMPLE),
    up=st.sampled_from(UPSAMPLE),
    groups=st.integers(1, 3),
)
def test_real_ssn_trains_exactly_the_planned_count(widths, fraction, down, up, groups) -> None:
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(a, b), nn.Tanh()]
    model = nn.Sequential(*layers)
    groups = min(groups, len(widths) - 1)
    try:
        count = resolve_budget(fraction, allocator.count_parameters(model))
        ssn = allocator.shapeshift(model, fraction, downsample=down, upsample=up,
                                   mapping="roundrobin", groups=groups)
    except allocator.BudgetError:
        return  # below the configuration's minimum: refused, tested above
    trained = allocator.count_parameters(ssn)
    assert trained == ssn.allocation().trainable <= count


def test_generator_choice_follows_sizes() -> None:
    assert layer_generator(100, 100, "emb", "inter", 4).name == "slice"
    assert layer_generator(100, 400, "emb", "inter", 4).templates == 4
    assert layer_generator(100, 401, "emb", "inter", 4).templates == 4  # capped at k_max
    assert layer_generator(100, 250, "avg", "inter", 8).templates == 3
    assert layer_generator(100, 400, "slice", "inter", 4).templates == 1
    assert layer_generator(100, 50, "emb", "repeat", 4).name == "repeat"
    assert layer_generator(100, 50, "emb", "mask", 4).params == math.ceil(50 / 9)


def test_split_is_proportional_to_group_weights() -> None:
    choices = split_budget(10_000, [[3000, 3000], [4000]], "slice", "inter", 1)
    assert choices is not None
    assert [c.size for c in choices] == [6000, 4000]
    low = split_budget(1_000, [[3000, 3000], [4000]], "emb", "inter", 4)
    assert low is not None
    assert sum(c.cost for c in low) == 1_000
    assert abs(low[0].size / low[1].size - 1.5) < 0.01


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(0.5, 500), (4.0, 4000), (250, 250), (1e-3, 1)],
)
def test_budget_int_is_a_count_and_float_a_fraction(budget, expected) -> None:
    assert resolve_budget(budget, 1000) == expected


@pytest.mark.parametrize("budget", [0, -1, 0.0, -0.5, float("nan"), float("inf"), 1e-9, "abc", True])
def test_bad_budgets_are_refused(budget) -> None:
    with pytest.raises(allocator.BudgetError, match="budget"):
        resolve_budget(budget, 1000)


def test_high_budget_gives_every_layer_several_templates() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    ssn = allocator.shapeshift(model, 4.0, mapping="roundrobin", groups=3)
    rows = ssn.allocation().rows()
    assert all(r["templates"] == 4 for r in rows)
    assert allocator.count_parameters(ssn) > 3.9 * allocator.count_parameters(model)


def test_budget_docstring_examples_run() -> None:
    import doctest

    import allocator._budget as budget_module

    assert doctest.testmod(budget_module).failed == 0
