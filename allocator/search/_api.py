"""``search(...)``: one function for a search from Python, with your own callables.

Example:
    >>> from allocator.search import search
    >>> summary = search(model="models:build", data="data:load", space="space.toml",
    ...                  storage="sqlite:///npas.db", trials=8)  # doctest: +SKIP
    >>> summary.pareto  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from allocator.search._controller import Progress, SearchSummary, run_search
from allocator.search._settings import SearchSettings
from allocator.search._worker import DEFAULT_RUNNER

__all__ = ["search"]


def search(
    *,
    model: str | Callable[..., Any],
    data: str | Callable[..., Any],
    trial: str | Callable[..., Any] | None = None,
    space: Any = "default",
    storage: str | None = None,
    trials: int = 24,
    concurrency: int = 1,
    study: str | None = None,
    objective: str | Sequence[str] | None = None,
    on_progress: Progress | None = None,
    **settings: Any,
) -> SearchSummary:
    """Run a search over ``model`` (a zoo spec, ``MODULE:ATTR`` or a callable returning an
    ``nn.Module``), ``data`` (a dataset name, ``MODULE:ATTR`` or a loader returning
    ``(train, val[, test])``) and, optionally, ``trial`` (``fn(model, config, report)``
    returning a dict of metrics); returns the :class:`SearchSummary`.

    A callable that workers can import by its module and name travels as that import
    path (ship its directory to a cluster with ``working_dir=``); one they cannot (defined
    in ``__main__``, a notebook or a closure) travels by Ray's own serialisation.
    ``settings`` are further :class:`SearchSettings` fields (``epochs``, ``seed``,
    ``ray_address``, ``working_dir``, ``keep_models``, ``trial_options``...). The study
    lands in ``storage`` as with ``npas search``: ``npas pareto``, the plots, the report
    and the dashboard read it.
    """
    from trials.user import Callables, spec_of

    specs: dict[str, str | None] = {}
    shipped: dict[str, Any] = {}
    for what, obj in (("model", model), ("data", data), ("trial", trial)):
        if obj is None:
            specs[what] = None
            continue
        spec, value = spec_of(obj, f"--{what}")
        specs[what] = spec
        if value is not None:
            shipped[spec] = value
    runner: Any = DEFAULT_RUNNER
    if shipped:
        runner = Callables(shipped)
        runner.install()  # the controller checks them as the workers will run them
    name = study or "-".join(
        str(s).replace(":", ".") for s in (specs["model"], specs["data"], _stem(space))
    )
    return run_search(
        SearchSettings(study=name, model=str(specs["model"]), data=str(specs["data"]),
                       trial=specs["trial"], space=space, storage=storage, trials=trials,
                       concurrency=concurrency, objective=objective, runner=runner,
                       **settings),
        on_progress=on_progress,
    )


def _stem(space: Any) -> str:
    return Path(space).stem if isinstance(space, (str, Path)) else "space"
