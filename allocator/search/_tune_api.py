"""``tune_trainable`` and ``tune_search_alg`` without importing Ray Tune until they are called.

Example:
    >>> from allocator.search import tune_search_alg, tune_trainable
    >>> callable(tune_trainable)
    True
"""

from __future__ import annotations

from typing import Any

__all__ = ["tune_search_alg", "tune_trainable"]


def tune_trainable(runner: str | None = None) -> Any:
    """A Tune function trainable that runs npas trials (see ``_launch_tune.tune_trainable``)."""
    from allocator.search import _launch_tune

    return _launch_tune.tune_trainable(runner or _launch_tune.DEFAULT_RUNNER)


def tune_search_alg(settings: Any, **options: Any) -> Any:
    """An ``OptunaSearch`` over npas's space on the study of ``settings`` (see
    ``_launch_tune.tune_search_alg``)."""
    from allocator.search import _launch_tune

    return _launch_tune.tune_search_alg(settings, **options)
