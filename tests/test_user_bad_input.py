"""Every bad input of a user's own model, data, trial function, space and objective: one
line on stderr naming what is wrong, exit status 2, and nothing written to the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from allocator.cli import main
from tests.test_reliability_bad_input import assert_one_error_line, dump, npas

BAD = Path(__file__).resolve().parent / "user_bad"
TINY = ["--trials", "2", "--epochs", "1"]

CASES = {
    "module missing": (["--model", "nosuchmod:build"], ("--model 'nosuchmod:build'", "no module named 'nosuchmod'")),
    "attribute missing": (["--model", "ubad_models:buidl"], ("has no attribute 'buidl'", "good")),
    "not callable": (["--model", "ubad_models:NOT_CALLABLE"], ("is a int, not a function or class",)),
    "not module:attr": (["--model", "ubad_models:"], ("must be MODULE:ATTR",)),
    "factory raises": (["--model", "ubad_models:raises"], ("raised ValueError: width must be even",)),
    "factory returns a dict": (["--model", "ubad_models:returns_dict"], ("returned a dict, not a torch.nn.Module",)),
    "no parameters": (["--model", "ubad_models:no_params"], ("has no trainable parameters",)),
    "data of the wrong form": (["--data", "ubad_data:wrong_form"], ("must return (train, val) or (train, val, test), got a dict",)),
    "a split of the wrong form": (["--data", "ubad_data:wrong_split"], ("the val split must be", "got a str")),
    "data not matching the model": (["--data", "ubad_data:wrong_shape"], ("does not fit --model ubad_models:good", "(2, 10)")),
    "label outside the classes": (["--data", "ubad_data:too_many_labels"], ("outside the model's classes", "labels go up to 6", "outputs 3 classes")),
    "float labels": (["--data", "ubad_data:float_labels"], ("labels must be integer class indices",)),
    "loader raises": (["--data", "ubad_data:raises"], ("--data ubad_data:raises() raised FileNotFoundError",)),
    "data module missing": (["--data", "nodata:load"], ("no module named 'nodata'",)),
    "trial function missing": (["--trial", "ubad_train:fitt"], ("--trial 'ubad_train:fitt'", "has no attribute 'fitt'")),
    "user dimension the factory does not take": (
        ["--space", "hp_colour.toml"], ("user dimension 'colour' is not an argument of --model ubad_models:good", "width")),
    "reduced_width without a width": (
        ["--model", "ubad_models:fixed", "--space", "narrow.toml"], ("reduced_width needs a model with a width",)),
    "objective of the wrong form": (["--objective", "f1:maximise"], ("objective must be NAME:max, NAME:min",)),
    "objective twice": (["--objective", "f1:max", "--objective", "f1:min"], ("objective 'f1' is given twice",)),
    "working dir missing": (["--working-dir", "nowhere/"], ("--working-dir must be a directory",)),
    "py module missing": (["--py-modules", "nowhere.py"], ("--py-modules must be a package directory",)),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user-bad")
    for f in BAD.iterdir():
        if f.is_file():
            shutil.copy(f, root)
    return root


@pytest.fixture(scope="module")
def store(project: Path) -> str:
    """A store that already holds a user-model study, to compare against."""
    url = f"sqlite:///{project / 'npas.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        assert main(["search", "--study", "ok", "--model", "ubad_models:good", "--data",
                     "ubad_data:tensors", "--space", "full.toml", *TINY, "--storage", url]) == 0
    return url


def _argv(extra: list[str], url: str) -> list[str]:
    """A good search with the flags of ``extra`` in place of the base's."""
    base = {"--model": "ubad_models:good", "--data": "ubad_data:good", "--space": "full.toml"}
    kept = [x for flag, value in base.items() if flag not in extra[::2] for x in (flag, value)]
    return ["search", "--study", "bad", *kept, *extra, *TINY, "--storage", url]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_user_input_is_one_line_exit_2_and_writes_nothing(case, project, store, monkeypatch,
                                                                 capsys, caplog) -> None:
    extra, fragments = CASES[case]
    monkeypatch.chdir(project)
    before = dump(store)
    fresh = project / "fresh.db"
    for url in (store, f"sqlite:///{fresh}"):
        code, out, lines = npas(capsys, caplog, _argv(extra, url))
        assert_one_error_line(code, out, lines, fragments)
    assert dump(store) == before
    assert not fresh.exists()


def test_the_good_inputs_of_the_table_do_search(project, store) -> None:
    """The base every bad case changes one flag of is itself a search that runs."""
    from allocator.search import StudyStore

    with StudyStore(store, must_exist=True) as s:
        rows = s.results("ok")
    assert [r["state"] for r in rows] == ["complete", "complete"]
    assert rows[0]["model"] == "ubad_models:good"
