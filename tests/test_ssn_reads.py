"""One read of each group per forward gives the same weights and gradients as reading
every layer's windows on its own."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import allocator
from allocator._generators import ParameterGroup
from allocator._plan import GroupPlan
from tests.models import ConvZoo, TiedLanguageModel, mlp


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 40), lengths=st.lists(st.integers(1, 90), min_size=1, max_size=12))
def test_laps_are_theta_tiled_and_cut(m, lengths) -> None:
    group = ParameterGroup(GroupPlan(m, 1, 0), dtype=torch.float32, device=torch.device("cpu"))
    with torch.no_grad():
        group.theta.copy_(torch.arange(float(m)))
    tape = torch.arange(float(m)).repeat(-(-sum(lengths) // m) + 1)
    start = 0
    for n, part in zip(lengths, group._split_laps(lengths), strict=True):
        assert torch.equal(part, tape[start : start + n])
        start += n


def _build(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    if name == "mlp":
        return mlp(), (torch.randn(4, 32),)
    cls = {"tied_lm": TiedLanguageModel, "conv_zoo": ConvZoo}[name]
    return cls(), cls.example()


@pytest.mark.parametrize(("name", "budget", "options"), [
    ("mlp", 4.0, {"templates": 4}),
    ("mlp", 0.3, {}),
    ("conv_zoo", 2.5, {"downsample": "emb"}),
    ("conv_zoo", 0.2, {"mapping": "roundrobin", "groups": 2, "upsample": "repeat"}),
    ("tied_lm", 1.5, {"downsample": "avg"}),
    ("tied_lm", 0.3, {"upsample": "mask"}),
])
def test_grouped_reads_match_per_layer_reads(name, budget, options) -> None:
    model, x = _build(name)
    ssn = allocator.shapeshift(model, budget, **options)
    grads = []
    outs = []
    for call in (ssn, ssn.model):  # ssn(...) reads each group once; ssn.model per layer
        ssn.zero_grad(set_to_none=True)
        out = call(*x)
        out = out[0] if isinstance(out, tuple) else out
        out.float().pow(2).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in ssn.parameters() if p.grad is not None])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def _bert_like() -> tuple[allocator.SSN, torch.Tensor]:
    """An embedding-heavy model whose group is read by rows and by whole layers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(500, 16), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    ssn = allocator.shapeshift(model, 4.0)
    assert ssn._row_modules == ["0"]
    return ssn, torch.randint(0, 500, (6, 9))


def _loss(ssn: allocator.SSN, ids: torch.Tensor, seed: int) -> torch.Tensor:
    out = ssn(ids)
    return (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))).sum()


def _reference(ssn: allocator.SSN, ids: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """theta's gradient summed over ``seeds``' losses, per-layer reads (``ssn.model``)."""
    theta = ssn.groups[0].theta
    total = torch.zeros_like(theta)
    for seed in seeds:
        out = ssn.model(ids)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        total += torch.autograd.grad((out * g).sum(), theta)[0]
    return total


def test_reused_gradient_memory_never_overwrites_a_gradient_someone_holds() -> None:
    ssn, ids = _bert_like()
    theta = ssn.groups[0].theta
    kept = []
    for seed in range(3):  # zero_grad(set_to_none=True) between steps, as torch's default
        ssn.zero_grad(set_to_none=True)
        _loss(ssn, ids, seed).backward()
        kept.append((theta.grad.detach(), theta.grad.clone()))  # an alias, and a copy
        torch.testing.assert_close(theta.grad, _reference(ssn, ids, [seed]))
    for alias, copy in kept:
        assert torch.equal(alias, copy)  # no later step wrote into a kept gradient


def test_reused_gradient_memory_is_reused_when_nothing_holds_it() -> None:
    ssn, ids = _bert_like()
    theta = ssn.groups[0].theta
    pointers = set()
    for seed in range(3):
        ssn.zero_grad(set_to_none=True)
        _loss(ssn, ids, seed).backward()
        pointers.add(theta.grad.data_ptr())
        torch.testing.assert_close(theta.grad, _reference(ssn, ids, [seed]))
    assert len(pointers) == 1  # autograd kept the group's memory as .grad, step after step


@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradients_accumulate_over_backward_calls(set_to_none) -> None:
    ssn, ids = _bert_like()
    theta = ssn.groups[0].theta
    ssn.zero_grad(set_to_none=set_to_none)
    for seed in (0, 1, 2):  # gradient accumulation: three backward calls, one step
        _loss(ssn, ids, seed).backward()
    torch.testing.assert_close(theta.grad, _reference(ssn, ids, [0, 1, 2]))
    both = _loss(ssn, ids, 3) + _loss(ssn, ids, 4)  # two forwards, one backward
    ssn.zero_grad(set_to_none=set_to_none)
    both.backward()
    torch.testing.assert_close(theta.grad, _reference(ssn, ids, [3, 4]))


def test_second_order_gradients_match_per_layer_reads() -> None:
    """create_graph=True (a gradient penalty): theta's gradient is built differentiably."""
    ssn, ids = _bert_like()
    theta = ssn.groups[0].theta
    results = []
    for call in (ssn, ssn.model):
        (g,) = torch.autograd.grad(call(ids).pow(2).sum(), theta, create_graph=True)
        (gg,) = torch.autograd.grad(g.pow(2).sum(), theta)
        results.append((g.detach(), gg))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
