"""`npas shapeshift` prints an allocation; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import pytest

from allocator.cli import main
from allocator.cli._train import parse_budget


def test_shapeshift_prints_the_allocation_table(capsys) -> None:
    assert main(["shapeshift", "resnet1d", "--budget", "0.1", "--mapping", "roundrobin",
                 "--groups", "3"]) == 0
    out = capsys.readouterr().out
    assert "layer" in out and "generator" in out
    assert "trainable 5,066 of budget 5,066 (100.00 %)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "0"], "budget must be a positive number"),
        (["--budget", "abc"], "got 'abc'"),
        (["--budget", "nan"], "got 'nan'"),
        (["--budget", "0.5", "--upsample", "tile"], "unknown upsample generator 'tile'"),
        (["--budget", "0.5", "--mapping", "roundrobin", "--groups", "0"], "groups must be between 1"),
        (["--budget", "10"], "below the minimum"),
        (["--budget", "0.5", "--input-shape", "a,b"], "input shape"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys) -> None:
    assert main(["shapeshift", "cnn1d", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_unknown_model_is_refused(capsys) -> None:
    assert main(["shapeshift", "vgg-16", "--budget", "0.5"]) == 2
    assert "vgg" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("0.25", 0.25), ("4.0", 4.0), ("250000", 250000),
                                             ("1e5", 100000), ("1e-1", 0.1)])
def test_budget_text_is_a_count_or_a_fraction(text, value) -> None:
    parsed = parse_budget(text)
    assert parsed == value and type(parsed) is type(value)
