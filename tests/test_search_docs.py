"""The examples in the search modules' docstrings run; the demo's settings are valid;
the progress line and the tables read as documented."""

from __future__ import annotations

import doctest
import importlib
import io

import pytest

from allocator.cli import build_parser
from allocator.search import ProgressLine, SearchStatus

MODULES = [
    "allocator._pareto",
    "allocator._vocab",
    "allocator.search._cluster",
    "search_spaces._user",
    "trials.checks",
    "trials.methods",
    "trials.pruned",
    "trials.user",
    "trials.user_data",
    "allocator._storage_url",
    "allocator.search._controller",
    "allocator.search._engines",
    "allocator.search._epochs",
    "allocator.search._halving",
    "allocator.search._recorder",
    "allocator.search._tune_api",
    "search_spaces",
    "search_spaces._dims",
    "search_spaces._load",
    "search_spaces._space",
    "allocator.search._objectives",
    "allocator.search._progress",
    "allocator.search._settings",
    "allocator.search._table",
    "allocator.search._urls",
    "allocator.search._worker",
    "allocator.cli._query",
    "allocator.cli._search",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_import_allocator_search_leaves_ray_and_torch_training_unloaded():
    import subprocess
    import sys

    code = (
        "import sys, allocator.search; "
        "print(sorted(m for m in ('ray', 'trials.runner', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_demo_searches_the_default_space_with_valid_trials():
    from allocator.cli._demo import demo_settings
    from allocator.search._checks import check_trial_config
    from search_spaces import load_space

    args = build_parser().parse_args(["demo", "--storage", "sqlite:///x.db"])
    settings = demo_settings(args)
    settings.validate()
    assert (settings.trials, settings.concurrency, settings.model, settings.data) == (
        24, 2, "cnn1d", "mnist1d")
    space = load_space(settings.space)
    assert space.name == "default"
    check_trial_config({**settings.base_config(), **space.to_config(space.example())})


def test_every_search_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("search", "demo", "studies", "trials", "pareto", "export"):
        for action in sub.choices[name]._actions:
            assert action.help, f"npas {name} {action.option_strings} has no help"


def test_progress_line_rewrites_in_place_on_a_terminal():
    out = io.StringIO()
    line = ProgressLine(out, live=True)
    line(SearchStatus("s", 4, 0, 2, 0, 0, 0, 0, 1.0))
    line(SearchStatus("s", 4, 4, 0, 3, 1, 0, 2, 65.0, finished=True))
    text = out.getvalue()
    assert text.startswith("\rs: 0/4 done, 2 running, 0 failed, pareto 0, 0:01")
    assert text.endswith("\rs: 4/4 done, 0 running, 1 failed, pareto 2, 1:05\n")
