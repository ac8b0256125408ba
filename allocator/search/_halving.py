"""Early stopping across the Pareto front: asynchronous successive halving on two (or
more) objectives. Pure arithmetic, no Ray, no Optuna.

Trials are judged at *rungs*, epochs ``grace, grace*eta, grace*eta^2, ...`` below the
last epoch. When a trial reaches a rung, it is ranked among every trial that reached
that rung so far (itself included) by **non-dominated rank, then crowding distance**
(the order NSGA-II sorts a population by) and continues only if fewer than
``ceil(n / eta)`` of those ``n`` trials rank strictly ahead of it; otherwise it stops.

Why this order, rather than the distance to the front:

* it needs no scale: accuracy and parameter counts are not comparable units, and a
  rank compares them without weights or normalisation;
* a trial on the rung's front is ranked 0 whatever its budget, so a small model at
  modest accuracy is judged against models of its size, not against the largest;
* the extremes of the front (the smallest model, the most accurate one) have an
  infinite crowding distance and are never stopped; ties at the cut all continue.

Like ASHA, a trial is judged once per rung against those that came before it (no
waiting for a full rung), so concurrency is never idle; early trials are judged
leniently (the first at a rung always continues).

Example:
    >>> rule = ParetoHalving(epochs=9, directions=["maximize", "minimize"], eta=3)
    >>> rule.rungs
    (1, 3)
    >>> rule.report(0, 1, [0.80, 1000.0]), rule.report(1, 1, [0.90, 500.0])
    (False, False)
    >>> rule.report(2, 1, [0.10, 5000.0])  # dominated by both: it stops
    True
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from allocator._errors import ConfigError

__all__ = ["ParetoHalving", "crowding", "nondominated_ranks", "rungs_for"]


def rungs_for(epochs: int, *, grace: int = 1, eta: int = 3) -> tuple[int, ...]:
    """The epochs trials are judged at: ``grace * eta**i`` below ``epochs``.

    Example:
        >>> rungs_for(27), rungs_for(5, grace=2, eta=2), rungs_for(1)
        ((1, 3, 9), (2, 4), ())
    """
    out: list[int] = []
    rung = grace
    while rung < epochs:
        out.append(rung)
        rung *= eta
    return tuple(out)


def nondominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated rank of each point (all objectives minimised): 0 for the front, 1
    for the front of the rest, ...

    Example:
        >>> nondominated_ranks([(1, 1), (2, 2), (0, 3), (3, 3)])
        [0, 1, 0, 2]
    """
    n = len(points)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(points[i], points[j]):
                dominates[i].append(j)
                dominated_by[j] += 1
            elif _dominates(points[j], points[i]):
                dominates[j].append(i)
                dominated_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while front:
        following = []
        for i in front:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        front, rank = following, rank + 1
    return ranks


def crowding(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within ``points`` (one front):
    infinite for the extremes of any objective.

    Example:
        >>> crowding([(0, 2), (1, 1), (2, 0)])
        [inf, 2.0, inf]
    """
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    out = [0.0] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        lo, hi = points[order[0]][k], points[order[-1]][k]
        out[order[0]] = out[order[-1]] = math.inf
        if hi == lo:
            continue
        for a, b, c in zip(order, order[1:], order[2:], strict=False):
            out[b] += (points[c][k] - points[a][k]) / (hi - lo)
    return out


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def ahead_of(points: Sequence[Sequence[float]], index: int) -> int:
    """How many points rank strictly ahead of ``points[index]`` by (non-dominated rank,
    crowding distance within the rank), all objectives minimised.

    Example:
        >>> ahead_of([(0, 0), (1, 1), (2, 2)], 2)
        2
    """
    ranks = nondominated_ranks(points)
    mine = ranks[index]
    same = [i for i, r in enumerate(ranks) if r == mine]
    distance = dict(zip(same, crowding([points[i] for i in same]), strict=True))
    better = sum(r < mine for r in ranks)
    return better + sum(distance[i] > distance[index] for i in same)


@dataclass
class ParetoHalving:
    """The rule's state: every trial's values at every rung it reached.

    ``report(trial, epoch, values)`` returns ``True`` when the trial must stop. Values
    are in the objectives' own directions (``maximize``/``minimize``). A trial judged at
    a rung once (a retry that reports the rung again) gets the same answer again.
    """

    epochs: int
    directions: Sequence[str]
    eta: int = 3
    grace: int = 1
    rungs: tuple[int, ...] = field(init=False)
    _seen: dict[int, list[list[float]]] = field(init=False, default_factory=dict)
    _decided: dict[tuple[Hashable, int], bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise ConfigError(f"early stopping's eta must be an integer >= 2, got {self.eta!r}")
        if isinstance(self.grace, bool) or not isinstance(self.grace, int) or self.grace < 1:
            raise ConfigError(f"early stopping's grace must be an integer >= 1, got {self.grace!r}")
        self.rungs = rungs_for(self.epochs, grace=self.grace, eta=self.eta)
        if not self.rungs:
            raise ConfigError(
                f"early stopping needs more epochs than its first rung ({self.grace}); "
                f"got epochs {self.epochs}: pass --epochs {self.grace + 1} or more, or "
                "--early-stop none"
            )
        self._seen = {r: [] for r in self.rungs}

    def report(self, trial: Hashable, epoch: int, values: Sequence[float]) -> bool:
        """Record ``trial``'s values after ``epoch``; whether it stops here."""
        if epoch not in self._seen:
            return False
        key = (trial, epoch)
        if key in self._decided:
            return self._decided[key]
        point = [v if d == "minimize" else -v for v, d in zip(values, self.directions, strict=True)]
        if any(not math.isfinite(v) for v in point):
            self._decided[key] = True
            return True
        seen = self._seen[epoch]
        seen.append(point)
        stop = ahead_of(seen, len(seen) - 1) >= math.ceil(len(seen) / self.eta)
        self._decided[key] = stop
        return stop
