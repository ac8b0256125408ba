"""Build a :class:`SearchSpace` from a preset name, a TOML/YAML/JSON file or a mapping.

The file vocabulary (the presets use it too)::

    name = "mine"                       # optional; defaults to the file's stem
    description = "what this space is for"

    [fixed]                             # pinned trial-config fields
    method = "ssn"

    [dims]                              # searched fields
    budget = { type = "float", low = 0.05, high = 2.0, log = true }
    mapping = ["single", "roundrobin"]  # a list is a choice
    groups = { low = 1, high = 6, when = { mapping = ["roundrobin"] } }

    [hp]                                # your own hyperparameters (see _user.py)
    width = [16, 32, 64]

``type`` is ``choice`` (with ``values``), ``int`` or ``float`` (with ``low``, ``high``,
optional ``log`` and ``step``); when omitted it follows from the keys and the field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from allocator._errors import ConfigError
from search_spaces._dims import Choice, Dimension, FloatRange, IntRange
from search_spaces._presets import PRESETS
from search_spaces._space import SearchSpace
from search_spaces._user import PREFIX, infer_type, is_user
from search_spaces._vocab import FIELDS, FIXED_ONLY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_space", "preset_names", "space_from_dict"]

_TOP_KEYS = {"name", "description", "fixed", "dims", "hp"}
_KEYS = {
    "choice": {"type", "values", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "float": {"type", "low", "high", "log", "step", "when"},
}
_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def preset_names() -> list[str]:
    """The names of the built-in spaces.

    Example:
        >>> preset_names()
        ['default', 'lowbudget', 'highbudget', 'baselines']
    """
    return list(PRESETS)


def load_space(spec: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """A search space from a preset name, a ``.toml``/``.yaml``/``.json`` file or a mapping.

    Raises :class:`allocator.ConfigError` naming the problem and what is allowed.

    Example:
        >>> space = load_space("default")
        >>> space.names
        ['budget', 'mapping', 'groups', 'downsample', 'templates', 'upsample']
    """
    if isinstance(spec, SearchSpace):
        return spec
    if isinstance(spec, Mapping):
        return space_from_dict(spec, source="space")
    text = str(spec)
    if isinstance(spec, str) and spec in PRESETS:
        return space_from_dict({"name": spec, **PRESETS[spec]}, source=f"preset {spec!r}")
    path = Path(text)
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(
            f"unknown space {text!r}: give a preset ({', '.join(PRESETS)}) "
            "or a .toml, .yaml or .json file"
        )
    if path.is_dir():
        raise ConfigError(f"space file {text!r} is a directory; give a .toml, .yaml or .json file")
    if not path.is_file():
        raise ConfigError(f"space file {text!r} does not exist")
    data = _read(path)
    data.setdefault("name", path.stem)
    return space_from_dict(data, source=f"space file {text!r}")


def space_from_dict(data: Mapping[str, Any], source: str = "space") -> SearchSpace:
    """A space from the file vocabulary (the inverse of :meth:`SearchSpace.to_dict`).

    Example:
        >>> space_from_dict({"dims": {"budget": {"low": 0.1, "high": 1.0}}}).names
        ['budget']
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a table of name, description, fixed, dims")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    name = data.get("name", "space")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name must be a non-empty string, got {name!r}")
    fixed = data.get("fixed", {})
    if not isinstance(fixed, Mapping):
        raise ConfigError(f"{source}: fixed must be a table of field = value, got {fixed!r}")
    dims_spec = data.get("dims", {})
    if not isinstance(dims_spec, Mapping):
        raise ConfigError(f"{source}: dims must be a table of field = range, got {dims_spec!r}")
    hp_spec = data.get("hp", {})
    if not isinstance(hp_spec, Mapping):
        raise ConfigError(f"{source}: hp must be a table of name = values or range, got {hp_spec!r}")
    fixed = dict(fixed)
    dims_spec = dict(dims_spec)
    for key, spec in hp_spec.items():  # user dimensions: [hp] name = choice | range | value
        target = dims_spec if isinstance(spec, (list, Mapping)) else fixed
        target[PREFIX + str(key)] = spec
    if not dims_spec:
        raise ConfigError(f"{source}: dims is empty; a space searches at least one field")
    try:
        dims = [_dimension(str(key), spec) for key, spec in dims_spec.items()]
        return SearchSpace(
            name,
            dims=tuple(dims),
            fixed=dict(fixed),
            description=str(data.get("description", "")),
        )
    except ConfigError as exc:
        message = str(exc).removeprefix(f"space {name!r}: ")
        raise ConfigError(f"{source}: {message}") from None


def _choice(name: str, values: list[Any], when: Mapping[str, Any] | None = None) -> Choice:
    """A choice of plain values (Optuna stores a choice's values, and compares them)."""
    for value in values:
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise ConfigError(
                f"dims.{name}: a choice holds numbers, strings, booleans or null, got "
                f"{type(value).__name__} {value!r}"
            )
    return Choice(name, tuple(values), when=when or {})


def _dimension(name: str, spec: Any) -> Dimension:
    if isinstance(spec, list):
        return _choice(name, spec)
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"dims.{name} must be a list of values or a table with type, low, high or values; "
            f"got {spec!r}"
        )
    kind = spec.get("type") or _infer_type(name, spec)
    if kind not in _KEYS:
        raise ConfigError(f"dims.{name}.type must be one of choice, int, float, got {kind!r}")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise ConfigError(
            f"dims.{name}: unknown key {unknown[0]!r} for type {kind}; "
            f"allowed: {', '.join(sorted(_KEYS[kind]))}"
        )
    when = spec.get("when", {})
    if not isinstance(when, Mapping):
        raise ConfigError(f"dims.{name}.when must be a table of field = [values], got {when!r}")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list):
            raise ConfigError(f"dims.{name}.values must be a list, got {values!r}")
        return _choice(name, values, when)
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"dims.{name}: {kind} range needs {key}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"dims.{name}.log must be true or false, got {log!r}")
    if kind == "int":
        return IntRange(name, spec["low"], spec["high"], log=log, step=spec.get("step", 1), when=when)
    return FloatRange(name, spec["low"], spec["high"], log=log, step=spec.get("step"), when=when)


def _infer_type(name: str, spec: Mapping[str, Any]) -> str:
    if "values" in spec:
        return "choice"
    if is_user(name):
        return infer_type(spec)
    field = FIELDS.get(name)
    if field is None:
        hint = f" ({FIXED_ONLY[name]}; put it in fixed)" if name in FIXED_ONLY else ""
        raise ConfigError(
            f"unknown dimension {name!r}{hint}; searchable fields: {', '.join(FIELDS)}"
        )
    if field.kind in (int, float):
        return field.kind.__name__
    raise ConfigError(f"dims.{name}: give type = choice, int or float")


def _read(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"space file {str(path)!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"space file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # parser errors differ per format; all mean "not readable"
        detail = " ".join(str(exc).split())
        raise ConfigError(f"space file {str(path)!r} is not valid {suffix[1:]}: {detail}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"space file {str(path)!r} must hold a table, got {type(data).__name__}")
    return data
