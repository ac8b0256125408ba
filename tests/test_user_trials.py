"""One trial of user code without a search: the parameter-method registry on a user's
factory, the trial function's report and pruning, user dimensions in a space."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import trials
from allocator._errors import ConfigError
from allocator.search._objectives import objectives
from search_spaces import load_space
from trials import methods
from trials.config import TrialConfig
from trials.user import ModelSource, model_source

PROJECT = Path(__file__).resolve().parent / "user_project"


@pytest.fixture(autouse=True)
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PROJECT))
    monkeypatch.chdir(PROJECT)


def _source(**hp: object) -> ModelSource:
    return model_source("models:build", input_shape=(1, 64), num_classes=3, hp=hp)


@pytest.mark.parametrize("budget", [0.2, 0.5, 0.9])
def test_reduced_width_finds_the_largest_integer_width_in_budget(budget) -> None:
    source = _source(width=24)
    cfg = TrialConfig(model="models:build", method="reduced_width", budget=budget, hp={"width": 24})
    model, info = methods.build(source, cfg)
    full = trials.metrics.count_parameters(source())
    fits = trials.metrics.count_parameters(model)
    assert fits <= info["budget"] == round(budget * full)
    wider = trials.metrics.count_parameters(source(info["width"] + 1))
    assert wider > info["budget"]  # one channel more would not fit


@pytest.mark.parametrize("method", ["full", "ssn", "hashed", "reduced_width"])
def test_every_method_applies_to_a_user_model_and_rebuilds_from_its_weights(method) -> None:
    from allocator.search._worker import model_bytes

    cfg = TrialConfig(model="models:build", method=method, budget=0.4, mapping="type",
                      hp={"width": 16})
    model, info = methods.build(_source(width=16), cfg)
    x = torch.randn(2, 1, 64)
    again = methods.rebuild(_source(width=16), cfg, info, model_bytes(model))
    model.eval()
    again.eval()
    assert torch.equal(methods.deploy(model)(x), methods.deploy(again)(x))


def test_a_trial_function_reports_every_epoch_and_is_pruned_when_the_hook_says_so() -> None:
    seen: list[tuple[int, dict[str, float]]] = []

    def hook(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append((epoch, metrics))
        return epoch == 2

    result = trials.run({"model": "models:build", "data": "data:load", "trial": "train:fit",
                         "method": "full", "epochs": 4, "hp": {"width": 16}}, report=hook)
    assert result.status == "pruned"
    assert [e for e, _ in seen] == [1, 2]
    # the user's metrics, and the trained parameters that early stopping weighs them against
    assert set(seen[0][1]) == {"macro_f1", "val_accuracy", "trainable_params"}
    assert [h["epoch"] for h in result.history] == [1, 2]
    complete = trials.run({"model": "models:build", "data": "data:load", "trial": "train:fit",
                           "method": "ssn", "budget": 0.5, "epochs": 1, "hp": {"width": 16}})
    assert complete.status == "complete"
    assert set(complete.metrics) == {"macro_f1", "val_accuracy"}
    assert complete.val_accuracy == complete.metrics["val_accuracy"]
    assert complete.allocation is not None  # the SSN the trial function trained


def test_a_trial_function_that_raises_or_returns_no_dict_fails_with_the_reason(tmp_path, monkeypatch) -> None:
    (tmp_path / "badfit.py").write_text(
        "def boom(model, config, report):\n    raise RuntimeError('out of data')\n"
        "def text(model, config, report):\n    return 'done'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    base = {"model": "models:build", "data": "data:load", "method": "full", "epochs": 1}
    boom = trials.run({**base, "trial": "badfit:boom"})
    assert boom.status == "failed" and boom.failure_reason == "RuntimeError: out of data"
    text = trials.run({**base, "trial": "badfit:text"})
    assert text.status == "failed" and "returned a str, not a dict of metrics" in text.failure_reason


def test_user_dimensions_become_one_hp_table_and_round_trip() -> None:
    space = load_space(str(PROJECT / "space.toml"))
    assert "hp.width" in space.names
    params = space.example()
    config = space.to_config(params)
    assert config["hp"] == {"depth": 2, "width": 16}
    assert space.from_config(config) == params
    assert load_space(space.to_dict()) == space
    with pytest.raises(ConfigError, match="user dimension 'lr' is a field of npas"):
        load_space({"dims": {"method": ["full"]}, "hp": {"lr": [0.1]}})


def test_objectives_of_the_user_beside_trained_parameters() -> None:
    assert [(o.name, o.direction) for o in objectives(["f1:max", "latency:min"])] == [
        ("f1", "maximize"), ("latency", "minimize"), ("trainable_params", "minimize")]
    assert [o.name for o in objectives(["f1:max", "step_time"])] == ["f1", "trainable_params", "step_time_s"]
    assert [o.name for o in objectives(None)] == ["val_accuracy", "trainable_params"]


def test_the_registry_holds_every_method_of_the_vocabulary() -> None:
    from allocator._vocab import METHODS

    assert tuple(methods.REGISTRY) == METHODS
    with pytest.raises(ConfigError, match="reduced_width needs a model with a width"):
        methods.build(model_source("models:build_fixed", input_shape=(1, 64), num_classes=3),
                      TrialConfig(model="models:build_fixed", method="reduced_width"))
    assert isinstance(methods.deploy(nn.Linear(2, 2)), nn.Linear)
