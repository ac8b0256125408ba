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
