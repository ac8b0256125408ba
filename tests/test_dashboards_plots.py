"""`plot_pareto`: accuracy against parameters, log axis, the front joined, baselines as
their own series, the config on hover; HTML (plotly) and PNG/SVG/PDF (matplotlib)."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest

from allocator._errors import ConfigError
from dashboards import load_trials, plot_pareto
from dashboards._plots import PlotView, _plotly
from tests.test_dashboards_study import make_study


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_study(tmp_path_factory.mktemp("plots"))


def _marker_traces(fig: Any) -> list[Any]:
    return [t for t in fig.data if t.mode == "markers"]


def test_every_complete_trial_is_a_point_and_the_front_is_joined_in_order(study_url: str) -> None:
    data = load_trials(study_url, "s")
    view = PlotView.of(data)
    fig = _plotly(view)
    complete = data.frame[data.frame["state"] == "complete"]
    assert sum(len(t.x) for t in _marker_traces(fig)) == len(complete)
    front = complete[complete["pareto"]].sort_values(["trainable_params", "val_accuracy"])
    (line,) = [t for t in fig.data if t.mode == "lines"]
    assert line.name == "Pareto front" and line.line.shape == "hv"
    assert list(line.x) == front["trainable_params"].astype(float).tolist()
    assert list(line.y) == front["val_accuracy"].astype(float).tolist()
    assert fig.layout.xaxis.type == "log"
    assert "trained parameters" in fig.layout.xaxis.title.text


def test_baselines_are_their_own_series_and_ssn_splits_by_mapping(study_url: str) -> None:
    fig = _plotly(PlotView.of(load_trials(study_url, "s")))
    names = {t.name for t in _marker_traces(fig)}
    assert names == {"full", "reduced_width", "hashed", "ssn/single", "ssn/type", "ssn/roundrobin"}
    symbols = {t.name: t.marker.symbol for t in _marker_traces(fig)}
    assert symbols["full"] != symbols["ssn/single"] != symbols["hashed"]
    front_points = [t for t in _marker_traces(fig) if t.marker.line.width]  # drawn with an edge
    n_front = int(load_trials(study_url, "s").frame["pareto"].sum())
    assert sum(len(t.x) for t in front_points) == n_front


def test_hover_shows_the_trial_and_only_the_config_that_applied(study_url: str) -> None:
    data = load_trials(study_url, "s")
    view = PlotView.of(data)
    hover = dict(zip(view.points["trial_number"], view.points["hover"], strict=True))
    frame = data.frame.set_index("trial_number")
    for number, text in hover.items():
        row = frame.loc[number]
        assert text.startswith(f"trial {number}<br>val_accuracy ")
        assert f"method {row['method']}" in text
        if row["method"] != "ssn":
            assert "mapping" not in text and "templates" not in text
        elif row["downsample"] == "slice":
            assert "templates" not in text  # npas_results holds the default, 4; it did not apply
        else:
            assert f"templates {int(row['templates'])}" in text
        if row["method"] == "full":
            assert "budget" not in text


def test_the_html_file_is_interactive_and_self_contained(study_url: str, tmp_path: Path) -> None:
    out = plot_pareto(study_url, "s", tmp_path / "sub" / "pareto.html")
    text = out.read_text()
    assert out == tmp_path / "sub" / "pareto.html"
    assert "Plotly.newPlot" in text and '"type":"log"' in text.replace(" ", "")
    assert not re.search(r'<script[^>]+src="http', text)  # opens without a network
    assert '"Pareto front"' in text and '"hashed"' in text


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_static_files_are_written(study_url: str, tmp_path: Path, suffix: str) -> None:
    out = plot_pareto(study_url, "s", tmp_path / f"pareto{suffix}")
    head = out.read_bytes()[:32]
    if suffix == ".png":
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", head[16:24])
        assert (width, height) == (1350, 840)
    elif suffix == ".svg":
        assert b"<svg" in out.read_bytes()[:500]
    else:
        assert head.startswith(b"%PDF")


def test_another_suffix_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plot path must end in one of .html, .png, .svg, .pdf, got '.*x.jpg'"):
        plot_pareto(f"sqlite:///{tmp_path / 'missing.db'}", "s", tmp_path / "x.jpg")


def test_a_study_with_no_complete_trial_still_plots(tmp_path: Path) -> None:
    url = make_study(tmp_path, n=3, methods=("ssn",))
    import optuna

    study = optuna.load_study(study_name="s", storage=url)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    data = load_trials(url, "s")
    data.frame = data.frame[data.frame["state"] == "failed"]
    view = PlotView.of(data)
    assert view.points.empty and view.front_x == []
    assert "0 complete trials" in view.title
    from dashboards import plot_pareto_data

    assert plot_pareto_data(data, tmp_path / "empty.png").stat().st_size > 1000
    assert "no complete trials yet" in plot_pareto_data(data, tmp_path / "empty.html").read_text()


def test_three_objectives_mark_the_full_front_and_join_the_two_way_one(tmp_path: Path) -> None:
    data = load_trials(make_study(tmp_path, third="step_time_s"), "s")
    view = PlotView.of(data)
    assert view.n_front == int(data.frame["pareto"].sum())
    assert len(view.front_x) <= view.n_front  # the accuracy/params front is within the full one
    assert "step_time_s" in view.points["hover"].iloc[0]


def test_npas_pareto_plot_writes_the_files_and_prints_the_same_front(
    study_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from allocator.cli import main

    html, png = tmp_path / "out" / "front.html", tmp_path / "front.png"
    code = main(["pareto", "s", "--storage", study_url, "--plot", str(html), "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"wrote {html}" in out and f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = {int(line.split()[0]) for line in out.splitlines()[1:] if line.split()[0].isdigit()}
    frame = load_trials(study_url, "s").frame
    front = set(frame.loc[frame["pareto"], "trial_number"].astype(int))
    assert printed == front and len(front) >= 3
    page = html.read_text()
    assert all(f'"trial {n}' in page for n in front)


def test_npas_pareto_refuses_a_bad_plot_suffix_before_printing(
    study_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from allocator.cli import main

    code = main(["pareto", "s", "--storage", study_url, "--plot", str(tmp_path / "x.gif")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "plot path must end in one of .html" in err
    assert list(tmp_path.iterdir()) == []
