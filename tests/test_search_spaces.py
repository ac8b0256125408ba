"""Search spaces: presets, files, conditions, Optuna distributions and back to configs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator._errors import ConfigError
from search_spaces import (
    FIELDS,
    Choice,
    FloatRange,
    IntRange,
    SearchSpace,
    load_space,
    preset_names,
    space_from_dict,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

PRESETS = ["default", "lowbudget", "highbudget", "baselines"]


def _sampled_configs(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, 0.0)
        out.append((params, space.to_config(params)))
    return out


def test_presets_are_the_four_documented_ones():
    assert preset_names() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_config_is_a_valid_trial_config(name):
    from trials.config import TrialConfig

    space = load_space(name)
    for _, config in _sampled_configs(space, 60):
        TrialConfig.from_dict({"model": "mlp", "data": "mnist1d", **config})


def test_default_preset_matches_the_issue():
    space = load_space("default")
    budget = space.dimension("budget")
    assert isinstance(budget, FloatRange) and (budget.low, budget.high, budget.log) == (0.02, 4.0, True)
    assert space.dimension("groups") == IntRange("groups", 1, 8)
    assert space.dimension("templates") == IntRange("templates", 1, 8)
    assert space.fixed["method"] == "ssn"
    down, up = space.dimension("downsample"), space.dimension("upsample")
    assert isinstance(down, Choice) and set(down.values) == {"wavg", "emb", "avg", "slice"}
    assert isinstance(up, Choice) and set(up.values) == {"repeat", "inter", "hash", "mask"}


@pytest.mark.parametrize("name", ["default", "lowbudget", "highbudget"])
def test_groups_are_never_set_for_type_or_single_mapping(name):
    for params, config in _sampled_configs(load_space(name), 200):
        if config["mapping"] in ("type", "single"):
            assert "groups" not in config and "groups" not in params
        else:
            assert 1 <= config["groups"] <= 8


@pytest.mark.parametrize("name", ["default", "lowbudget", "highbudget"])
def test_templates_only_for_template_generators(name):
    for _params, config in _sampled_configs(load_space(name), 200):
        assert ("templates" in config) == (config["downsample"] in ("wavg", "emb", "avg"))


def test_baselines_full_method_has_no_budget_and_no_ssn_knobs():
    seen = set()
    for _, config in _sampled_configs(load_space("baselines"), 100):
        seen.add(config["method"])
        if config["method"] == "full":
            assert config == {"method": "full"}
        elif config["method"] in ("hashed", "reduced_width"):
            assert set(config) == {"method", "budget"}
        else:
            assert {"mapping", "downsample", "upsample", "budget"} <= set(config)
    assert seen == {"full", "ssn", "reduced_width", "hashed"}


@pytest.mark.parametrize("name", PRESETS)
def test_distributions_cover_every_dimension_and_accept_sampled_params(name):
    space = load_space(name)
    dists = space.distributions()
    assert set(dists) == set(space.names)
    for params, _ in _sampled_configs(space, 30):
        for key, value in params.items():
            assert dists[key]._contains(dists[key].to_internal_repr(value))


@pytest.mark.parametrize("name", PRESETS)
def test_to_config_and_from_config_round_trip(name):
    space = load_space(name)
    for params, config in _sampled_configs(space, 50):
        assert space.from_config(config) == params
        assert space.to_config(space.from_config(config)) == config


@pytest.mark.parametrize("name", PRESETS)
def test_to_dict_round_trips_through_the_file_vocabulary(name, tmp_path):
    space = load_space(name)
    assert load_space(space.to_dict()) == space
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(space.to_dict()))
    assert load_space(str(path)).to_dict() == space.to_dict()


def test_a_toml_file_with_conditions(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        textwrap.dedent(
            """
            description = "small"
            [fixed]
            method = "ssn"
            upsample = "repeat"
            [dims]
            budget = { low = 0.05, high = 0.5, log = true }
            mapping = ["single", "roundrobin"]
            groups = { low = 2, high = 4, when = { mapping = ["roundrobin"] } }
            downsample = { type = "choice", values = ["slice", "avg"] }
            templates = { low = 1, high = 3 }
            """
        )
    )
    space = load_space(path)
    assert space.name == "mine"
    assert space.names == ["budget", "mapping", "groups", "downsample", "templates"]
    assert space.conditions("groups")["mapping"] == frozenset({"roundrobin"})
    grid_free = space.to_config(
        {"budget": 0.1, "mapping": "roundrobin", "groups": 3, "downsample": "slice"}
    )
    assert grid_free == {
        "method": "ssn", "upsample": "repeat", "budget": 0.1, "mapping": "roundrobin",
        "groups": 3, "downsample": "slice",
    }


def test_a_yaml_file_is_read_the_same_way(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "fixed: {method: ssn}\n"
        "dims:\n"
        "  budget: {type: float, low: 0.1, high: 1.0}\n"
        "  upsample: [repeat, mask]\n"
    )
    space = load_space(str(path))
    assert space.names == ["budget", "upsample"]
    assert isinstance(space.dimension("upsample"), Choice)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dims]\nwidth = [1, 2]\n", "unknown dimension 'width'"),
        ("[dims]\ngroups = { low = 0, high = 4 }\n", "groups.low must be an integer >= 1, got 0"),
        ("[dims]\nbudget = { low = 2.0, high = 1.0 }\n", "low must be <= high"),
        ("[dims]\nbudget = { low = 0.0, high = 1.0, log = true }\n", "a log range needs low > 0"),
        ("[dims]\nbudget = { low = 0.0, high = 1.0 }\n", "budget.low must be a number > 0, got 0.0"),
        ("[dims]\nupsample = ['repeat', 'bicubic']\n", "upsample choice must be one of repeat, inter, hash, mask"),
        ("[dims]\ngroups = { type = 'float', low = 1.0, high = 2.0 }\n", "give it type 'int'"),
        ("[dims]\nbudget = { low = 0.1, high = 1.0, lg = true }\n", "unknown key 'lg'"),
        ("[dims]\ngroups = { low = 1, high = 4 }\n", "add mapping to dims or fixed"),
        ("[fixed]\ndownsample = 'slice'\n[dims]\ntemplates = { low = 1, high = 4 }\n",
         "'templates' never applies: it needs downsample in {avg, emb, unset, wavg}"),
        ("[fixed]\nmapping = 'type'\n[dims]\ngroups = { low = 1, high = 4 }\n",
         "'groups' never applies"),
        ("[dims]\nmapping = ['single', 'manual']\n", "needs fixed.manual_map"),
        ("[fixed]\nmodel = 'mlp'\n[dims]\nbudget = [0.1]\n", "fixed.model is not a search field"),
        ("[dims]\n", "dims is empty"),
        ("[dimz]\nbudget = [0.1]\n", "unknown key 'dimz'"),
        ("[dims\nbudget = [0.1]\n", "is not valid toml"),
        ("[dims]\nbudget = { low = 0.1, high = 1.0, when = { method = ['ssn'] } }\n",
         "neither searches nor fixes"),
    ],
)
def test_bad_space_files_raise_one_clear_config_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"space file {str(path)!r}")
    assert "\n" not in str(info.value)


def test_templates_apply_under_the_default_downsampling(tmp_path):
    """``downsample`` unset is ``wavg`` from the model's size up, where templates count:
    a space may search them without naming a downsampling generator."""
    import optuna

    path = tmp_path / "space.toml"
    path.write_text("[dims]\nbudget = { low = 0.5, high = 4.0 }\ntemplates = { low = 1, high = 4 }\n")
    space = load_space(path)
    params = space.suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    assert set(params) == {"budget", "templates"}
    assert "downsample" not in space.to_config(params)  # the trial's own default holds


def test_unknown_preset_or_missing_file_names_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match="give a preset \\(default, lowbudget, highbudget, baselines\\)"):
        load_space("defualt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


def test_cyclic_conditions_are_rejected():
    with pytest.raises(ConfigError, match="cycle"):
        SearchSpace(
            "c",
            dims=(
                Choice("optimizer", ["sgd", "adamw"], when={"schedule": ["cosine"]}),
                Choice("schedule", ["cosine", "step"], when={"optimizer": ["sgd"]}),
            ),
        )


def test_to_config_rejects_params_outside_the_space():
    space = load_space("default")
    with pytest.raises(ConfigError, match="not one of its dimensions"):
        space.to_config({"width": 2})
    with pytest.raises(ConfigError, match="param budget must be a number in 0.02..4"):
        space.to_config({"budget": 9.0, "mapping": "type", "downsample": "slice", "upsample": "mask"})
    with pytest.raises(ConfigError, match="param 'upsample' is missing"):
        space.to_config({"budget": 0.5, "mapping": "type", "downsample": "slice"})


def test_grid_enumerates_only_distinct_active_combinations():
    space = SearchSpace(
        "g",
        dims=(
            Choice("mapping", ["type", "roundrobin"]),
            IntRange("groups", 2, 4),
            Choice("downsample", ["slice", "avg"]),
            IntRange("templates", 1, 2),
        ),
    )
    grid = space.grid()
    # (type + 3 roundrobin groups) x (slice + 2 avg templates) = 4 x 3
    assert len(grid) == 12
    assert len({json.dumps(p, sort_keys=True) for p in grid}) == 12
    with pytest.raises(ConfigError, match="float range without step has no grid"):
        load_space("default").grid()
    with pytest.raises(ConfigError, match="more than 5 grid points"):
        space.grid(limit=5)


def test_example_is_a_valid_point_of_every_preset():
    for name in PRESETS:
        space = load_space(name)
        assert space.from_config(space.to_config(space.example())) == space.example()


def test_vocabulary_matches_the_trial_config():
    from trials import config as trial_config

    fields = {f.name for f in dataclasses.fields(trial_config.TrialConfig)}
    assert set(FIELDS) <= fields
    assert FIELDS["method"].choices == trial_config.METHODS
    assert FIELDS["downsample"].choices == trial_config.DOWNSAMPLE
    assert FIELDS["upsample"].choices == trial_config.UPSAMPLE
    assert FIELDS["mapping"].choices == trial_config.MAPPINGS


def test_search_spaces_does_not_import_trials_or_the_search_service():
    code = (
        "import sys, search_spaces; search_spaces.load_space('default');"
        "bad = [m for m in sys.modules if m == 'trials' or m.startswith(('trials.', "
        "'allocator.search', 'ray', 'sqlalchemy'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stdout + run.stderr


@settings(max_examples=60, deadline=None)
@given(
    low=st.floats(0.001, 10.0),
    span=st.floats(1.0, 100.0),
    mappings=st.lists(st.sampled_from(["single", "type", "roundrobin", "random", "learned"]),
                      min_size=1, max_size=5, unique=True),
    downs=st.lists(st.sampled_from(["wavg", "emb", "avg", "slice"]), min_size=1, max_size=4,
                   unique=True),
    seed=st.integers(0, 2**16),
)
def test_any_ssn_space_respects_the_method_rules(low, span, mappings, downs, seed):
    dims: dict = {
        "budget": {"low": low, "high": low * span, "log": True},
        "mapping": mappings,
        "downsample": downs,
    }
    if {"roundrobin", "random", "learned"} & set(mappings):
        dims["groups"] = {"low": 1, "high": 6}
    if set(downs) != {"slice"}:
        dims["templates"] = {"low": 1, "high": 5}
    space = space_from_dict({"fixed": {"method": "ssn"}, "dims": dims})
    for params, config in _sampled_configs(space, 8, seed=seed):
        assert low <= config["budget"] <= low * span * (1 + 1e-9)
        assert ("groups" in config) == (config["mapping"] in ("roundrobin", "random", "learned"))
        assert ("templates" in config) == (config["downsample"] != "slice")
        assert space.from_config(config) == params
