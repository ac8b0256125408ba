"""A space's validation, as pure functions of its dimensions and pinned values.

:class:`~search_spaces._space.SearchSpace` calls these once, when it is built: each
dimension's kind and bounds against the trial-config vocabulary, the conditions under
which each entry applies (the method's rules and the space's ``when`` clauses), their
order (no cycles) and that every entry can apply at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allocator._errors import ConfigError
from search_spaces._dims import Choice, Dimension, FloatRange, IntRange, _items
from search_spaces._user import check_user_name, is_user
from search_spaces._vocab import FIELDS, FIXED_ONLY, RULE_DEFAULTS, RULES, check_value

__all__ = ["build_conditions", "check_dimension", "check_reachable", "possible", "topological_order"]

Conditions = Mapping[str, Mapping[str, frozenset[Any]]]


def check_dimension(where: str, dim: Dimension) -> None:
    """``ConfigError`` unless ``dim`` searches a known field with values it allows."""
    if is_user(dim.name):  # the user's own: its factory or trial function checks values
        check_user_name(where, dim.name, FIELDS)
        return
    spec = FIELDS.get(dim.name)
    if spec is None:
        hint = f" ({FIXED_ONLY[dim.name]}; put it in fixed)" if dim.name in FIXED_ONLY else ""
        raise ConfigError(
            f"{where}: unknown dimension {dim.name!r}{hint}; searchable fields: "
            + ", ".join(FIELDS)
        )
    if isinstance(dim, Choice):
        for value in dim.values:
            problem = check_value(spec, value)
            if problem:
                raise ConfigError(f"{where}: {dim.name} choice {problem}")
        return
    wanted = IntRange if spec.kind is int else FloatRange if spec.kind is float else Choice
    if not isinstance(dim, wanted):
        kind = {IntRange: "int", FloatRange: "float", Choice: "choice"}[wanted]
        raise ConfigError(
            f"{where}: {dim.name} is {spec.describe()}; give it type {kind!r} or 'choice'"
        )
    for attr in ("low", "high"):
        problem = check_value(spec, getattr(dim, attr))
        if problem:
            raise ConfigError(f"{where}: {dim.name}.{attr} {problem}")


def _names(values: frozenset[Any]) -> str:
    """A rule's allowed values for a message, sorted; None (the field left unset) as
    ``unset``."""
    return ", ".join(sorted("unset" if v is None else str(v) for v in values))


def build_conditions(
    where: str, name: str, entries: set[str], dims: Mapping[str, Dimension]
) -> dict[str, frozenset[Any]]:
    """When entry ``name`` applies: ``{field: allowed values}`` from the method's rules
    and its own ``when`` clause (``entries``: every searched or pinned field)."""
    conds: dict[str, frozenset[Any]] = {}
    for key, allowed in RULES.get(name, {}).items():
        if key in entries or key in RULE_DEFAULTS:
            conds[key] = allowed
        else:
            raise ConfigError(
                f"{where}: {name} only applies when {key} is one of "
                f"{_names(allowed)}; add {key} to dims or fixed"
            )
    dim = dims.get(name)
    for key, values in _items(dim.when) if dim is not None else ():
        if key not in entries:
            raise ConfigError(
                f"{where}: dimension {name!r} has a condition on {key!r}, which the space "
                f"neither searches nor fixes; it has: {', '.join(sorted(entries))}"
            )
        if key == name:
            raise ConfigError(f"{where}: dimension {name!r} has a condition on itself")
        if key in FIELDS:
            for v in values:
                problem = check_value(FIELDS[key], v)
                if problem:
                    raise ConfigError(f"{where}: {name}.when.{key} {problem}")
        conds[key] = conds.get(key, frozenset(values)) & frozenset(values)
    return conds


def topological_order(where: str, entries: list[str], conditions: Conditions) -> tuple[str, ...]:
    """``entries`` ordered so that every entry comes after those its conditions read.

    >>> topological_order("s", ["groups", "mapping"], {"groups": {"mapping": frozenset()},
    ...                                                "mapping": {}})
    ('mapping', 'groups')
    """
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*chain, name))
            raise ConfigError(f"{where}: conditions form a cycle: {cycle}")
        state[name] = 1
        for dep in conditions[name]:
            if dep in conditions:
                visit(dep, (*chain, name))
        state[name] = 2
        order.append(name)

    for name in entries:
        visit(name, ())
    return tuple(order)


def possible(
    name: str, fixed: Mapping[str, Any], dims: Mapping[str, Dimension]
) -> frozenset[Any] | None:
    """The values ``name`` can take in a space (``None``: unbounded)."""
    if name in fixed:
        return frozenset([fixed[name]])
    dim = dims.get(name)
    if isinstance(dim, Choice):
        return frozenset(dim.values)
    if dim is None and name in RULE_DEFAULTS:
        return frozenset([RULE_DEFAULTS[name]])
    return None


def check_reachable(
    where: str, conditions: Conditions, fixed: Mapping[str, Any], dims: Mapping[str, Dimension]
) -> None:
    """``ConfigError`` if some entry's conditions can never all hold."""
    for name, conds in conditions.items():
        for key, allowed in conds.items():
            can = possible(key, fixed, dims)
            if can is not None and not (can & allowed):
                what = "dimension" if name in dims else "fixed value"
                raise ConfigError(
                    f"{where}: {what} {name!r} never applies: it needs {key} in "
                    f"{{{_names(allowed)}}}, "
                    f"but {key} can only be "
                    f"{', '.join(sorted(map(str, can)))}"
                )
