"""Mapping strategies and the learned mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import allocator
from allocator._layers import Slot
from allocator._learned import cluster_layers
from allocator._mapping import assign_groups
from tests.models import ConvZoo, mlp


def _slots(n: int) -> list[Slot]:
    return [Slot((f"l{i}.weight",), "Linear", (4 + i % 3, 4)) for i in range(n)]


def test_single_puts_every_layer_in_one_group() -> None:
    assert assign_groups("single", _slots(5), None) == [0] * 5


def test_type_groups_same_kind_and_shape() -> None:
    slots = [Slot(("a.weight",), "Linear", (4, 4)), Slot(("b.weight",), "Conv2d", (4, 4)),
             Slot(("c.weight",), "Linear", (4, 4)), Slot(("d.weight",), "Linear", (4, 5))]
    assert assign_groups("type", slots, None) == [0, 1, 0, 2]


def test_roundrobin_cycles() -> None:
    assert assign_groups("roundrobin", _slots(7), 3) == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("seed", range(20))
def test_random_is_seeded_and_never_leaves_a_group_empty(seed) -> None:
    a = assign_groups("random", _slots(9), 4, seed=seed)
    assert a == assign_groups("random", _slots(9), 4, seed=seed)
    assert sorted(set(a)) == [0, 1, 2, 3]


def test_random_differs_across_seeds() -> None:
    runs = {tuple(assign_groups("random", _slots(12), 3, seed=s)) for s in range(10)}
    assert len(runs) > 5


def test_manual_accepts_module_or_weight_names_and_any_labels() -> None:
    model = mlp(depth=3)
    ssn = allocator.shapeshift(model, 0.5, mapping="manual",
                               manual_map={"0": "first", "2.weight": "rest", "4": "rest"})
    assert [r["group"] for r in ssn.allocation().rows()] == [0, 1, 1]


def test_learned_mapping_from_a_loader_makes_nonempty_groups_and_is_saved(tmp_path) -> None:
    torch.manual_seed(0)
    model = ConvZoo()
    x = ConvZoo.example()
    batches = [(x, torch.randint(0, 5, (2,))) for _ in range(4)]
    ssn = allocator.shapeshift(model, 0.3, mapping="learned", groups=3, pretrain=batches)
    groups = [r["group"] for r in ssn.allocation().rows()]
    assert sorted(set(groups)) == [0, 1, 2]
    assert ssn.plan.options["mapping"] == "learned"
    allocator.save(ssn, tmp_path / "learned.pt")
    loaded = allocator.load(tmp_path / "learned.pt", ConvZoo())
    assert [s.group for s in loaded.plan.slots] == groups


def test_learned_mapping_trains_through_a_user_step() -> None:
    torch.manual_seed(0)
    seen: list[nn.Module] = []

    def step(net: nn.Module) -> None:
        seen.append(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            loss = net(torch.randn(8, 32)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    ssn = allocator.shapeshift(mlp(depth=6), 0.2, mapping="learned", groups=2, pretrain=step)
    assert len(seen) == 1 and isinstance(seen[0], allocator.SSN)
    assert len(seen[0].groups) == 1  # pre-trained as one group
    assert all(r["generator"] in ("emb", "emb+inter") for r in seen[0].allocation().rows())
    assert sorted({r["group"] for r in ssn.allocation().rows()}) == [0, 1]


def test_cluster_layers_fills_empty_clusters() -> None:
    same = np.ones((6, 4))
    labels = cluster_layers(same, 3, 0)
    assert sorted(set(labels)) == [0, 1, 2]
