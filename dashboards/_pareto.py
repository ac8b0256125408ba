"""Pareto fronts and hypervolumes, in numpy, for any number of trials.

Pure functions of arrays of objective values and the study's directions. Points that tie
on every objective are all on the front (as in ``npas pareto`` and Optuna's
``best_trials``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from allocator._pareto import as_losses, pareto_mask

__all__ = ["hypervolume", "hypervolume_history", "normalised_losses", "pareto_mask"]

Array = npt.NDArray[np.float64]


def normalised_losses(
    values: npt.ArrayLike, directions: Sequence[str], log: Sequence[bool] | None = None
) -> Array:
    """Losses scaled to [0, 1] per objective: 0 the best value seen, 1 the worst.

    ``log`` marks objectives compared on a log scale (parameter counts, times, memory),
    as the plots draw them. A constant objective maps to 0.

    Example:
        >>> normalised_losses([(0.5, 10), (1.0, 1000)], ["maximize", "minimize"], [False, True])
        array([[1., 0.],
               [0., 1.]])
    """
    points = np.asarray(values, dtype=float).reshape(-1, len(directions)).copy()
    for j, use_log in enumerate(log or [False] * len(directions)):
        if use_log:
            points[:, j] = np.log10(np.maximum(points[:, j], 1e-300))
    losses = as_losses(points, directions)
    if len(losses) == 0:
        return losses
    low, high = losses.min(axis=0), losses.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.asarray((losses - low) / span)


def hypervolume(losses: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """The volume the points dominate below ``reference`` (every objective minimised).

    Example:
        >>> hypervolume([(0.0, 1.0), (1.0, 0.0)], [2.0, 2.0])
        3.0
    """
    points = np.asarray(losses, dtype=float)
    ref = np.asarray(reference, dtype=float)
    points = points[np.all(points < ref, axis=1)] if len(points) else points
    if len(points) == 0:
        return 0.0
    front = points[pareto_mask(points, ["minimize"] * points.shape[1])]
    if front.shape[1] == 2:
        front = front[np.lexsort((front[:, 1], front[:, 0]))]
        total, ceiling = 0.0, ref[1]
        for a, b in front:
            if b < ceiling:
                total += (ref[0] - a) * (ceiling - b)
                ceiling = b
        return float(total)
    from optuna._hypervolume import compute_hypervolume

    unique = np.unique(front, axis=0)
    return float(compute_hypervolume(unique, ref, assume_pareto=True))


def hypervolume_history(
    values: npt.ArrayLike,
    directions: Sequence[str],
    log: Sequence[bool] | None = None,
    margin: float = 0.1,
) -> Array:
    """The hypervolume of the front after each trial, in the order given.

    Objectives are normalised over all the points (:func:`normalised_losses`) and the
    reference point is the worst value plus ``margin`` in each, so a study's curve ends
    between 0 and ``(1 + margin) ** k`` whatever its units.

    Example:
        >>> hypervolume_history([(0.5, 10), (0.9, 10), (0.7, 5)], ["maximize", "minimize"])
        array([0.01, 0.11, 0.71])
    """
    losses = normalised_losses(values, directions, log)
    ref = np.full(losses.shape[1] if losses.ndim == 2 else len(directions), 1.0 + margin)
    out = np.zeros(len(losses))
    front = np.empty((0, len(ref)))
    current = 0.0
    for i, point in enumerate(losses):
        if not (len(front) and np.any(np.all(front <= point, axis=1))):
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            current = hypervolume(front, ref)
        out[i] = current
    return np.round(out, 12)
