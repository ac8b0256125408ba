"""A search space: dimensions and pinned values over trial-config fields, with conditions.

A space is validated once, when it is built; after that every method is a pure function
of its arguments. Conditions come from two places: the rules of the method (``templates``
matters only for the ``wavg``/``emb``/``avg`` generators, ``groups`` only for the
``roundrobin``/``random``/``learned`` mappings, every SSN knob only for ``method = ssn``)
and the space's own ``when`` clauses. A dimension that does not apply to a trial is never
suggested to Optuna and never appears in its config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from allocator._errors import ConfigError
from search_spaces._conditions import (
    build_conditions,
    check_dimension,
    check_reachable,
    possible,
    topological_order,
)
from search_spaces._dims import Choice, Dimension, FloatRange, IntRange
from search_spaces._user import check_user_name, fold, is_user, unfold
from search_spaces._vocab import FIELDS, FIXED_ONLY, RULE_DEFAULTS, check_value

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

#: ``floor(values) -> least budget (or None)`` of the structural choices in ``values``.
BudgetFloor = Callable[[Mapping[str, Any]], "float | None"]

__all__ = ["SearchSpace"]

#: More grid points than this is not a "small space"; use a sampler instead.
MAX_GRID = 10_000


@dataclass(frozen=True)
class SearchSpace:
    """Dimensions to search and values to pin, over the fields of a trial config.

    Example:
        >>> from search_spaces import Choice, FloatRange, IntRange, SearchSpace
        >>> space = SearchSpace(
        ...     "tiny",
        ...     dims=[FloatRange("budget", 0.1, 1.0, log=True),
        ...           Choice("mapping", ["type", "roundrobin"]),
        ...           IntRange("groups", 1, 4)],
        ...     fixed={"method": "ssn"},
        ... )
        >>> space.to_config({"budget": 0.5, "mapping": "type"})
        {'method': 'ssn', 'budget': 0.5, 'mapping': 'type'}
        >>> space.to_config({"budget": 0.5, "mapping": "roundrobin", "groups": 2})["groups"]
        2
    """

    name: str
    dims: tuple[Dimension, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    _conditions: dict[str, dict[str, frozenset[Any]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _dims_by_name: dict[str, Dimension] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))
        object.__setattr__(self, "_dims_by_name", {d.name: d for d in dims})
        where = f"space {self.name!r}"
        names = [d.name for d in dims]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{where}: dimension {name!r} is given twice")
        for dim in dims:
            check_dimension(where, dim)
        for key, value in self.fixed.items():
            if key in names:
                raise ConfigError(f"{where}: {key!r} is both searched and fixed; keep one")
            if key in FIELDS:
                problem = check_value(FIELDS[key], value)
                if problem:
                    raise ConfigError(f"{where}: fixed.{key} {problem}")
            elif is_user(key):
                check_user_name(where, key, FIELDS)
            elif key not in FIXED_ONLY:
                raise ConfigError(
                    f"{where}: fixed.{key} is not a search field; allowed: "
                    + ", ".join([*FIELDS, *FIXED_ONLY])
                )
        entries = self._entries()
        by_name = self._dims_by_name
        conditions = {n: build_conditions(where, n, set(entries), by_name) for n in entries}
        object.__setattr__(self, "_conditions", conditions)
        object.__setattr__(self, "_order", topological_order(where, entries, conditions))
        check_reachable(where, conditions, self.fixed, by_name)
        if self._can_be("mapping", "manual") and "manual_map" not in self.fixed:
            raise ConfigError(
                f"{where}: mapping 'manual' needs fixed.manual_map (layer name -> group)"
            )

    # ----------------------------------------------------------------- public API

    @property
    def names(self) -> list[str]:
        """The searched field names, in the order they are suggested."""
        return [n for n in self._order if n in self._dims_by_name]

    def dimension(self, name: str) -> Dimension:
        """The dimension searching ``name``; ``ConfigError`` if the space has none."""
        try:
            return self._dims_by_name[name]
        except KeyError:
            raise ConfigError(
                f"space {self.name!r} has no dimension {name!r}; it has: "
                + ", ".join(self.names)
            ) from None

    def conditions(self, name: str) -> dict[str, frozenset[Any]]:
        """When ``name`` applies: ``{field: values}``, all of which must hold."""
        return dict(self._conditions[name])

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every dimension as an Optuna distribution (conditional ones included).

        Example:
            >>> from search_spaces import load_space
            >>> sorted(load_space("default").distributions())[:3]
            ['budget', 'downsample', 'groups']
        """
        return {d.name: d.distribution() for d in self.dims}

    def suggest(
        self, trial: optuna.Trial, *, budget_floor: BudgetFloor | None = None
    ) -> dict[str, Any]:
        """Ask an Optuna trial for every dimension that applies; return the params.

        With ``budget_floor`` (``floor(values) -> least budget or None``) the structural
        choices are asked first and the budget last, within ``[max(low, floor), high]``:
        no trial gets a budget its configuration cannot be built with. ``ConfigError``
        if the floor is above the range (:meth:`structures` lets a search check that
        before it starts).

        Example:
            >>> from search_spaces import Choice, FloatRange, SearchSpace
            >>> import optuna
            >>> space = SearchSpace("s", [FloatRange("budget", 0.01, 1.0),
            ...                           Choice("upsample", ["mask"])], {"method": "ssn"})
            >>> trial = optuna.create_study().ask()
            >>> space.suggest(trial, budget_floor=lambda values: 0.5)["budget"] >= 0.5
            True
        """
        values = self._defaults()
        params: dict[str, Any] = {}
        order = self._order
        budget = self._dims_by_name.get("budget")
        late = budget_floor is not None and isinstance(budget, FloatRange) and not any(
            "budget" in conds for conds in self._conditions.values()
        )
        if late:
            order = (*[n for n in order if n != "budget"], "budget")
        for name in order:
            if not self._active(name, values):
                continue
            dim = self._dims_by_name.get(name)
            if dim is None:
                values[name] = self.fixed[name]
            elif late and isinstance(dim, FloatRange) and dim is budget and budget_floor:
                values[name] = params[name] = dim.raised_to(budget_floor(values)).suggest(trial)
            else:
                values[name] = params[name] = dim.suggest(trial)
        return params

    def structures(self) -> Iterator[dict[str, Any]]:
        """Every combination of the values that apply, budget left out (fixed values
        included): what :meth:`suggest` hands a budget floor.

        Example:
            >>> from search_spaces import Choice, FloatRange, SearchSpace
            >>> space = SearchSpace("s", [FloatRange("budget", 0.1, 1.0),
            ...                           Choice("upsample", ["mask", "inter"])], {"method": "ssn"})
            >>> [v["upsample"] for v in space.structures()]
            ['mask', 'inter']
        """
        for _params, values in self._walk(0, self._defaults(), {}, skip="budget", both=True):
            yield values

    def to_config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trial-config fields that ``params`` (Optuna's trial params) stand for.

        Pinned values come first, then the searched ones; dimensions and pinned values
        that do not apply are left out, so that the trial's own defaults hold for them.
        A param for a dimension that does not apply is ignored.
        """
        for key in params:
            if key not in self._dims_by_name:
                raise ConfigError(
                    f"space {self.name!r}: param {key!r} is not one of its dimensions "
                    f"({', '.join(self.names)})"
                )
        values = self._defaults()
        config: dict[str, Any] = {}
        for name in self._order:
            if not self._active(name, values):
                continue
            dim = self._dims_by_name.get(name)
            if dim is None:
                value = self.fixed[name]
            elif name not in params:
                raise ConfigError(f"space {self.name!r}: param {name!r} is missing")
            else:
                value = params[name]
                if not dim.contains(value):
                    raise ConfigError(
                        f"space {self.name!r}: param {name} must be {dim.describe()}, "
                        f"got {value!r}"
                    )
            values[name] = config[name] = value
        fixed_first = [n for n in config if n not in self._dims_by_name]
        ordered = {n: config[n] for n in fixed_first + [n for n in config if n not in fixed_first]}
        return fold(ordered)  # user dimensions: one ``hp`` table

    def from_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The params that produce ``config`` (the inverse of :meth:`to_config`)."""
        config = unfold(config)
        values = self._defaults()
        params: dict[str, Any] = {}
        for name in self._order:
            if not self._active(name, values):
                continue
            if name in self._dims_by_name:
                if name not in config:
                    raise ConfigError(f"config has no {name!r}, which space {self.name!r} searches")
                params[name] = config[name]
            values[name] = config.get(name, self.fixed.get(name))
        return params

    def grid(self, limit: int = MAX_GRID) -> list[dict[str, Any]]:
        """Every distinct combination of params that applies, for a grid search.

        Float ranges need a ``step``. ``ConfigError`` past ``limit`` points.

        Example:
            >>> from search_spaces import Choice, IntRange, SearchSpace
            >>> SearchSpace("g", [Choice("mapping", ["type", "random"]),
            ...                   IntRange("groups", 2, 3)]).grid()
            [{'mapping': 'type'}, {'mapping': 'random', 'groups': 2}, {'mapping': 'random', 'groups': 3}]
        """
        out: list[dict[str, Any]] = []
        for params in self._walk(0, self._defaults(), {}):
            out.append(params)
            if len(out) > limit:
                raise ConfigError(
                    f"space {self.name!r} has more than {limit} grid points; "
                    "use the tpe, nsga2 or random sampler"
                )
        return out

    def example(self) -> dict[str, Any]:
        """One valid set of params: the first choice or the low end of every range."""
        return next(iter(self._walk(0, self._defaults(), {}, first_only=True)))

    def capped(self, name: str, high: int) -> SearchSpace:
        """This space with the integer dimension ``name`` limited to ``..high``.

        A search uses it to keep ``groups`` within the model's count of shareable layers.
        ``ConfigError`` if nothing of the range is left; the space itself if no change.

        Example:
            >>> from search_spaces import load_space
            >>> load_space("default").capped("groups", 4).dimension("groups").high
            4
        """
        dim = self._dims_by_name.get(name)
        if dim is None:
            if name in self.fixed and isinstance(self.fixed[name], int) and self.fixed[name] > high:
                raise ConfigError(
                    f"space {self.name!r}: fixed {name} = {self.fixed[name]} exceeds {high}, "
                    f"the most this model allows"
                )
            return self
        if not isinstance(dim, IntRange) or dim.high <= high:
            if isinstance(dim, Choice) and any(
                isinstance(v, int) and v > high for v in dim.values
            ):
                kept = tuple(v for v in dim.values if not (isinstance(v, int) and v > high))
                if not kept:
                    raise ConfigError(
                        f"space {self.name!r}: every {name} choice exceeds {high}, "
                        "the most this model allows"
                    )
                return self._replace(Choice(name, kept, when=dim.when))
            return self
        if dim.low > high:
            raise ConfigError(
                f"space {self.name!r}: {name} starts at {dim.low}, above {high}, "
                "the most this model allows"
            )
        top = high - (high - dim.low) % dim.step
        return self._replace(
            IntRange(name, dim.low, top, log=dim.log, step=dim.step, when=dim.when)
        )

    def _replace(self, new: Dimension) -> SearchSpace:
        dims = tuple(new if d.name == new.name else d for d in self.dims)
        return SearchSpace(self.name, dims, dict(self.fixed), self.description)

    def to_dict(self) -> dict[str, Any]:
        """The space in the file vocabulary (round-trips through :func:`load_space`)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        out["dims"] = {d.name: d.to_dict() for d in self.dims}
        return out

    def describe(self) -> str:
        """A few lines for humans: one per pinned value and per dimension."""
        lines = [f"space {self.name}" + (f": {self.description}" if self.description else "")]
        for key, value in self.fixed.items():
            lines.append(f"  {key} = {value!r}")
        for name in self.names:
            dim = self._dims_by_name[name]
            cond = self._conditions[name]
            when = ", ".join(
                f"{k} in {{{', '.join(map(str, sorted(v, key=str)))}}}"
                for k, v in sorted(cond.items())
                if k not in self.fixed and k in self._dims_by_name
            )
            lines.append(f"  {name}: {dim.describe()}" + (f"  (when {when})" if when else ""))
        return "\n".join(lines)

    # ----------------------------------------------------------------- internals

    def _entries(self) -> list[str]:
        return [d.name for d in self.dims] + list(self.fixed)

    def _defaults(self) -> dict[str, Any]:
        entries = set(self._entries())
        return {k: v for k, v in RULE_DEFAULTS.items() if k not in entries}

    def _active(self, name: str, values: Mapping[str, Any]) -> bool:
        conds = self._conditions[name]
        return all(key in values and values[key] in allowed for key, allowed in conds.items())

    def _can_be(self, name: str, value: Any) -> bool:
        can = possible(name, self.fixed, self._dims_by_name)
        return can is not None and value in can

    def _walk(
        self,
        index: int,
        values: dict[str, Any],
        params: dict[str, Any],
        first_only: bool = False,
        *,
        skip: str | None = None,
        both: bool = False,
    ) -> Iterator[Any]:
        """Params of every grid point (with ``both``: ``(params, values)``; with
        ``skip``: that dimension left out)."""
        order = self._order
        while index < len(order) and (
            not self._active(order[index], values)
            or order[index] not in self._dims_by_name
            or order[index] == skip
        ):
            name = order[index]
            if self._active(name, values) and name in self.fixed:
                values = {**values, name: self.fixed[name]}
            index += 1
        if index == len(order):
            yield (dict(params), dict(values)) if both else dict(params)
            return
        name = order[index]
        dim = self._dims_by_name[name]
        if first_only:
            choices: list[Any] = [dim.values[0] if isinstance(dim, Choice) else dim.low]
        else:
            # a float range without step (not the budget) stands for its low end here
            if both and isinstance(dim, FloatRange) and not dim.step:
                choices = [dim.low]
            else:
                choices = dim.grid_values()
        for value in choices:
            yield from self._walk(index + 1, {**values, name: value}, {**params, name: value},
                                  first_only, skip=skip, both=both)
