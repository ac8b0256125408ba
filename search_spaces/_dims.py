"""The three kinds of dimension: a choice, an integer range, a float range.

A dimension knows its own domain, its Optuna distribution and how to ask an Optuna
trial for a value. Conditions (``when``) are plain data here; the space evaluates them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from allocator._errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["Choice", "Dimension", "FloatRange", "IntRange"]

#: A condition: field name -> the values that field must take for the dimension to apply.
When = tuple[tuple[str, tuple[Any, ...]], ...]


def _freeze_when(name: str, when: Mapping[str, Sequence[Any]] | When) -> When:
    items = when.items() if isinstance(when, Mapping) else when
    out = []
    for key, values in items:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(
                f"dimension {name!r}: when.{key} must be a non-empty list of values, "
                f"got {values!r}"
            )
        out.append((str(key), tuple(values)))
    return tuple(sorted(out))


def _items(when: Mapping[str, Sequence[Any]] | When) -> When:
    """The frozen form (what ``__post_init__`` leaves in ``when``)."""
    return tuple((k, tuple(v)) for k, v in (when.items() if isinstance(when, Mapping) else when))


@dataclass(frozen=True)
class Choice:
    """A categorical dimension.

    Example:
        >>> Choice("upsample", ["repeat", "inter"]).contains("inter")
        True
    """

    name: str
    values: Sequence[Any]
    when: Mapping[str, Sequence[Any]] | When = field(default=())

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values:
            raise ConfigError(f"dimension {self.name!r}: values must not be empty")
        if len(set(values)) != len(values):
            raise ConfigError(f"dimension {self.name!r}: values repeat, got {list(values)}")
        for v in values:
            if not isinstance(v, (str, int, float, bool)):
                raise ConfigError(
                    f"dimension {self.name!r}: values must be strings or numbers, got {v!r}"
                )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "when", _freeze_when(self.name, self.when))

    def contains(self, value: Any) -> bool:
        return any(
            value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values
        )

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.values))

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_categorical(self.name, list(self.values))

    def grid_values(self) -> list[Any]:
        return list(self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "choice", "values": list(self.values)}
        if self.when:
            out["when"] = {k: list(v) for k, v in _items(self.when)}
        return out


@dataclass(frozen=True)
class IntRange:
    """An integer range ``low..high`` inclusive, on a log scale if ``log``.

    Example:
        >>> IntRange("groups", 1, 8).grid_values()
        [1, 2, 3, 4, 5, 6, 7, 8]
    """

    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1
    when: Mapping[str, Sequence[Any]] | When = field(default=())

    def __post_init__(self) -> None:
        for attr in ("low", "high", "step"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"dimension {self.name!r}: {attr} must be an integer, got {v!r}")
        if self.low > self.high:
            raise ConfigError(
                f"dimension {self.name!r}: low must be <= high, got {self.low} > {self.high}"
            )
        if self.step < 1:
            raise ConfigError(f"dimension {self.name!r}: step must be >= 1, got {self.step}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ConfigError(
                f"dimension {self.name!r}: a log range needs low >= 1 and step 1, "
                f"got low={self.low}, step={self.step}"
            )
        if (self.high - self.low) % self.step:
            raise ConfigError(
                f"dimension {self.name!r}: high - low must be a multiple of step, "
                f"got {self.low}..{self.high} step {self.step}"
            )
        object.__setattr__(self, "when", _freeze_when(self.name, self.when))

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        _check_grid_size(self.name, (self.high - self.low) // self.step + 1,
                         f"{self.low}..{self.high} step {self.step}")
        return list(range(self.low, self.high + 1, self.step))

    def describe(self) -> str:
        return f"an integer in {self.low}..{self.high}" + (" (log)" if self.log else "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "int", "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step != 1:
            out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in _items(self.when)}
        return out


@dataclass(frozen=True)
class FloatRange:
    """A float range ``low..high``, on a log scale if ``log``; finite if ``step`` is set.

    Example:
        >>> FloatRange("budget", 0.02, 4.0, log=True).contains(0.5)
        True
    """

    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    when: Mapping[str, Sequence[Any]] | When = field(default=())

    def __post_init__(self) -> None:
        for attr in ("low", "high") + (("step",) if self.step is not None else ()):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"dimension {self.name!r}: {attr} must be a number, got {v!r}")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        if self.low > self.high:
            raise ConfigError(
                f"dimension {self.name!r}: low must be <= high, got {self.low:g} > {self.high:g}"
            )
        if self.log and self.low <= 0:
            raise ConfigError(
                f"dimension {self.name!r}: a log range needs low > 0, got {self.low:g}"
            )
        if self.step is not None:
            if self.log or self.step <= 0:
                raise ConfigError(
                    f"dimension {self.name!r}: step must be > 0 and not combined with log, "
                    f"got step={self.step}, log={self.log}"
                )
            object.__setattr__(self, "step", float(self.step))
        object.__setattr__(self, "when", _freeze_when(self.name, self.when))

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def raised_to(self, floor: float | None) -> FloatRange:
        """This range from ``floor`` up (on its step grid; itself if the floor is below
        it); ``ConfigError`` if the floor lies above it.

        Example:
            >>> FloatRange("budget", 0.01, 1.0, log=True).raised_to(0.2).low
            0.2
        """
        if floor is None or floor <= self.low:
            return self
        low = floor
        if self.step:
            low = self.low + math.ceil((floor - self.low) / self.step - 1e-9) * self.step
        if low > self.high:
            raise ConfigError(
                f"{self.name} must be at least {floor:.4g} for this configuration, above the "
                f"range's top {self.high:g}"
            )
        return FloatRange(self.name, low, self.high, log=self.log, step=self.step, when=self.when)

    def grid_values(self) -> list[Any]:
        if self.step is None:
            raise ConfigError(
                f"dimension {self.name!r}: a float range without step has no grid; "
                "give it a step, make it a choice, or use another sampler"
            )
        steps = (self.high - self.low) / self.step
        _check_grid_size(self.name, steps + 1, f"{self.low:g}..{self.high:g} step {self.step:g}")
        n = int(round(steps))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def describe(self) -> str:
        return f"a number in {self.low:g}..{self.high:g}" + (" (log)" if self.log else "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in _items(self.when)}
        return out


Dimension = Choice | IntRange | FloatRange


#: The most values one dimension may give a grid search (the whole grid: MAX_GRID).
MAX_GRID_VALUES = 10_000


def _check_grid_size(name: str, count: float, what: str) -> None:
    """:class:`ConfigError` before a range with too many grid values is listed."""
    if not count <= MAX_GRID_VALUES:  # also NaN and inf
        raise ConfigError(
            f"dimension {name!r} ({what}) has {count:.3g} grid values; a grid search takes "
            f"at most {MAX_GRID_VALUES:,} per dimension: give a larger step, a choice, or "
            "use the tpe, nsga2 or random sampler"
        )
