"""Pareto fronts in numpy: which points no other point dominates.

Shared by the controller (``npas pareto``, the progress line, ``--keep-models pareto``)
and the dashboards, so both draw the same front. ``import allocator`` does not load it.
Points that tie on every objective are all on the front (as Optuna's ``best_trials``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["as_losses", "pareto_mask"]

Array = npt.NDArray[np.float64]


def as_losses(values: npt.ArrayLike, directions: Sequence[str]) -> Array:
    """Values turned into losses (lower is better): maximised objectives are negated."""
    points = np.asarray(values, dtype=float).reshape(-1, len(directions))
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return points * signs


def pareto_mask(values: npt.ArrayLike, directions: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Which points no other point dominates (better or equal everywhere, better once).

    Example:
        >>> pareto_mask([(0.9, 100), (0.8, 50), (0.7, 80), (0.8, 50)], ["maximize", "minimize"])
        array([ True,  True, False,  True])
    """
    loss = as_losses(values, directions)
    n, k = loss.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort(loss.T[::-1])  # by the first objective, then the next...
    ranked = loss[order]
    if k == 2:
        on_front = _front_2d(ranked)
    else:
        on_front = np.zeros(n, dtype=bool)
        front: list[int] = []
        for i, point in enumerate(ranked):
            # A dominating point is lexicographically smaller, so it came earlier; and a
            # point dominated by a dominated point is dominated by a front point too.
            if front:
                kept = ranked[front]
                if np.any(np.all(kept <= point, axis=1) & np.any(kept < point, axis=1)):
                    continue
            front.append(i)
            on_front[i] = True
    mask = np.empty(n, dtype=bool)
    mask[order] = on_front
    return mask


def _front_2d(ranked: Array) -> npt.NDArray[np.bool_]:
    """The front of lexicographically sorted 2-D losses in one pass (ties kept)."""
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = np.any(ranked[1:] != ranked[:-1], axis=1)
    group = np.cumsum(first) - 1
    distinct = ranked[first]
    best_second = np.minimum.accumulate(distinct[:, 1])
    before = np.concatenate(([np.inf], best_second[:-1]))
    # an earlier distinct point with a second loss <= ours dominates us
    return np.asarray(~(before <= distinct[:, 1]))[group]
