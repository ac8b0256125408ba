"""The search service: a study store in SQL, a controller that runs trials on Ray.

``import allocator`` never loads this package; import it when you search.

Example:
    >>> from allocator.search import search
    >>> summary = search(model="models:build", data="data:load", space="space.toml",
    ...                  storage="sqlite:///npas.db", trials=8)  # doctest: +SKIP
    >>> from allocator.search import SearchSettings, StudyStore, run_search
    >>> settings = SearchSettings("demo", model="cnn1d", data="mnist1d", trials=24,
    ...                           concurrency=2, storage="sqlite:///npas.db")
    >>> summary = run_search(settings)  # doctest: +SKIP
    >>> StudyStore("sqlite:///npas.db").dataframe("demo")  # doctest: +SKIP
"""

from allocator.search._api import search
from allocator.search._artifacts import export_model
from allocator.search._controller import SearchSummary, resume_search, run_search
from allocator.search._objectives import EXTRA_OBJECTIVES, SAMPLERS, objectives
from allocator.search._progress import ProgressLine, SearchStatus
from allocator.search._query import pareto_front, study_record, trial_rows
from allocator.search._settings import KEEP_MODELS, SearchSettings
from allocator.search._store import StudyStore
from allocator.search._table import RESULTS

# Ray Tune as the engine, inside a user's own Tuner (imports ray.tune on first use)
from allocator.search._tune_api import tune_search_alg, tune_trainable
from allocator.search._urls import DEFAULT_STORAGE, ENV_STORAGE, mask_url, resolve_url

__all__ = [
    "DEFAULT_STORAGE",
    "ENV_STORAGE",
    "EXTRA_OBJECTIVES",
    "KEEP_MODELS",
    "RESULTS",
    "SAMPLERS",
    "ProgressLine",
    "SearchSettings",
    "SearchStatus",
    "SearchSummary",
    "StudyStore",
    "export_model",
    "mask_url",
    "objectives",
    "pareto_front",
    "resolve_url",
    "resume_search",
    "run_search",
    "search",
    "study_record",
    "trial_rows",
    "tune_search_alg",
    "tune_trainable",
]
