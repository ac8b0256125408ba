"""Budget arithmetic: pure functions, no torch.

Vocabulary: a group holds ``m`` shared parameters ``theta``; a layer needs ``n`` weights.

* ``n <= m`` (downsampling): the layer combines ``K = min(ceil(m / n), k_max)`` templates,
  windows of ``n`` consecutive values of ``theta``. The windows of a group's layers are laid
  end to end around ``theta`` (cyclically), so every value of ``theta`` lies in some window
  whenever the group's total window length reaches ``m``. With ``K = 1`` the layer is a
  plain slice and learns nothing of its own.
* ``n > m`` (upsampling): the layer expands all of ``theta`` to ``n`` values.

The method writes ``K = floor(m / n)``; ``ceil`` is used so that a group never holds a
value that no layer reads (every group parameter gets a gradient, and the whole budget
is used). ``k_max`` is chosen per group, at most ``templates``: where a group's share can
buy either a larger ``theta`` or more templates, the larger total wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from allocator._vocab import DOWNSAMPLE, UPSAMPLE

__all__ = [
    "DOWNSAMPLE",
    "DOWNSAMPLE_BELOW_SIZE",
    "DOWNSAMPLE_FROM_SIZE",
    "EMB_DIM",
    "MASK_WINDOW",
    "UPSAMPLE",
    "GroupChoice",
    "LayerGen",
    "best_group",
    "downsample_for",
    "group_capacity",
    "group_cost",
    "group_floor",
    "layer_generator",
    "resolve_budget",
    "smallest_group",
    "split_budget",
]

#: Size of the per-layer embedding of the ``emb`` generator (the paper's value).
EMB_DIM = 24
#: The ``mask`` generator learns one scalar per window of this many weights (a 3x3 kernel).
MASK_WINDOW = 9


@dataclass(frozen=True)
class LayerGen:
    """How one layer builds its weight from its group.

    ``combine`` mixes ``templates`` windows of ``window`` values (slice, wavg, emb, avg);
    ``expand`` (repeat, inter, hash, mask) then grows the result to the layer's size when the
    window is smaller than the layer. ``params`` counts what the layer learns itself.
    """

    combine: str
    templates: int
    window: int
    expand: str | None
    params: int

    @property
    def name(self) -> str:
        if self.expand is not None:
            return self.expand if self.combine == "slice" else f"{self.combine}+{self.expand}"
        return self.combine


def resolve_budget(budget: object, total: int) -> int:
    """Turn a budget (an int count, or a float fraction of ``total``) into a count.

    >>> resolve_budget(0.5, 1000), resolve_budget(250, 1000), resolve_budget(4.0, 1000)
    (500, 250, 4000)
    """
    from allocator._errors import BudgetError

    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise BudgetError(
            f"budget must be an int (a parameter count) or a float (a fraction of the "
            f"model's {total:,} parameters), got {budget!r}"
        )
    if isinstance(budget, float):
        if not math.isfinite(budget) or budget <= 0:
            raise BudgetError(
                f"budget must be a positive fraction of the model's parameters, got {budget!r}"
            )
        count = math.floor(budget * total)
        if count < 1:
            raise BudgetError(
                f"budget {budget!r} is less than one parameter of the model's {total:,}"
            )
        return count
    if budget <= 0:
        raise BudgetError(f"budget must be > 0, got {budget}")
    return int(budget)


#: ``downsample=None``'s generator below the model's own size, and from it up.
DOWNSAMPLE_BELOW_SIZE, DOWNSAMPLE_FROM_SIZE = "slice", "wavg"


def downsample_for(down: str | None, count: int, total: int) -> str:
    """The downsampling generator of a budget of ``count`` parameters for a model of
    ``total``: ``down`` if given, else ``slice`` below the model's own size (measured as
    good as ``wavg`` or better there, ``docs/ssn.md``) and ``wavg`` from it up (``slice``
    cannot use more values than the model has weights).

    >>> downsample_for(None, 500, 5000), downsample_for(None, 20000, 5000), downsample_for("emb", 1, 2)
    ('slice', 'wavg', 'emb')
    """
    if down is not None:
        return down
    return DOWNSAMPLE_BELOW_SIZE if count < total else DOWNSAMPLE_FROM_SIZE


def layer_generator(n: int, m: int, down: str, up: str, k_max: int) -> LayerGen:
    """The generator a layer of ``n`` weights gets from a group of ``m`` parameters.

    >>> layer_generator(100, 250, "wavg", "inter", 4)
    LayerGen(combine='wavg', templates=3, window=100, expand=None, params=3)
    >>> layer_generator(100, 40, "wavg", "mask", 4).params  # ceil(60 / 9) mask scalars
    7
    """
    if n <= m:
        k = min(-(-m // n), 1 if down == "slice" else k_max)
        if k == 1:
            return LayerGen("slice", 1, n, None, 0)
        own = {"wavg": k, "emb": EMB_DIM}.get(down, 0)
        return LayerGen(down, k, n, None, own)
    own = -(-(n - m) // MASK_WINDOW) if up == "mask" else 0
    return LayerGen("slice", 1, m, up, own)


def group_cost(m: int, sizes: Sequence[int], down: str, up: str, k_max: int) -> int:
    """Trainable parameters of a group of size ``m``: theta, every layer's generator
    parameters, and the ``emb`` projection ``A, b`` shared by the group.

    >>> group_cost(300, [100, 100], "emb", "inter", 4)  # 300 + 2 * 24 + 3 * 25
    423
    """
    cost = m
    k_emb = 0
    for n in sizes:
        gen = layer_generator(n, m, down, up, k_max)
        cost += gen.params
        if gen.combine == "emb":
            k_emb = max(k_emb, gen.templates)
    return cost + k_emb * (EMB_DIM + 1)


def smallest_group(sizes: Sequence[int], up: str) -> int:
    """The fewest values a group of layers of ``sizes`` may hold: one, or with ``mask`` a
    mask window's worth (:data:`MASK_WINDOW`) where a layer is larger. ``mask`` scales
    each further window of a layer's tiled copies of the group by one learned scalar, so
    from a group of fewer values every masked window is a scaled copy of the same few:
    on cnn1d/MNIST-1D three groups of 3, 6 and 4 values (``mask``, budget 0.128) stayed
    at chance, 10.2 %, and three of 9 (budget 679) trained to 70-77 % (``docs/ssn.md``,
    Budget split).

    >>> smallest_group([100, 40], "hash"), smallest_group([100, 40], "mask"), smallest_group([4], "mask")
    (1, 9, 4)
    """
    return min(MASK_WINDOW, max(sizes)) if up == "mask" else 1


def group_floor(sizes: Sequence[int], down: str, up: str, k_max: int) -> int:
    """The least a group of layers of ``sizes`` costs: :func:`smallest_group` values and
    the generators' own parameters at that size.

    >>> group_floor([100, 40], "slice", "hash", 1)
    1
    >>> group_floor([100, 40], "slice", "mask", 1)  # 9 + ceil(91 / 9) + ceil(31 / 9)
    24
    """
    return group_cost(smallest_group(sizes, up), sizes, down, up, k_max)


def group_capacity(sizes: Sequence[int], down: str, k_max: int) -> int:
    """The largest ``m`` whose every value some layer's windows still read."""
    return sum(sizes) * (1 if down == "slice" else k_max)


