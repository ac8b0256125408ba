"""``npas report``: one study as a folder to share, an HTML page and its Markdown twin.

The folder holds ``index.html``, ``report.md`` and the figures they show: the Pareto
plot (``pareto.png``, and ``pareto.html`` to explore), the hypervolume against trials,
the parameter importances, and the best model's allocation layer by layer. Both pages
are written from one list of blocks, so they always say the same thing.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allocator._errors import ConfigError
from allocator._storage_url import store_files
from dashboards import _charts, _provenance
from dashboards._plots import applies, axis_label, fmt_number, plot_pareto_data, save_figure
from dashboards._store import StudyData, load_study, load_trials

if TYPE_CHECKING:
    import optuna

__all__ = ["Report", "write_report"]

logger = logging.getLogger(__name__)

CONFIG_COLUMNS = ("method", "budget", "mapping", "groups", "downsample", "templates", "upsample")

Block = tuple[Any, ...]


@dataclass
class Report:
    """What :func:`write_report` wrote, and the main facts it found."""

    study: str
    out: Path
    html: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    pareto_trials: list[int] = field(default_factory=list)
    allocation_trial: int | None = None
    command: str | None = None
    notes: list[str] = field(default_factory=list)


def write_report(
    storage: str | None,
    study_name: str,
    out: str | os.PathLike[str],
    *,
    trial: int | None = None,
) -> Report:
    """Write ``index.html`` and ``report.md`` (and their figures) about one study to ``out``.

    ``trial`` picks the trial whose allocation is drawn (default: the most accurate
    Pareto trial that has an allocation table, i.e. an SSN).

    Example:
        >>> from dashboards import write_report
        >>> report = write_report("sqlite:///npas.db", "demo", "report/")  # doctest: +SKIP
        >>> report.html  # doctest: +SKIP
        PosixPath('report/index.html')
    """
    study = load_study(storage, study_name)
    data = load_trials(storage, study)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out must be a directory, got the file {str(folder)!r}")
    recorded = data.settings.get("artifacts")
    for kept in (*store_files(storage), *([Path(recorded)] if recorded else [])):
        place, target = Path(kept).resolve(), folder.resolve()
        if target == place or place in target.parents:
            raise ConfigError(
                f"--out {str(folder)!r} lies in {str(place)!r}, which npas keeps (the study "
                "store or its kept weights); write the report somewhere else"
            )
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial is not None and trial not in trials:
        raise ConfigError(
            f"study {study_name!r} has no trial {trial}; it has 0..{max(trials, default=-1)}"
        )
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)  # only once the input is known to be good
    report = Report(study=study_name, out=folder, html=folder / "index.html",
                    markdown=folder / "report.md")
    try:
        blocks: list[Block] = []
        blocks += _summary(data, trials)
        blocks += _pareto_section(data, report)
        blocks += _hypervolume_section(data, report)
        blocks += _importance_section(study, data, report)
        blocks += _allocation_section(data, trials, trial, report)
        blocks += _provenance_section(data, trials, report)
        report.html.write_text(render_html(f"npas report: {study_name}", blocks), encoding="utf-8")
        report.markdown.write_text(render_markdown(f"npas report: {study_name}", blocks),
                                   encoding="utf-8")
    except BaseException:  # a report that failed leaves no folder it made behind
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise
    logger.info("report on %s written to %s", study_name, folder)
    return report


# ------------------------------------------------------------------ sections


def _summary(data: StudyData, trials: dict[int, optuna.trial.FrozenTrial]) -> list[Block]:
    s = data.settings
    counts = data.frame["state"].value_counts().to_dict()
    states = ", ".join(f"{counts[k]} {k}" for k in ("complete", "failed", "pruned", "running",
                                                    "waiting") if counts.get(k))
    starts = [t.datetime_start for t in trials.values() if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials.values() if t.datetime_complete is not None]
    rows = [
        ["study", data.name],
        ["storage", data.storage],
        ["objectives", ", ".join(f"{n} ({d})" for n, d in zip(data.metric_names, data.directions, strict=True))],
        ["trials", f"{len(data.frame)} ({states or 'none'})"],
    ]
    for key in ("model", "data", "space_name", "epochs", "sampler", "seed"):
        if s.get(key) not in (None, ""):
            rows.append([key.replace("_name", ""), _cell(s[key])])
    if starts:
        rows.append(["ran", f"{min(starts):%Y-%m-%d %H:%M} to {max(ends or starts):%Y-%m-%d %H:%M}"])
    rows.append(["report written", dt.datetime.now().strftime("%Y-%m-%d %H:%M")])
    return [("table", ["about", "value"], rows)]


def _pareto_section(data: StudyData, report: Report) -> list[Block]:
    report.figures["pareto"] = plot_pareto_data(data, report.out / "pareto.png")
    report.figures["pareto_html"] = plot_pareto_data(data, report.out / "pareto.html")
    front = data.frame[data.frame["pareto"]]
    sort = [c for c in ("trainable_params", "val_accuracy") if c in front.columns] or data.metric_names
    front = front.sort_values(sort, ascending=[True, False][: len(sort)])
    report.pareto_trials = [int(n) for n in front["trial_number"]]
    columns = [c for c in CONFIG_COLUMNS if c in front.columns]
    headers = ["trial", *[axis_label(n) for n in data.metric_names], *columns]
    rows = []
    for r in front.to_dict("records"):
        rows.append([
            str(int(r["trial_number"])),
            *[fmt_number(r[n]) for n in data.metric_names],
            *[_cell(r[c]) if applies(c, r) else "" for c in columns],
        ])
    n = len(rows)
    return [
        ("h2", "Pareto front"),
        ("p", f"{n} trial{'s' if n != 1 else ''} that no other trial beats on every objective "
              "(the same set as `npas pareto`), fewest parameters first."),
        ("table", headers, rows) if rows else ("p", "No complete trials yet."),
        ("img", "pareto.png", f"{data.metric_names[0]} against trained parameters"),
        ("links", [("interactive plot (hover for each trial's config)", "pareto.html")]),
    ]


def _hypervolume_section(data: StudyData, report: Report) -> list[Block]:
    fig = _charts.hypervolume_figure(data)
    blocks: list[Block] = [("h2", "Hypervolume against trials")]
    if fig is None:
        return [*blocks, ("p", "No complete trials yet.")]
    report.figures["hypervolume"] = save_figure(fig, report.out / "hypervolume.png")
    _, curve = _charts.hypervolume_curve(data)
    return [
        *blocks,
        ("p", "The volume the Pareto front dominates, after each finished trial. Objectives are "
              "scaled to [0, 1] between the best and worst values of the study (parameters on a "
              f"log scale) and measured from 1.1 in each; it ends at {curve[-1]:.3f}. A curve "
              "still rising at the end says more trials would still find better trade-offs."),
        ("img", "hypervolume.png", "hypervolume against trials"),
    ]


def _importance_section(study: optuna.Study, data: StudyData, report: Report) -> list[Block]:
    import optuna

    imp = _charts.importances(study, data.metric_names, data.directions)
    blocks: list[Block] = [("h2", "Parameter importances")]
    report.notes += imp.notes
    if imp.reason is not None:
        report.notes.append(imp.reason)
        return [*blocks, ("p", imp.reason + ".")]
    fig = _charts.importances_figure(imp)
    if fig is not None:
        report.figures["importances"] = save_figure(fig, report.out / "importances.png")
    targets = list(imp.by_target)
    rows = [[p, *[f"{imp.by_target[t].get(p, 0.0):.3f}" for t in targets]] for p in imp.params]
    blocks += [
        ("p", f"How much each searched parameter decides each objective, by Optuna's default "
              f"importance evaluator (optuna {optuna.__version__}); each column sums to 1. "
              "\"Pareto front\" rates reaching the front on all objectives at once."),
        ("table", ["parameter", *[axis_label(t) for t in targets]], rows),
        ("img", "importances.png", "parameter importances"),
    ]
    if imp.notes:
        blocks.append(("list", imp.notes))
    return blocks


def _allocation_section(
    data: StudyData,
    trials: dict[int, optuna.trial.FrozenTrial],
    chosen: int | None,
    report: Report,
) -> list[Block]:
    blocks: list[Block] = [("h2", "Allocation of the best model")]
    number, allocation = pick_allocation(data, trials, chosen)
    if allocation is None:
        why = (f"Trial {chosen} has no allocation table (only SSN trials have one)."
               if chosen is not None else
               "No complete trial of this study has an allocation table (only SSN trials have one).")
        return [*blocks, ("p", why)]
    assert number is not None
    report.allocation_trial = number
    t = trials[number]
    acc = t.values[0] if t.values else None
    title = (f"trial {number}: {int(allocation.get('trainable') or 0):,} trained parameters, "
             f"budget {int(allocation.get('budget') or 0):,}, plain model "
             f"{int(allocation.get('base_params') or 0):,}")
    fig = _charts.allocation_figure(allocation, title)
    report.figures["allocation"] = save_figure(fig, report.out / "allocation.png")
    on_front = bool(data.frame.loc[data.frame["trial_number"] == number, "pareto"].any())
    if chosen is not None:
        why = "chosen" + (", on the Pareto front" if on_front else "")
    elif on_front:
        why = "the most accurate Pareto trial that has an allocation table"
    else:
        why = "the most accurate trial that has an allocation table; no Pareto trial has one"
    layers = allocation.get("layers") or []
    cols = ["layer", "kind", "shape", "weights", "group", "generator", "templates", "params"]
    rows = [[_cell(r.get(c)) for c in cols] for r in layers]
    by_kind = ", ".join(f"{k} {int(v):,}" for k, v in (allocation.get("by_kind") or {}).items())
    return [
        *blocks,
        ("p", f"Trial {number} ({why}; {axis_label(data.metric_names[0])} "
              f"{fmt_number(acc) if acc is not None else '?'}). Each bar is a layer, as long as its "
              f"weights, coloured by the group of shared parameters that generates it. "
              f"Trained parameters by kind: {by_kind or 'not recorded'}."),
        ("img", "allocation.png", f"allocation of trial {number}"),
        ("table", cols, rows),
    ]


def pick_allocation(
    data: StudyData, trials: dict[int, optuna.trial.FrozenTrial], chosen: int | None
) -> tuple[int | None, dict[str, Any] | None]:
    """The trial whose allocation to draw and its allocation table (``None`` if none)."""
    if chosen is not None:
        return chosen, _allocation_of(trials[chosen])
    frame = data.frame[data.frame["state"] == "complete"]
    y = data.metric_names[0]
    ascending = data.directions[0] == "minimize"
    for part in (frame[frame["pareto"]], frame[~frame["pareto"]]):
        ordered = part.sort_values([y, "trial_number"], ascending=[ascending, True])
        for number in ordered["trial_number"]:
            t = trials.get(int(number))
            allocation = _allocation_of(t) if t is not None else None
            if allocation is not None:
                return int(number), allocation
    return None, None


def _allocation_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    result = trial.user_attrs.get("npas_result")
    allocation = result.get("allocation") if isinstance(result, dict) else None
    if isinstance(allocation, dict) and allocation.get("layers"):
        return allocation
    return None


def _provenance_section(
    data: StudyData, trials: dict[int, optuna.trial.FrozenTrial], report: Report
) -> list[Block]:
    settings = data.settings
    report.command = _provenance.search_command(settings)
    blocks: list[Block] = [("h2", "How this study was made")]
    if report.command is None:
        blocks.append(("p", "The study carries no npas search settings (it was not made by "
                            "`npas search`)."))
    else:
        note = "Rebuilt from the settings the study recorded; the storage URL is never recorded."
        if _provenance.space_was_a_file(settings):
            note += " The space came from a file; what it searched is below."
        blocks += [("pre", report.command), ("p", note)]
    results = [t.user_attrs.get("npas_result") for t in trials.values()]
    versions = _provenance.trial_versions(r for r in results if isinstance(r, dict))
    for i, v in enumerate(versions):
        label = "Libraries the trials ran with" if i == 0 else "Some trials ran with"
        blocks += [("p", label + ":"), ("table", ["library", "version"], sorted(v.items()))]
    blocks += [("p", "Libraries that wrote this report:"),
               ("table", ["library", "version"], sorted(_provenance.reader_versions().items()))]
    if settings.get("space"):
        blocks += [("p", "The search space as recorded:"),
                   ("pre", json.dumps(settings["space"], indent=2, sort_keys=True))]
    return blocks


# ------------------------------------------------------------------ rendering


def render_html(title: str, blocks: Sequence[Block]) -> str:
    e = html.escape
    body: list[str] = [f"<h1>{e(title)}</h1>"]
    for kind, *args in blocks:
        if kind == "h2":
            body.append(f"<h2>{e(args[0])}</h2>")
        elif kind == "p":
            body.append(f"<p>{_code_html(args[0])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{e(args[0])}</pre>")
        elif kind == "img":
            body.append(f'<p><img src="{e(args[0])}" alt="{e(args[1])}"></p>')
        elif kind == "links":
            body.append("<p>" + " | ".join(f'<a href="{e(h)}">{e(t)}</a>' for t, h in args[0]) + "</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            headers, rows = args
            head = "".join(f"<th>{e(h)}</th>" for h in headers) if any(headers) else ""
            lines = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table>{'<tr>' + head + '</tr>' if head else ''}{lines}</table>")
    return _PAGE.format(title=e(title), body="\n".join(body))


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    out: list[str] = [f"# {title}", ""]
    for kind, *args in blocks:
        if kind == "h2":
            out += [f"## {args[0]}", ""]
        elif kind == "p":
            out += [args[0], ""]
        elif kind == "pre":
            out += ["```", args[0], "```", ""]
        elif kind == "img":
            out += [f"![{args[1]}]({args[0]})", ""]
        elif kind == "links":
            out += [" | ".join(f"[{t}]({h})" for t, h in args[0]), ""]
        elif kind == "list":
            out += [f"- {i}" for i in args[0]] + [""]
        elif kind == "table":
            headers, rows = args
            out.append("| " + " | ".join(_md(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out += ["| " + " | ".join(_md(str(c)) for c in r) + " |" for r in rows]
            out.append("")
    return "\n".join(out)


def _code_html(text: str) -> str:
    """Escape a paragraph, turning `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return fmt_number(value)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
code {{ background: #f6f6f6; padding: 0 0.2em; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
