"""What an SSN shares: any weight, the tensors under a user's parametrization, and
embeddings that keep their contract (padding rows, sparse, max_norm)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal, spectral_norm, weight_norm

import allocator
from allocator._generators import GeneratedWeight


class Bilinear(nn.Module):
    """A custom layer with a raw weight matrix, a bias, a per-channel scale stored as
    (1, out) and a frozen projection."""

    def __init__(self, n_in: int = 12, n_out: int = 16) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_in, n_out) / n_in**0.5)
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.scale = nn.Parameter(torch.ones(1, n_out))
        self.frozen = nn.Parameter(torch.randn(n_out, n_out), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.w) * self.scale + self.bias) @ self.frozen


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Bilinear()
        self.b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_a_custom_layers_weight_is_shared_and_the_others_are_named_with_a_reason() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Custom(), 0.5)
    assert [s.name for s in ssn.plan.slots] == ["a.w", "b.weight"]
    kept = {r["layer"]: (r["reason"], r["params"]) for r in ssn.allocation().unshared_rows()}
    assert kept == {
        "a.bias": ("1-D (bias/norm)", 16),
        "a.scale": ("a vector with singleton dimensions (bias, scale or token)", 16),
        "a.frozen": ("frozen (requires_grad=False)", 0),
        "b.bias": ("1-D (bias/norm)", 4),
    }
    text = str(ssn.allocation())
    assert "not shared:" in text and "frozen (requires_grad=False)" in text
    assert ssn.allocation().to_dict()["unshared"][0]["layer"] == "a.bias"
    ssn(torch.randn(3, 12)).sum().backward()
    assert ssn.groups[0].theta.grad is not None
    plain = allocator.materialize(ssn)
    assert isinstance(plain.a.w, nn.Parameter) and plain.a.frozen.requires_grad is False


def test_a_too_small_budget_names_the_largest_unshareable_weights() -> None:
    class Sparse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.EmbeddingBag(500, 8, sparse=True)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.emb(x)))

    with pytest.raises(allocator.BudgetError) as err:
        allocator.shapeshift(Sparse(), 100)
    msg = str(err.value)
    assert "largest unshareable weights: emb.weight (500x8, 4,000: Embedding(sparse=True)" in msg
    assert "norm.weight (8, 8: 1-D (bias/norm))" in msg


def test_fan_in_of_known_and_unknown_kinds() -> None:
    slots = {s.name: s for s in allocator.find_slots(nn.Sequential(
        nn.Linear(5, 3), nn.Conv2d(3, 4, 3), nn.Embedding(7, 2)))[0]}
    assert [slots[n].fan_in for n in ("0.weight", "1.weight", "2.weight")] == [5, 27, 1]
    assert {s.name: s.fan_in for s in allocator.find_slots(Custom())[0]}["a.w"] == 16


class Symmetric(nn.Module):
    """A user's own parametrization: the weight is ``X + X^T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).transpose(0, 1)


class Constrained(nn.Module):
    """Every kind of parametrization torch offers, and one of the user's own, next to a
    weight that has none (in the same module as a parametrized one)."""

    def __init__(self) -> None:
        super().__init__()
        self.wn = weight_norm(nn.Conv1d(4, 8, 3, padding=1))
        self.sn = spectral_norm(nn.Linear(8, 8))
        self.orth = orthogonal(nn.Linear(8, 8))
        self.sym = nn.Linear(8, 8)
        parametrize.register_parametrization(self.sym, "weight", Symmetric())
        self.mixed = Bilinear(8, 8)
        parametrize.register_parametrization(self.mixed, "frozen", Symmetric())
        self.mixed.w = nn.Parameter(torch.randn(8, 8) * 0.3)
        parametrize.register_parametrization(self.mixed, "w", Symmetric())
        self.plain = nn.Linear(8, 8)
        self.mixed2 = nn.Module()
        self.mixed2.u = nn.Parameter(torch.randn(8, 8) * 0.3)
        self.mixed2.v = nn.Parameter(torch.randn(8, 8) * 0.3)
        parametrize.register_parametrization(self.mixed2, "u", Symmetric())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.wn(x).mean(2)
        h = torch.tanh(self.orth(self.sn(h)))
        h = torch.tanh(self.mixed(self.sym(h)))
        h = torch.tanh(self.plain(h) @ self.mixed2.u @ self.mixed2.v)
        return self.head(h)


def _user_parametrizations(model: nn.Module) -> dict[str, list[str]]:
    return {
        f"{name}.{tensor}": [type(p).__name__ for p in plist]
        for name, m in model.named_modules() if parametrize.is_parametrized(m)
        and not isinstance(m, parametrize.ParametrizationList)
        for tensor, plist in m.parametrizations.items()
    }


def _check_constraints(model: nn.Module) -> None:
    with torch.no_grad():
        w = model.orth.weight
        torch.testing.assert_close(w @ w.T, torch.eye(8), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.sym.weight, model.sym.weight.T)
        norms = model.wn.weight.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, model.wn.parametrizations.weight.original0.flatten())


