"""The Pareto plot: validation accuracy against trained parameters, one file.

``.html`` is interactive (plotly, self-contained: it opens without a network), ``.png``,
``.svg`` and ``.pdf`` are static (matplotlib, no display needed). Parameters go on a log
axis; each method is its own series (the baselines ``full``, ``reduced_width`` and
``hashed`` included), SSN trials are split by mapping; the Pareto trials are drawn
larger with a dark edge and joined by the front's staircase; hovering a point shows its
trial number, objectives and config.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allocator._errors import ConfigError
from allocator._vocab import BASELINES
from allocator._vocab import applies as vocab_applies

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from dashboards._store import StudyData

__all__ = ["PLOT_SUFFIXES", "check_plot_path", "plot_pareto", "plot_pareto_data"]

logger = logging.getLogger(__name__)

PLOT_SUFFIXES = (".html", ".png", ".svg", ".pdf")

_BASELINE_STYLE = {  # colour, plotly symbol, matplotlib marker
    "full": ("#222222", "star", "*"),
    "reduced_width": ("#e67e22", "square", "s"),
    "hashed": ("#8e44ad", "diamond", "D"),
}
PALETTE = ("#1f77b4", "#2ca02c", "#d62728", "#17becf", "#bcbd22", "#e377c2", "#8c564b",
            "#7f7f7f", "#ff7f0e", "#9467bd")

#: Config fields shown on hover, in order, and when each one applies to a trial
#: (the searched dimensions; a field that does not apply to a trial is left out).
HOVER_FIELDS = ("method", "budget", "mapping", "groups", "downsample", "templates", "upsample",
                "pretrain_epochs")


def plot_pareto(storage: str | None, study_name: str, path: str | Path) -> Path:
    """Draw a study's accuracy against parameters to ``path`` (.html, .png, .svg or .pdf).

    ``storage`` is the study store's URL (``None``: ``$NPAS_STORAGE``, else
    ``sqlite:///npas.db``). Returns the path written.

    Example:
        >>> from dashboards import plot_pareto
        >>> plot_pareto("sqlite:///npas.db", "demo", "pareto.html")  # doctest: +SKIP
        PosixPath('pareto.html')
    """
    from dashboards._store import load_trials

    out = check_plot_path(path)
    return plot_pareto_data(load_trials(storage, study_name), out)


def plot_pareto_data(data: StudyData, path: str | Path) -> Path:
    """:func:`plot_pareto` for a study already read (:func:`dashboards.load_trials`)."""
    out = check_plot_path(path)
    view = PlotView.of(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        _plotly(view).write_html(str(out), include_plotlyjs=True, full_html=True)
    else:
        save_figure(matplotlib_figure(view), out)
    logger.info("wrote %s (%d trials, %d on the front)", out, len(view.points), view.n_front)
    return out


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path, or :class:`allocator.ConfigError` if its suffix draws nothing."""
    out = Path(path)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(
            f"plot path must end in one of {', '.join(PLOT_SUFFIXES)}, got {str(path)!r}"
        )
    return out


# ------------------------------------------------------------------ what is drawn


