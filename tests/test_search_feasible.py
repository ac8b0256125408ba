"""No wasted trial: the least budget of each structural choice, from the core's plan,
and a space that samples the budget only where its configuration can be built."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

import allocator
from allocator._errors import BudgetError, ConfigError
from allocator.search._checks import fit_to_model
from allocator.search._feasible import BudgetFloor, check_feasible
from search_spaces import load_space, space_from_dict
from trials.data import load_dataset
from trials.zoo import build_model

BASE = {"model": "cnn1d", "data": "mnist1d", "data_size": 300, "seed": 0, "epochs": 1}


@pytest.fixture(scope="module")
def floor() -> BudgetFloor:
    return BudgetFloor(BASE)


def _model() -> torch.nn.Module:
    data = load_dataset("mnist1d", size=300)
    return build_model("cnn1d", input_shape=tuple(data.input_shape), num_classes=data.num_classes)


def _shapeshift(values: dict, budget: int | float) -> None:
    options = {k: values[k] for k in ("groups", "templates", "downsample", "upsample")
               if k in values}
    allocator.shapeshift(_model(), budget, mapping=values["mapping"], **options)


def test_the_least_budget_builds_and_one_parameter_less_does_not(floor) -> None:
    space = fit_to_model(load_space("default"), BASE)
    structures = [v for v in space.structures() if v["mapping"] != "learned"]
    for values in structures[:: max(1, len(structures) // 40)]:  # about 40, every kind
        need = floor.count(values)
        assert need is not None
        _shapeshift(values, need)
        with pytest.raises(BudgetError):
            _shapeshift(values, need - 1)
        fraction = floor(values)
        assert math.floor(fraction * floor.total) == need  # the float budget the trial gets


def test_the_space_never_samples_a_budget_its_configuration_cannot_hold(floor) -> None:
    space = fit_to_model(load_space("lowbudget"), BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(60):
        trial = study.ask()
        params = space.suggest(trial, budget_floor=floor)
        config = space.to_config(params)
        assert params["budget"] >= floor(config)
        assert params["budget"] <= space.dimension("budget").high
        if config["mapping"] != "learned":
            _shapeshift(config, config["budget"])
        study.tell(trial, 0.0)


def test_an_entirely_infeasible_budget_range_is_refused_before_the_search() -> None:
    space = space_from_dict({"name": "tight", "fixed": {"method": "ssn", "upsample": "mask"},
                             "dims": {"budget": {"type": "float", "low": 1e-4, "high": 1e-3},
                                      "mapping": ["single", "type"]}})
    with pytest.raises(ConfigError, match=r"budget at most 0.001 is infeasible for mapping=single"):
        check_feasible(space, BASE)
    fine = space_from_dict({"name": "fine", "fixed": {"method": "ssn"},
                            "dims": {"budget": {"type": "float", "low": 0.05, "high": 1.0}}})
    check_feasible(fine, BASE)
