"""Bad input to the core raises an NPASError naming the parameter, value and what is allowed."""

from __future__ import annotations

import pytest
from torch import nn

import allocator
from tests.models import mlp


class NothingToShare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)

    def forward(self, x):  # pragma: no cover - never called
        return self.norm(x)


CASES = [
    ({"budget": 0}, allocator.BudgetError, "budget must be > 0, got 0"),
    ({"budget": -3}, allocator.BudgetError, "budget must be > 0, got -3"),
    ({"budget": float("nan")}, allocator.BudgetError, "positive fraction"),
    ({"budget": "10"}, allocator.BudgetError, "int .* or a float"),
    ({"budget": 20}, allocator.BudgetError, "below the minimum [0-9,]+ that this configuration"),
    ({"budget": 0.5, "downsample": "sum"}, allocator.ConfigError,
     "unknown downsample generator 'sum'; choose one of: wavg, emb, avg, slice"),
    ({"budget": 0.5, "upsample": "tile"}, allocator.ConfigError,
     "unknown upsample generator 'tile'; choose one of: repeat, inter, hash, mask"),
    ({"budget": 0.5, "mapping": "hash"}, allocator.ConfigError, "unknown mapping 'hash'"),
    ({"budget": 0.5, "mapping": "roundrobin", "groups": 0}, allocator.ConfigError,
     "groups must be between 1 and the model's 4 shareable layers, got 0"),
    ({"budget": 0.5, "mapping": "roundrobin", "groups": 5}, allocator.ConfigError,
     "between 1 and the model's 4 shareable layers, got 5"),
    ({"budget": 0.5, "mapping": "single", "groups": 3}, allocator.ConfigError, "one group"),
    ({"budget": 0.5, "mapping": "type", "groups": 3}, allocator.ConfigError, "derived"),
    ({"budget": 0.5, "templates": 0}, allocator.ConfigError, "templates must be an int >= 1, got 0"),
    ({"budget": 0.5, "mapping": "manual", "manual_map": {"0": 0, "2": 1}}, allocator.ConfigError,
     "manual_map misses 2 shareable layer"),
    ({"budget": 0.5, "mapping": "manual", "manual_map": {"0": 0, "2": 0, "4": 0, "6": 0, "9": 1}},
     allocator.ConfigError, "unknown layer"),
    ({"budget": 0.5, "mapping": "learned", "groups": 2}, allocator.ConfigError, "needs pretrain"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CASES)
def test_bad_arguments_raise_a_clear_npas_error(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        allocator.shapeshift(mlp(), **kwargs)


def test_errors_are_npas_errors() -> None:
    for _, error, _ in CASES:
        assert issubclass(error, allocator.NPASError)


def test_model_with_nothing_to_share_is_refused() -> None:
    with pytest.raises(allocator.ConfigError, match="has no shareable layer; shareable are: Linear"):
        allocator.shapeshift(NothingToShare(), 0.5)


def test_an_ssn_is_not_shapeshifted_twice() -> None:
    ssn = allocator.shapeshift(mlp(), 0.5)
    with pytest.raises(allocator.ConfigError, match="already has npas-generated weights"):
        allocator.shapeshift(ssn.model, 0.5)