@dataclass
class PlotView:
    """The plot's data: points with their series and hover text, and the front's line."""

    title: str
    x: str
    y: str
    x_log: bool
    points: pd.DataFrame  # complete trials: x, y, series, pareto, hover, trial_number
    series: list[str]
    front_x: list[float]
    front_y: list[float]

    @property
    def n_front(self) -> int:
        return int(self.points["pareto"].sum()) if len(self.points) else 0

    @classmethod
    def of(cls, data: StudyData) -> PlotView:
        from dashboards._pareto import pareto_mask

        names, frame = data.metric_names, data.frame
        if len(names) < 2:
            raise ConfigError(
                f"study {data.name!r} has {len(names)} objective; the Pareto plot needs two or more"
            )
        x = "trainable_params" if "trainable_params" in names else names[1]
        y = "val_accuracy" if "val_accuracy" in names else names[0]
        complete = frame[(frame["state"] == "complete") & frame[names].notna().all(axis=1)]
        points = complete.copy()
        points["series"] = series_labels(points)
        points["hover"] = hover_texts(points, names)
        x_log = bool(len(points)) and bool((points[x] > 0).all())
        directions = dict(zip(names, data.directions, strict=True))
        pair = points[[y, x]].to_numpy(dtype=float)
        line = points[pareto_mask(pair, [directions[y], directions[x]])].sort_values([x, y])
        n_failed = int((frame["state"] == "failed").sum())
        title = (
            f"{data.name}: {axis_label(y)} against {axis_label(x)} - {len(points)} complete trials"
            + (f", {n_failed} failed" if n_failed else "")
            + f", {int(points['pareto'].sum())} on the Pareto front"
        )
        return cls(
            title=title, x=x, y=y, x_log=x_log, points=points,
            series=ordered_series(points["series"].unique()),
            front_x=line[x].astype(float).tolist(), front_y=line[y].astype(float).tolist(),
        )


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """Each trial's series: its method for a baseline, ``ssn/<mapping>`` for an SSN.

    Example:
        >>> import pandas as pd
        >>> series_labels(pd.DataFrame({"method": ["ssn", "hashed"], "mapping": ["type", "type"]})).tolist()
        ['ssn/type', 'hashed']
    """
    import pandas as pd

    n = len(frame)
    method = frame["method"] if "method" in frame else pd.Series([None] * n, index=frame.index)
    method = method.fillna("ssn").astype(str)
    if "mapping" in frame:
        mapping = frame["mapping"].fillna("").astype(str)
        ssn = ("ssn/" + mapping).where(mapping != "", "ssn")
    else:
        ssn = pd.Series(["ssn"] * n, index=frame.index)
    return ssn.where(method == "ssn", method)


def ordered_series(labels: Sequence[str] | Any) -> list[str]:
    """Baselines first (full, reduced_width, hashed), then the SSN series by name."""
    labels = list(labels)
    return [b for b in BASELINES if b in labels] + sorted(s for s in labels if s not in BASELINES)


