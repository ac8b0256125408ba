"""Baselines: reduced width fits the budget, HashedNets hit it exactly and train."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from allocator import BudgetError, count_parameters
from trials.baselines import (
    HashedNet,
    hash_positions,
    hashed,
    materialize_hashed,
    reduced_width,
)
from trials.zoo import build_model

torch.set_num_threads(1)

SHAPES = {"mlp": (1, 40), "cnn1d": (1, 40)}


class _Seq2Class(nn.Module):
    """Embedding + LSTM + multi-head attention + tied output: every hashable kind."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.rnn = nn.LSTM(16, 16, num_layers=2, batch_first=True)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.out = nn.Linear(16, 20)
        self.out.weight = self.embed.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(tokens))
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        return self.out(h.mean(1))


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )


# --- reduced width --------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["mlp", "cnn1d"])
@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_reduced_width_fits_and_is_the_widest_that_does(spec: str, fraction: float) -> None:
    kw: dict[str, Any] = {"input_shape": SHAPES[spec], "num_classes": 10}
    budget = int(fraction * count_parameters(build_model(spec, **kw)))
    width = reduced_width(spec, budget, **kw)
    assert 0 < width < 1
    assert count_parameters(build_model(spec, width=width, **kw)) <= budget
    assert count_parameters(build_model(spec, width=min(1.0, width * 1.1), **kw)) > budget


def test_reduced_width_above_the_full_model_is_width_one() -> None:
    kw: dict[str, Any] = {"input_shape": (1, 40), "num_classes": 10}
    full = count_parameters(build_model("mlp", **kw))
    assert reduced_width("mlp", full, **kw) == 1.0
    assert reduced_width("mlp", 10 * full, **kw) == 1.0


def test_reduced_width_below_the_narrowest_model_names_the_minimum() -> None:
    with pytest.raises(BudgetError, match=r"budget must be >= \d+"):
        reduced_width("mlp", 5, input_shape=(1, 40), num_classes=10)


# --- HashedNets -----------------------------------------------------------------------


@pytest.mark.parametrize("budget", [200, 1_000, 0.1, 2.0])
def test_hashed_counts_exactly_the_budget(budget: int | float) -> None:
    torch.manual_seed(0)
    model = _conv_net()
    full = count_parameters(model)
    net = hashed(model, budget, seed=1)
    want = budget if isinstance(budget, int) else int(budget * full)
    assert count_parameters(net) == want
    assert net.by_kind["hashed"] + net.by_kind["unshared"] == want
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_hashed_leaves_no_dense_weight_trainable() -> None:
    net = hashed(_conv_net(), 500)
    assert "shared" in dict(net.named_parameters())
    assert all(p.dim() == 1 for p in net.parameters())  # biases, norms, the array


def test_hashed_below_unshared_parameters_names_the_minimum() -> None:
    model = _conv_net()
    with pytest.raises(BudgetError, match=r"budget must be >= \d+"):
        hashed(model, 10)


def test_gradients_reach_the_shared_array_from_every_layer_kind() -> None:
    torch.manual_seed(0)
    net = hashed(_Seq2Class(), 0.3, seed=3)
    tokens = torch.randint(0, 20, (4, 7))
    net(tokens).pow(2).sum().backward()
    assert net.shared.grad is not None and net.shared.grad.abs().sum() > 0
    # a second step sees the updated array (the LSTM does not keep stale weights)
    before = net(tokens).detach()
    with torch.no_grad():
        net.shared.add_(0.1)
    assert not torch.allclose(net(tokens), before)


def test_hashes_are_deterministic_and_seeded() -> None:
    a = hash_positions(0, 2, 1000, 97)
    b = hash_positions(0, 2, 1000, 97)
    c = hash_positions(1, 2, 1000, 97)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert (a[0] != c[0]).any()
    assert a[0].min() >= 0 and a[0].max() < 97
    assert 0.4 < (a[1] > 0).mean() < 0.6
    assert len(set(a[0].tolist())) == 97  # every slot of the array is used


def test_shared_array_starts_at_the_layers_scale() -> None:
    torch.manual_seed(0)
    model = _conv_net()
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in layers])
    net = hashed(model, 2_000)
    assert net.shared.std().item() == pytest.approx(weights.pow(2).mean().sqrt().item(), rel=0.1)


@pytest.mark.parametrize("make", [_conv_net, _Seq2Class])
def test_materialize_hashed_equals_the_hashed_model(make: type) -> None:
    torch.manual_seed(0)
    net = hashed(make(), 0.4)
    x = torch.randint(0, 20, (2, 5)) if make is _Seq2Class else torch.randn(2, 1, 8, 8)
    net.eval()
    plain = materialize_hashed(net).eval()
    assert type(plain) is type(make())
    assert torch.allclose(plain(x), net(x), atol=1e-6)
    fresh = make()
    fresh.load_state_dict(plain.state_dict())
    assert torch.allclose(fresh.eval()(x), net(x), atol=1e-6)
    assert net(x).shape == plain(x).shape  # the hashed model still works afterwards


def test_materialize_keeps_tied_weights_tied() -> None:
    plain = materialize_hashed(hashed(_Seq2Class(), 0.5))
    assert isinstance(plain, _Seq2Class)
    assert plain.out.weight is plain.embed.weight


def test_hashed_net_deep_copies_after_a_forward_pass() -> None:
    net = hashed(_Seq2Class(), 0.5)
    net(torch.randint(0, 20, (2, 3))).sum().backward()
    other = copy.deepcopy(net)
    assert isinstance(other, HashedNet)
    assert other.shared is not net.shared
    tokens = torch.randint(0, 20, (2, 3))
    assert torch.allclose(other.eval()(tokens), net.eval()(tokens))


def test_a_model_that_is_one_layer_hashes_and_materializes() -> None:
    net = hashed(nn.Linear(4, 3), 10)
    x = torch.randn(2, 4)
    plain = materialize_hashed(net)
    assert type(plain) is nn.Linear and count_parameters(plain) == 15
    assert torch.equal(plain(x), net(x))


def test_hashed_embedding_keeps_its_padding_row_zero() -> None:
    model = nn.Sequential(nn.Embedding(10, 4, padding_idx=1), nn.Linear(4, 3))
    net = hashed(model, 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        net(torch.tensor([[1, 2, 1]])).square().sum().backward()
        opt.step()
    plain = materialize_hashed(net)
    assert plain[0].padding_idx == 1 and torch.equal(plain[0].weight[1], torch.zeros(4))
