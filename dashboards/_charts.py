"""The report's other figures: hypervolume against trials, parameter importances, and one
trial's allocation drawn layer by layer. Each function computes what it draws from a
study already read and returns a matplotlib figure (or says why there is none).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboards._pareto import hypervolume_history
from dashboards._plots import PALETTE, axis_label, new_figure

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from dashboards._store import StudyData

__all__ = ["MIN_IMPORTANCE_TRIALS", "Importances", "allocation_figure", "hypervolume_curve",
           "hypervolume_figure", "importances", "importances_figure"]

#: Objectives compared on a log scale (as the Pareto plot draws parameters).
LOG_METRICS = frozenset({"trainable_params", "peak_memory_bytes", "step_time_s", "flops"})
#: Fewer complete trials than this and parameter importances mean little (PED-ANOVA
#: compares the top 10 % of trials with the rest).
MIN_IMPORTANCE_TRIALS = 10


# ------------------------------------------------------------------ hypervolume


def hypervolume_curve(data: StudyData) -> tuple[list[int], list[float]]:
    """Trials finished (in trial order) and the front's hypervolume after each.

    Objectives are normalised to [0, 1] over the study (parameters on a log scale), the
    reference point is 1.1 in each; failed trials leave the curve flat.
    """
    frame = data.frame.sort_values("trial_number")
    frame = frame[frame["state"].isin(("complete", "failed", "pruned"))]
    names = data.metric_names
    values = frame[names].to_numpy(dtype=float, na_value=math.nan)
    usable = (frame["state"] == "complete").to_numpy() & ~np.isnan(values).any(axis=1)
    if not usable.any():
        return [], []
    log = [n in LOG_METRICS and bool((values[usable][:, j] > 0).all()) for j, n in enumerate(names)]
    history = hypervolume_history(values[usable], data.directions, log)
    counts = np.cumsum(usable)  # how many usable points each finished trial has seen
    curve = np.where(counts > 0, history[np.maximum(counts - 1, 0)], 0.0)
    return list(range(1, len(frame) + 1)), [float(v) for v in curve]


def hypervolume_figure(data: StudyData) -> Figure | None:
    x, y = hypervolume_curve(data)
    if not x:
        return None
    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    ax.step(x, y, where="post", color=PALETTE[0], linewidth=1.6)
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title(f"{data.name}: hypervolume of the Pareto front", fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    return fig


# ------------------------------------------------------------------ importances


@dataclass
class Importances:
    """Importance of each searched parameter per objective (and for the front as a whole)."""

    by_target: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str | None = None  # why there are none
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> list[str]:
        seen: dict[str, float] = {}
        for values in self.by_target.values():
            for name, v in values.items():
                seen[name] = max(seen.get(name, 0.0), v)
        return sorted(seen, key=lambda n: -seen[n])


def importances(study: optuna.Study, names: Sequence[str], directions: Sequence[str]) -> Importances:
    """Parameter importances with Optuna's default evaluator, per objective and for the
    Pareto front (all objectives at once); none, with the reason, for too few trials."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return Importances(reason=(
            f"parameter importances need at least {MIN_IMPORTANCE_TRIALS} complete trials; "
            f"this study has {len(complete)}"
        ))
    varied = {n for n in {p for t in complete for p in t.params}
              if len({repr(t.params.get(n)) for t in complete}) > 1}
    if not varied:
        return Importances(reason="no searched parameter took more than one value")
    out = Importances()
    targets: list[tuple[str, Any]] = [
        (name, _target(i, direction)) for i, (name, direction) in enumerate(zip(names, directions, strict=True))
    ]
    targets.append(("Pareto front", None))
    for label, target in targets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = optuna.importance.get_param_importances(study, target=target)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                out.notes.append(f"{label}: not computed ({exc})")
                continue
        for w in caught:
            note = f"{label}: {w.message}"
            if "achieve low `target` values" in note:  # said whenever a target is given; ours is
                continue
            if issubclass(w.category, UserWarning) and note not in out.notes:
                out.notes.append(note)
        out.by_target[label] = {k: float(v) for k, v in values.items()}
    if not out.by_target:
        out.reason = "Optuna could not compute parameter importances for this study"
    return out


def _target(index: int, direction: str) -> Any:
    sign = -1.0 if direction == "maximize" else 1.0  # the evaluator takes lower as better
    return lambda t: sign * t.values[index]


def importances_figure(imp: Importances) -> Figure | None:
    if not imp.by_target:
        return None
    params, targets = imp.params, list(imp.by_target)
    fig = new_figure(7.0, 1.2 + 0.45 * len(params) * max(1, len(targets)) ** 0.5)
    ax = fig.add_subplot()
    height = 0.8 / len(targets)
    y = np.arange(len(params))
    for i, target in enumerate(targets):
        values = [imp.by_target[target].get(p, 0.0) for p in params]
        ax.barh(y + i * height, values, height=height, color=PALETTE[i % len(PALETTE)],
                label=axis_label(target))
    ax.set_yticks(y + height * (len(targets) - 1) / 2, params)
    ax.invert_yaxis()
    ax.set_xlabel("importance (normalised, per objective)")
    ax.set_title("parameter importances", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# ------------------------------------------------------------------ allocation


def allocation_figure(allocation: Mapping[str, Any], title: str) -> Figure:
    """One horizontal bar per layer: its length the layer's weights, its colour the group
    whose parameters generate it; the generator, templates and own parameters beside it."""
    layers = list(allocation.get("layers") or [])
    groups = list(allocation.get("groups") or [])
    fig = new_figure(9.0, min(2.0 + 0.32 * len(layers), 40.0))
    ax = fig.add_subplot()
    y = np.arange(len(layers))
    weights = [int(r.get("weights") or 0) for r in layers]
    colours = [PALETTE[int(r.get("group") or 0) % len(PALETTE)] for r in layers]
    ax.barh(y, weights, color=colours, edgecolor="#333333", linewidth=0.4)
    top = max(weights, default=1)
    for i, r in enumerate(layers):
        text = f"{r.get('generator', '?')}, K={r.get('templates', '?')}, {int(r.get('params') or 0):,} own"
        ax.text(weights[i] + top * 0.01, i, text, va="center", fontsize=7)
    ax.set_yticks(y, [f"{r.get('layer', '?')} ({r.get('shape', '')})" for r in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel("weights of the layer")
    from matplotlib.patches import Patch

    used = sorted({int(r.get("group") or 0) for r in layers})
    handles = [
        Patch(color=PALETTE[g % len(PALETTE)],
              label=f"group {g}" + (f": {int(groups[g]['size']):,} shared" if g < len(groups) and "size" in groups[g] else ""))
        for g in used
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return fig
