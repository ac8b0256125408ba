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


@pytest.mark.filterwarnings("error")
def test_cluster_layers_fills_empty_clusters() -> None:
    """Coinciding rows leave k-means clusters empty; each gets a layer, without sklearn's
    warning about it reaching the user."""
    same = np.ones((6, 4))
    labels = cluster_layers(same, 3, 0)
    assert sorted(set(labels)) == [0, 1, 2]


class _Returns(nn.Module):
    """An mlp whose forward returns its logits wrapped as ``kind`` says."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = mlp(width=8, depth=3, classes=3)
        self.kind = kind

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> object:
        logits = self.net(x)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        if self.kind == "dict":
            return {"logits": logits, "loss": loss}
        if self.kind == "tuple":
            return (logits, logits.detach())
        if self.kind == "object":
            return type("Output", (), {"logits": logits, "loss": loss})()
        return "not a tensor"


def _pairs(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 8, generator=g), torch.randint(0, 3, (6,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("kind", ["dict", "tuple", "object"])
def test_learned_pretraining_reads_the_logits_of_structured_outputs(kind: str) -> None:
    ssn = allocator.shapeshift(_Returns(kind), 0.5, mapping="learned", groups=2,
                               pretrain=_pairs())
    assert sorted({s.group for s in ssn.plan.slots}) == [0, 1]


@pytest.mark.parametrize("kind", ["dict", "object"])
def test_learned_pretraining_uses_the_models_own_loss_on_dict_batches(kind: str) -> None:
    batches = [{"x": x, "labels": y} for x, y in _pairs()]
    allocator.shapeshift(_Returns(kind), 0.5, mapping="learned", groups=2, pretrain=batches)


def test_learned_pretraining_takes_a_loss_function() -> None:
    calls: list[tuple[str, bool]] = []

    def loss(output: object, targets: object) -> torch.Tensor:
        calls.append((type(output).__name__, targets is None))
        assert isinstance(output, tuple)
        return output[0].square().mean()

    allocator.shapeshift(_Returns("tuple"), 0.5, mapping="learned", groups=2,
                         pretrain=[{"x": x} for x, _ in _pairs()], pretrain_loss=loss)
    assert calls == [("tuple", True)] * 3


@pytest.mark.parametrize(("kind", "batches", "loss", "match"), [
    ("string", _pairs(1), None, "got a str from the model; it needs a tensor of logits"),
    ("tuple", [{"x": _pairs(1)[0][0]}], None, "no targets in the batch"),
    ("dict", [(_pairs(1)[0][0],)], None, "an .inputs, targets. pair or a dict"),
    ("dict", [(_pairs(1)[0][0], torch.zeros(6, 2))], None, "cross-entropy of the model's logits"),
    ("dict", _pairs(1), lambda out, y: out["logits"], "must be a scalar float tensor"),
    ("dict", _pairs(1), "not callable", "pretrain_loss must be a callable"),
])
def test_learned_pretraining_refuses_what_it_cannot_train_on(kind, batches, loss, match) -> None:
    with pytest.raises(allocator.ConfigError, match=match):
        allocator.shapeshift(_Returns(kind), 0.5, mapping="learned", groups=2,
                             pretrain=batches, pretrain_loss=loss)


def test_pretrain_loss_goes_with_the_learned_mapping_only() -> None:
    with pytest.raises(allocator.ConfigError, match="mapping 'learned' only"):
        allocator.shapeshift(mlp(), 0.5, pretrain_loss=lambda out, y: out.sum())
    with pytest.raises(allocator.ConfigError, match="goes with an iterable pretrain"):
        allocator.shapeshift(mlp(), 0.5, mapping="learned", groups=2,
                             pretrain=lambda net: None, pretrain_loss=lambda out, y: out.sum())
