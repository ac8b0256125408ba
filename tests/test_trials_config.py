"""TrialConfig: plain data that round-trips through JSON and refuses bad values."""

from __future__ import annotations

import json
import math

import pytest

from allocator._errors import BudgetError, ConfigError
from trials.config import TrialConfig


def test_defaults_round_trip_through_json() -> None:
    cfg = TrialConfig()
    again = TrialConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_every_field_round_trips_through_json() -> None:
    cfg = TrialConfig(
        model="mlp-3x256", data="digits", data_root="/tmp/x", data_size=500, method="hashed",
        budget=12_345, groups=3, templates=2, downsample="wavg", upsample="mask",
        mapping="manual", manual_map={"0": 0, "2": 1}, pretrain_epochs=0, epochs=3,
        batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="step",
        label_smoothing=0.1, grad_clip=0.0, seed=7, threads=2, device="cpu", amp=False,
        max_steps_per_epoch=5, eval_test=True,
    )
    again = TrialConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.budget, int)


def test_float_budget_stays_a_fraction_after_json() -> None:
    cfg = TrialConfig(budget=4.0)
    again = TrialConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert isinstance(again.budget, float) and again.budget == 4.0


def test_int_learning_rate_is_stored_as_float() -> None:
    assert TrialConfig(lr=1).lr == 1.0 and isinstance(TrialConfig(lr=1).lr, float)


def test_to_dict_is_a_copy() -> None:
    cfg = TrialConfig(mapping="manual", manual_map={"a": 0})
    d = cfg.to_dict()
    d["manual_map"]["a"] = 5
    assert cfg.manual_map == {"a": 0}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "pruned"),
        ("downsample", "sum"),
        ("upsample", "nearest"),
        ("mapping", "clustered"),
        ("optimizer", "adam"),
        ("schedule", "linear"),
        ("device", "tpu"),
        ("templates", 0),
        ("epochs", 0),
        ("batch_size", -1),
        ("threads", 0),
        ("groups", 0),
        ("data_size", 0),
        ("max_steps_per_epoch", 0),
        ("seed", -1),
        ("lr", 0.0),
        ("lr", math.inf),
        ("weight_decay", -1e-4),
        ("label_smoothing", 1.0),
        ("grad_clip", -1.0),
        ("grad_clip", math.inf),
        ("grad_clip", "high"),
        ("epochs", 2.5),
        ("epochs", True),
        ("amp", 1),
        ("model", 3),
        ("model", ""),
        ("manual_map", {"a": "x"}),
    ],
)
def test_bad_value_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TrialConfig.from_dict({field: value})


@pytest.mark.parametrize("budget", [0, -1, 0.0, -0.5, math.nan, math.inf, "0.5", True, None])
def test_bad_budget_is_a_budget_error(budget: object) -> None:
    with pytest.raises(BudgetError, match="budget"):
        TrialConfig(budget=budget)  # type: ignore[arg-type]


def test_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'epoch'"):
        TrialConfig.from_dict({"epoch": 3})


def test_manual_mapping_needs_a_map_and_a_map_needs_manual() -> None:
    with pytest.raises(ConfigError, match="manual_map"):
        TrialConfig(mapping="manual")
    with pytest.raises(ConfigError, match="manual_map"):
        TrialConfig(mapping="single", manual_map={"a": 0})


def test_learned_mapping_needs_pretraining() -> None:
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        TrialConfig(mapping="learned", pretrain_epochs=0)


def test_config_is_frozen() -> None:
    cfg = TrialConfig()
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]
    assert cfg.replace(epochs=3).epochs == 3