def test_user_parametrizations_stay_on_top_of_generated_tensors() -> None:
    torch.manual_seed(0)
    model = Constrained()
    x = torch.randn(5, 4, 6)
    ssn = allocator.shapeshift(model, 0.5)
    names = {s.name for s in ssn.plan.slots}
    assert {"wn.parametrizations.weight.original1", "sn.parametrizations.weight.original",
            "orth.parametrizations.weight.original", "sym.parametrizations.weight.original",
            "mixed.parametrizations.w.original", "mixed2.v", "plain.weight"} <= names
    kept = {r["layer"]: r["reason"] for r in ssn.allocation().unshared_rows()}
    assert kept["wn.parametrizations.weight.original0"].startswith("a vector")
    # the constraints hold in the SSN, also after training steps
    ssn.train()
    opt = torch.optim.SGD(ssn.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        ssn(x).square().mean().backward()
        opt.step()
    _check_constraints(ssn.model)
    # materialize removes npas's parametrizations only
    ssn.eval()
    with torch.no_grad():
        expected = ssn(x)
    plain = allocator.materialize(ssn)
    assert not any(isinstance(m, GeneratedWeight) for m in plain.modules())
    assert _user_parametrizations(plain) == _user_parametrizations(model)
    assert isinstance(plain.plain.weight, nn.Parameter) and isinstance(plain.mixed2.v, nn.Parameter)
    _check_constraints(plain)
    fresh = Constrained()
    fresh.load_state_dict(plain.state_dict())
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ssn(x), expected)  # the live SSN is untouched
    buf = io.BytesIO()
    allocator.save(ssn, buf)
    buf.seek(0)
    loaded = allocator.load(buf, Constrained()).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)


def test_only_npas_parametrizations_mark_an_ssn() -> None:
    ssn = allocator.shapeshift(Constrained(), 0.5)
    for again in (ssn, ssn.model, ssn.model.wn):
        with pytest.raises(allocator.ConfigError, match="already has npas-generated weights"):
            allocator.shapeshift(again, 0.5)
    # a materialised SSN is a plain model again, its user parametrizations included
    allocator.shapeshift(allocator.materialize(ssn), 0.5)


class Tokens(nn.Module):
    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.bag = nn.EmbeddingBag(20, 8, padding_idx=3, mode="sum")
        self.out = nn.Linear(8, 20)
        if tied:
            self.out.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(tokens).mean(1) + self.bag(tokens))


@pytest.mark.parametrize("tied", [False, True])
def test_embedding_padding_rows_stay_zero_and_get_no_gradient(tied: bool) -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Tokens(tied), 0.5)
    tokens = torch.tensor([[0, 0, 3, 5], [3, 0, 7, 0]])  # padding everywhere
    opt = torch.optim.SGD(ssn.parameters(), lr=0.5)
    for _ in range(3):
        loss = ssn(tokens).square().sum()
        with parametrize.cached():
            loss = loss + ssn.model.emb.weight.sum() + ssn.model.bag.weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert torch.equal(ssn.model.emb.weight[0], torch.zeros(8))
        if tied:
            assert torch.equal(ssn.model.out.weight[0], torch.zeros(8))
    plain = allocator.materialize(ssn)
    assert plain.emb.padding_idx == 0 and torch.equal(plain.emb.weight[0], torch.zeros(8))
    assert torch.equal(plain.bag.weight[3], torch.zeros(8))


def test_padding_row_takes_no_gradient_into_the_group() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(nn.Embedding(10, 4, padding_idx=2), 0.5, downsample="slice")
    with parametrize.cached():
        weight = ssn.model.weight
        # a loss on the padding row alone reaches nothing
        grad = torch.autograd.grad(weight[2].sum(), ssn.groups[0].theta, allow_unused=True)[0]
    assert grad is None or torch.equal(grad, torch.zeros_like(grad))


def test_sparse_and_max_norm_embeddings_keep_their_contract_unshared() -> None:
    class Lookups(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sparse = nn.Embedding(30, 6, sparse=True)
            self.capped = nn.Embedding(30, 6, max_norm=1.0)
            self.head = nn.Linear(6, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.head(self.sparse(t).mean(1) + self.capped(t).mean(1))

    torch.manual_seed(0)
    with torch.no_grad():
        model = Lookups()
        model.capped.weight.mul_(5)
    ssn = allocator.shapeshift(model, 370)
    kept = {r["layer"]: r["reason"] for r in ssn.allocation().unshared_rows()}
    assert kept["sparse.weight"].startswith("Embedding(sparse=True)")
    assert kept["capped.weight"].startswith("Embedding(max_norm=...)")
    tokens = torch.tensor([[1, 2, 3]])
    ssn(tokens).sum().backward()
    assert ssn.model.sparse.weight.grad.is_sparse
    assert ssn.model.capped.weight[[1, 2, 3]].norm(dim=1).max() <= 1.0 + 1e-5


@pytest.mark.parametrize("name", ["allocator._layers", "allocator._padding", "allocator._batches"])
def test_docstring_examples_run(name: str) -> None:
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(name)).failed == 0
