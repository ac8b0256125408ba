"""`npas report`: an HTML page and its Markdown twin with the Pareto table and plot,
hypervolume, parameter importances, the best model's allocation, command and versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest

from allocator.cli import main
from dashboards import Report, load_trials, write_report
from dashboards._charts import hypervolume_curve
from tests.test_dashboards_study import make_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    url = make_study(root, n=30)
    report = write_report(url, "s", root / "out")
    return {"url": url, "report": report, "html": report.html.read_text(),
            "md": report.markdown.read_text()}


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_page_its_twin_and_every_figure_they_show_are_written(written: dict[str, Any]) -> None:
    report: Report = written["report"]
    assert report.html.name == "index.html" and report.markdown.name == "report.md"
    assert set(report.figures) == {"pareto", "pareto_html", "hypervolume", "importances", "allocation"}
    for path in report.figures.values():
        assert path.parent == report.out and path.stat().st_size > 1000
    shown_md = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", written["md"])
    shown_html = re.findall(r'<img src="([^"]+)"', written["html"])
    assert shown_md == shown_html == ["pareto.png", "hypervolume.png", "importances.png", "allocation.png"]
    assert 'href="pareto.html"' in written["html"]
    for title in ("Pareto front", "Hypervolume against trials", "Parameter importances",
                  "Allocation of the best model", "How this study was made"):
        assert f"## {title}" in written["md"] and f"<h2>{title}</h2>" in written["html"]


def test_the_pareto_table_is_the_front_fewest_parameters_first(written: dict[str, Any]) -> None:
    data = load_trials(written["url"], "s")
    front = data.frame[data.frame["pareto"]].sort_values(["trainable_params", "val_accuracy"],
                                                         ascending=[True, False])
    assert written["report"].pareto_trials == front["trial_number"].tolist()
    rows = [line for line in _section(written["md"], "Pareto front").splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == front["trial_number"].tolist()
    for row, (_, trial) in zip(rows, front.iterrows(), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[3] == trial["method"]
        if trial["method"] != "ssn":
            assert cells[5:] == [""] * 5  # no mapping, groups, downsample, templates, upsample


def test_the_hypervolume_curve_rises_and_ends_as_the_page_says(written: dict[str, Any]) -> None:
    x, y = hypervolume_curve(load_trials(written["url"], "s"))
    assert x == list(range(1, 31)) and all(b >= a for a, b in zip(y, y[1:], strict=False))
    assert f"it ends at {y[-1]:.3f}" in written["md"]


def test_importances_are_given_per_objective_and_for_the_front(written: dict[str, Any]) -> None:
    section = _section(written["md"], "Parameter importances")
    header = next(line for line in section.splitlines() if line.startswith("| parameter"))
    assert header == "| parameter | validation accuracy | trained parameters | Pareto front |"
    params = {line.split("|")[1].strip() for line in section.splitlines()
              if line.startswith("| ") and not line.startswith("| parameter")}
    assert {"method", "budget"} <= params
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| parameter"):
            assert all(0.0 <= float(c) <= 1.0 for c in line.strip("|").split("|")[1:])


def test_too_few_trials_for_importances_is_said_not_crashed(tmp_path: Path) -> None:
    report = write_report(make_study(tmp_path, n=8), "s", tmp_path / "out")
    section = _section(report.markdown.read_text(), "Parameter importances")
    assert "need at least 10 complete trials; this study has 7" in section
    assert "importances" not in report.figures


def test_the_allocation_drawn_is_the_most_accurate_pareto_ssn(written: dict[str, Any]) -> None:
    data = load_trials(written["url"], "s")
    front = data.frame[data.frame["pareto"] & (data.frame["method"] == "ssn")]
    best = front.sort_values(["val_accuracy", "trial_number"], ascending=[False, True]).iloc[0]
    assert written["report"].allocation_trial == int(best["trial_number"])
    section = _section(written["md"], "Allocation of the best model")
    assert f"Trial {int(best['trial_number'])} (the most accurate Pareto trial" in section
    assert "| body.3.weight | Conv1d | 32x32x5 | 5,120 |" in section


def test_a_chosen_trial_without_an_allocation_is_said(written: dict[str, Any], tmp_path: Path) -> None:
    data = load_trials(written["url"], "s")
    hashed = int(data.frame.loc[data.frame["method"] == "hashed", "trial_number"].iloc[0])
    report = write_report(written["url"], "s", tmp_path, trial=hashed)
    assert report.allocation_trial is None and "allocation" not in report.figures
    assert f"Trial {hashed} has no allocation table" in report.markdown.read_text()


def test_the_command_and_the_versions_are_recorded(written: dict[str, Any]) -> None:
    assert written["report"].command == (
        "npas search --study s --model cnn1d --data mnist1d --space baselines --trials 30 "
        "--concurrency 2 --epochs 5 --data-size 600 --set 'optimizer=\"adamw\"'"
    )
    section = _section(written["md"], "How this study was made")
    assert written["report"].command in section
    assert "| torch | 2.13.0+cpu |" in section and f"| optuna | {optuna.__version__} |" in section
    assert "the storage URL is never recorded" in section


def test_npas_report_writes_the_folder(written: dict[str, Any], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "s", "--storage", written["url"], "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"report on s: {tmp_path / 'r' / 'index.html'} and ")
    assert (tmp_path / "r" / "report.md").is_file()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["report", "nope"], "no study 'nope'"),
        (["report", "s", "--trial", "99"], "study 's' has no trial 99; it has 0..29"),
        (["report", "s", "--storage", "sqlite:///nowhere/x.db"], "does not exist"),
    ],
)
def test_bad_report_input_is_one_line_and_exit_2(
    written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str], fragment: str,
) -> None:
    if "--storage" not in argv:
        argv = [*argv, "--storage", written["url"]]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("npas: error: ") and fragment in err[0]
