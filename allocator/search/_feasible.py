"""No wasted trial: the least budget each structural choice needs, from the core's plan.

An SSN needs at least its unshared parameters plus, per group, one shared parameter and
its generators' own (``mask`` scalars, ``emb`` projections). A budget below that makes
no network, and a trial sampled there fails after its worker started. So the space
samples the structural choices first (mapping, groups, templates, generators), asks
:class:`BudgetFloor` for the least budget of that configuration (the core's
``make_plan``, pure arithmetic: microseconds per call), and samples the budget only
within what is feasible. :func:`check_feasible` refuses, before the search, a space with
a structural choice for which the whole budget range is infeasible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from allocator._errors import BudgetError, ConfigError
from search_spaces import FloatRange, SearchSpace

__all__ = ["BudgetFloor", "budget_floor", "check_feasible"]

#: The config fields the least budget depends on.
STRUCTURE = ("mapping", "groups", "templates", "downsample", "upsample", "manual_map")
_MAX_CHECKED = 20_000  # structural combinations checked before the search


class BudgetFloor:
    """``floor(values) -> fraction | None``: the least budget, as a fraction of the
    model's parameters, for the structural choices in ``values`` (``None``: no floor,
    e.g. another method than ``ssn``).

    Example:
        >>> floor = BudgetFloor({"model": "cnn1d", "data": "mnist1d", "data_size": 200})  # doctest: +SKIP
        >>> floor({"method": "ssn", "mapping": "single", "upsample": "inter"})  # doctest: +SKIP
        0.0035...
    """

    def __init__(self, base: Mapping[str, Any]) -> None:
        from trials.config import TrialConfig
        from trials.user_data import load_data

        self.base = dict(base)
        self.defaults = TrialConfig.from_dict(self.base).to_dict()
        data = load_data(self.base)
        self.shape, self.classes = tuple(data.input_shape), int(data.num_classes)
        self._models: dict[str, tuple[list[Any], int, int]] = {}
        self._cache: dict[tuple[Any, ...], int | None] = {}
        self.slots, self.unshared, self.total = self._model({})

    def _model(self, hp: Mapping[str, Any]) -> tuple[list[Any], int, int]:
        """Shareable slots, unshared count and total count of the model built with the
        user dimensions ``hp`` (a user factory's widths change them; the zoo ignores hp)."""
        import allocator
        from trials.user import is_import_path, model_source

        spec = str(self.base["model"])
        hp = {**dict(self.base.get("hp") or {}), **hp} if is_import_path(spec) else {}
        key = repr(sorted(hp.items()))
        if key not in self._models:
            model = model_source(spec, input_shape=self.shape, num_classes=self.classes, hp=hp,
                                 has_trial=self.base.get("trial") is not None)()
            slots, unshared = allocator.find_slots(model)
            self._models[key] = (slots, unshared, int(allocator.count_parameters(model)))
        return self._models[key]

    def count(self, values: Mapping[str, Any]) -> int | None:
        """The least budget in parameters (``None``: no floor)."""
        from search_spaces._user import fold

        cfg = fold({**self.defaults, **values})
        slots, _unshared, _total = self._model(cfg.get("hp") or {})
        if cfg.get("method", "ssn") != "ssn" or not slots:
            return None
        key = (repr(sorted((cfg.get("hp") or {}).items())),
               *(repr(cfg.get(k)) for k in STRUCTURE))
        if key not in self._cache:
            self._cache[key] = self._least(cfg)
        return self._cache[key]

    def __call__(self, values: Mapping[str, Any]) -> float | None:
        need = self.count(values)
        if need is None:
            return None
        from search_spaces._user import fold

        total = self._model(fold({**self.defaults, **values}).get("hp") or {})[2]
        fraction = need / total
        while math.floor(fraction * total) < need:  # the trial floors fraction * total
            fraction = math.nextafter(fraction, math.inf)
        return fraction

    def _least(self, cfg: Mapping[str, Any]) -> int | None:
        """Bisect the core's plan for the least budget it accepts (``None``: the
        structure itself is invalid; the trial reports why)."""
        from allocator._budget import downsample_for
        from allocator._mapping import assign_groups
        from allocator._plan import make_plan

        slots, unshared, total = self._model(cfg.get("hp") or {})
        mapping = cfg["mapping"]
        try:  # a learned mapping's groups are known after pretraining: round-robin's stand in
            assignment = assign_groups("roundrobin" if mapping == "learned" else mapping,
                                       slots, cfg.get("groups") or (1 if mapping == "learned" else None),
                                       seed=int(cfg.get("seed", 0)), manual_map=cfg.get("manual_map"))
        except ConfigError:
            return None

        def fits(budget: int) -> bool:
            try:
                make_plan(slots, unshared, total, budget, assignment,
                          downsample=downsample_for(cfg["downsample"], budget, total),
                          upsample=cfg["upsample"],
                          templates=int(cfg["templates"]))
            except BudgetError:
                return False
            return True

        guess = self._guess(slots, unshared, assignment, cfg)  # the core's formula today, checked by its plan
        if fits(guess) and (guess <= 1 or not fits(guess - 1)):
            return guess
        lo, hi = 1, max(2, total)
        while not fits(hi):
            lo, hi = hi, hi * 2
            if hi > 1 << 40:
                return None
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo


    @staticmethod
    def _guess(slots: list[Any], unshared: int, assignment: list[int],
               cfg: Mapping[str, Any]) -> int:
        from allocator._budget import DOWNSAMPLE_BELOW_SIZE
        from allocator._plan import minimum_budget

        # a least budget lies below the model's size (and `fits` checks the guess)
        return minimum_budget(slots, unshared, assignment,
                              downsample=cfg["downsample"] or DOWNSAMPLE_BELOW_SIZE,
                              upsample=cfg["upsample"], templates=int(cfg["templates"]))


def budget_floor(space: SearchSpace, base: Mapping[str, Any]) -> BudgetFloor | None:
    """The floor for ``space``'s budget dimension, or ``None`` if it searches no budget."""
    if "budget" not in space.names or not isinstance(space.dimension("budget"), FloatRange):
        return None
    return BudgetFloor(base)


def check_feasible(space: SearchSpace, base: Mapping[str, Any]) -> None:
    """:class:`ConfigError` (one line) if a structural choice of ``space`` needs more
    budget than the top of its budget range."""
    floor = budget_floor(space, base)
    if floor is None:
        return
    dim = space.dimension("budget")
    assert isinstance(dim, FloatRange)  # budget_floor returns None otherwise
    high = dim.high
    for n, values in enumerate(space.structures()):
        if n >= _MAX_CHECKED:
            return
        need = floor(values)
        if need is not None and need > high:
            shown = ", ".join(f"{k}={v}" for k, v in values.items() if k in STRUCTURE and v is not None)
            raise ConfigError(
                f"space {space.name!r}: budget at most {high:g} is infeasible for {shown} of "
                f"model {base['model']!r}, which needs at least {need:.4g} "
                f"({floor.count(values):,} parameters); raise budget.high or narrow the choices"
            )
