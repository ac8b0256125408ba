"""User dimensions: a space may search the user's own hyperparameters beside npas's fields.

In a space file they live in their own ``[hp]`` table, in the same vocabulary as
``[dims]`` (a list is a choice, a table a range; a plain value pins it)::

    [hp]
    width = [16, 32, 64]
    lr = { low = 1e-4, high = 1e-1, log = true }
    dropout = 0.1

Inside a space they are dimensions (or fixed values) named ``hp.NAME``, so that Optuna,
the dashboard and ``to_dict`` show where they come from; a trial config holds them as
one table, ``hp = {NAME: value}``, which the model factory and the trial function get.
npas does not know their domains: the factory and the trial function check them.

Example:
    >>> fold({"method": "ssn", "hp.width": 32})
    {'method': 'ssn', 'hp': {'width': 32}}
    >>> unfold({"hp": {"width": 32}})
    {'hp.width': 32}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allocator._errors import ConfigError

__all__ = ["PREFIX", "check_user_name", "fold", "infer_type", "is_user", "unfold"]

PREFIX = "hp."


def is_user(name: str) -> bool:
    """Whether a dimension or fixed name is a user dimension (``hp.NAME``)."""
    return name.startswith(PREFIX)


def check_user_name(where: str, name: str, npas_fields: Mapping[str, Any]) -> None:
    """:class:`ConfigError` unless ``hp.NAME`` has a Python identifier that is not one of
    npas's own fields (those are searched under ``[dims]``)."""
    bare = name[len(PREFIX):]
    if not bare.isidentifier():
        raise ConfigError(f"{where}: user dimension {bare!r} must be a Python identifier")
    if bare in npas_fields or bare in ("trial", "hp", "model", "data"):
        raise ConfigError(
            f"{where}: user dimension {bare!r} is a field of npas; search it under [dims]"
        )


def infer_type(spec: Mapping[str, Any]) -> str:
    """``int`` when both ends of a range are integers, else ``float``."""
    ends = [spec.get("low"), spec.get("high")]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in ends):
        return "int"
    return "float"


def fold(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config with its ``hp.NAME`` entries gathered into one ``hp`` table."""
    out = {k: v for k, v in config.items() if not is_user(k)}
    hp = {k[len(PREFIX):]: v for k, v in config.items() if is_user(k)}
    if hp:
        out["hp"] = {**dict(out.get("hp") or {}), **hp}
    return out


def unfold(config: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`fold`: ``hp = {NAME: v}`` as ``hp.NAME`` entries."""
    out = {k: v for k, v in config.items() if k != "hp"}
    for key, value in dict(config.get("hp") or {}).items():
        out[PREFIX + key] = value
    return out