def _largest(cost: Callable[[int], int], lo: int, hi: int, limit: int) -> int | None:
    """Largest ``m`` in ``[lo, hi]`` with ``cost(m) <= limit`` (``cost`` non-decreasing)."""
    if hi < lo or cost(lo) > limit:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class GroupChoice:
    """The size of one group and the template cap it uses."""

    size: int
    k_max: int
    cost: int


def best_group(
    share: int, sizes: Sequence[int], down: str, up: str, templates: int
) -> GroupChoice | None:
    """The group (size, template cap) that spends the most of ``share``, of at least
    :func:`smallest_group` values.

    Every cap from ``templates`` down to 1 is tried; the largest total cost wins, ties
    going to more templates. ``None`` when not even the smallest group fits.

    >>> best_group(1000, [100] * 4, "emb", "inter", 4)
    GroupChoice(size=804, k_max=4, cost=1000)
    """
    best: GroupChoice | None = None
    floor = smallest_group(sizes, up)
    for k in range(templates, 0, -1):
        if k > 1 and down == "slice":
            continue

        def cost(m: int, k: int = k) -> int:
            return group_cost(m, sizes, down, up, k)

        m = _largest(cost, floor, group_capacity(sizes, down, k), share)
        if m is not None and (best is None or cost(m) > best.cost):
            best = GroupChoice(m, k, cost(m))
    return best


def split_budget(
    available: int, groups: Sequence[Sequence[int]], down: str, up: str, templates: int
) -> list[GroupChoice] | None:
    """Split ``available`` parameters across groups in proportion to their weights.

    ``groups`` lists each group's layer sizes. Returns one choice per group whose costs
    sum to at most ``available``, or ``None`` when even one parameter per group does not
    fit. What rounding leaves over goes to the largest groups that can still grow.

    >>> [c.size for c in split_budget(1000, [[300, 300], [400]], "slice", "repeat", 1)]
    [600, 400]
    """
    count = len(groups)
    floors = [group_floor(g, down, up, templates) for g in groups]
    if sum(floors) > available:
        return None
    weights = [sum(g) for g in groups]
    # Proportional shares; a group whose share is below its own minimum is pinned there.
    pinned: set[int] = set()
    while True:
        free = available - sum(floors[i] for i in pinned)
        wsum = sum(weights[i] for i in range(count) if i not in pinned)
        shares = {i: free * weights[i] // wsum for i in range(count) if i not in pinned}
        low = {i for i, s in shares.items() if s < floors[i]}
        if not low:
            break
        pinned |= low
    choices: list[GroupChoice] = []
    for i, sizes in enumerate(groups):
        choice = best_group(shares.get(i, floors[i]), sizes, down, up, templates)
        if choice is None:  # pinned at its minimum
            choice = GroupChoice(smallest_group(sizes, up), templates, floors[i])
        choices.append(choice)
    left = available - sum(c.cost for c in choices)
    order = sorted(range(count), key=lambda i: -weights[i])
    grown = True
    while grown and left > 0:
        grown = False
        for i in order:
            old = choices[i]
            new = best_group(old.cost + left, groups[i], down, up, templates)
            if new is not None and new.cost > old.cost:
                choices[i] = new
                left -= new.cost - old.cost
                grown = True
    return choices