def series_styles(series: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """Colour, plotly symbol and matplotlib marker of each series (stable by name)."""
    styles: dict[str, tuple[str, str, str]] = {}
    ssn = [s for s in series if s not in _BASELINE_STYLE]
    for s in series:
        if s in _BASELINE_STYLE:
            styles[s] = _BASELINE_STYLE[s]
        else:
            styles[s] = (PALETTE[ssn.index(s) % len(PALETTE)], "circle", "o")
    return styles


def applies(field: str, row: dict[str, Any]) -> bool:
    """Whether a config field mattered for the trial (``templates`` of ``slice`` did not);
    the rules are the core's (``allocator._vocab.RULES``), a missing method counts as ssn."""
    return vocab_applies(field, {**row, "method": row.get("method") or "ssn"})


def hover_texts(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """``trial 7<br>val_accuracy 0.8123<br>...<br>method ssn, budget 0.12, ...`` per row."""
    fields = [f for f in HOVER_FIELDS if f in frame.columns]
    records = frame[["trial_number", *names, *fields]].to_dict("records")
    texts = []
    for r in records:
        lines = [f"trial {int(r['trial_number'])}"]
        lines += [f"{n} {fmt_number(r[n])}" for n in names]
        config = [
            f"{f} {fmt_number(r[f])}" for f in fields
            if _present(r[f]) and applies(f, r)
        ]
        for i in range(0, len(config), 4):
            lines.append(", ".join(config[i : i + 4]))
        texts.append("<br>".join(lines))
    return texts


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def fmt_number(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        return f"{v:.4g}"
    return str(value)


def axis_label(name: str) -> str:
    return {"val_accuracy": "validation accuracy", "trainable_params": "trained parameters",
            "step_time_s": "step time (s)", "peak_memory_bytes": "peak memory (bytes)"}.get(
        name, name
    )


# ------------------------------------------------------------------ plotly (html)


def _plotly(view: PlotView) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    styles = series_styles(view.series)
    for s in view.series:
        colour, symbol, _ = styles[s]
        sub = view.points[view.points["series"] == s]
        shown = False
        for on_front in (False, True):
            part = sub[sub["pareto"].astype(bool) == on_front]
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part[view.x].to_numpy(dtype=float), y=part[view.y].to_numpy(dtype=float),
                    mode="markers", name=s, legendgroup=s,
                    showlegend=not shown,
                    text=part["hover"].tolist(), hovertemplate="%{text}<extra>" + s + "</extra>",
                    marker={
                        "color": colour, "symbol": symbol, "size": 12 if on_front else 7,
                        "opacity": 1.0 if on_front else 0.55,
                        "line": {"color": "#000000", "width": 1.5 if on_front else 0},
                    },
                )
            )
            shown = True
    if view.front_x:
        fig.add_trace(
            go.Scatter(
                x=view.front_x, y=view.front_y, mode="lines", name="Pareto front",
                line={"color": "#000000", "width": 1.5, "shape": "hv"}, hoverinfo="skip",
            )
        )
    fig.update_layout(
        title={"text": view.title, "font": {"size": 15}},
        template="plotly_white",
        hovermode="closest",
        legend={"title": {"text": "method / mapping"}},
        xaxis={"title": {"text": axis_label(view.x) + (" (log scale)" if view.x_log else "")},
               "type": "log" if view.x_log else "linear"},
        yaxis={"title": {"text": axis_label(view.y)}},
        margin={"l": 70, "r": 30, "t": 60, "b": 60},
    )
    if view.points.empty:
        fig.add_annotation(text="no complete trials yet", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    return fig


# ------------------------------------------------------------------ matplotlib (png, svg, pdf)


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure that needs no display and touches no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return path


def matplotlib_figure(view: PlotView) -> Figure:
    fig = new_figure(9.0, 5.6)
    ax = fig.add_subplot()
    styles = series_styles(view.series)
    many = len(view.points) > 2000
    for s in view.series:
        colour, _, marker = styles[s]
        sub = view.points[view.points["series"] == s]
        rest, front = sub[~sub["pareto"].astype(bool)], sub[sub["pareto"].astype(bool)]
        if not rest.empty:
            ax.scatter(rest[view.x], rest[view.y], s=8 if many else 22, c=colour, marker=marker,
                       alpha=0.45, linewidths=0, label=s, rasterized=many)
        if not front.empty:
            ax.scatter(front[view.x], front[view.y], s=70, c=colour, marker=marker,
                       edgecolors="#000000", linewidths=1.2, zorder=3,
                       label=s if rest.empty else None)
    if view.front_x:
        ax.step(view.front_x, view.front_y, where="post", color="#000000", linewidth=1.2,
                zorder=2, label="Pareto front")
        front = view.points[view.points["pareto"].astype(bool)]
        if len(front) <= 25:  # label the front's points with their trial numbers (ties share one)
            for (x, y), same in front.groupby([view.x, view.y])["trial_number"]:
                ax.annotate(", ".join(str(int(n)) for n in sorted(same)), (x, y),
                            textcoords="offset points", xytext=(5, 4), fontsize=7)
    if view.x_log:
        ax.set_xscale("log")
    if view.points.empty:
        ax.text(0.5, 0.5, "no complete trials yet", transform=ax.transAxes, ha="center")
    ax.set_xlabel(axis_label(view.x) + (" (log scale)" if view.x_log else ""))
    ax.set_ylabel(axis_label(view.y))
    ax.set_title(view.title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if view.series:
        ax.legend(title="method / mapping", fontsize=8, title_fontsize=8, loc="best")
    return fig
