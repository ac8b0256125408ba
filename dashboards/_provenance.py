"""Where a study came from: the command that made it and the library versions.

``npas search`` records its settings with the study (``npas_settings``; never the
storage URL) and every trial records the versions it ran with (``npas_result.versions``).
The command is rebuilt from the settings: it is the search that would make the study
again, not a copy of what was typed.
"""

from __future__ import annotations

import json
import platform
import shlex
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

__all__ = ["reader_versions", "search_command", "trial_versions"]

#: ``npas search --space`` presets (search_spaces/_presets.py); any other name was a file.
_PRESETS = ("default", "lowbudget", "highbudget", "baselines")
#: Trial options that ``npas search`` has flags for; the rest are ``--set FIELD=VALUE``.
_OPTION_FLAGS = ("data_size", "batch_size", "max_steps_per_epoch", "lr")
_DEFAULT_RUNNER = "trials:run"
_READER_PACKAGES = ("npas", "optuna", "optuna-dashboard", "sqlalchemy", "pandas", "numpy",
                    "plotly", "matplotlib")


def search_command(settings: Mapping[str, Any]) -> str | None:
    """The ``npas search`` command that runs the recorded search again (``None``: no record).

    Example:
        >>> search_command({"study": "s", "model": "mlp", "data": "mnist1d", "space_name": "default",
        ...                 "trials": 4, "epochs": 1, "trial_options": {"data_size": 600}})
        'npas search --study s --model mlp --data mnist1d --space default --trials 4 --epochs 1 --data-size 600'
    """
    if not settings or "model" not in settings:
        return None
    parts = ["npas", "search"]

    def flag(name: str, value: Any, default: Any = None) -> None:
        if value is not None and value != default:
            parts.extend([f"--{name}", _text(value)])

    flag("study", settings.get("study"))
    flag("model", settings.get("model"))
    flag("data", settings.get("data"))
    flag("trial", settings.get("trial"))
    space = settings.get("space_name") or ""
    flag("space", space if space in _PRESETS else f"{space or 'SPACE'}.toml")
    flag("trials", settings.get("trials"))
    flag("concurrency", settings.get("concurrency"), 1)
    flag("epochs", settings.get("epochs"))
    flag("seed", settings.get("seed"), 0)
    flag("sampler", settings.get("sampler"), "tpe")
    objective = settings.get("objective")
    for item in [objective] if isinstance(objective, str) else list(objective or ()):
        flag("objective", item)  # repeatable
    flag("ray-address", settings.get("ray_address"))
    flag("working-dir", settings.get("working_dir"))
    for path in settings.get("py_modules") or ():
        flag("py-modules", path)
    flag("cpus-per-trial", settings.get("cpus_per_trial"), 1.0)
    flag("gpus-per-trial", settings.get("gpus_per_trial"), 0.0)
    flag("keep-models", settings.get("keep_models"), "none")
    options = dict(settings.get("trial_options") or {})
    for name in _OPTION_FLAGS:
        flag(name.replace("_", "-"), options.pop(name, None))
    for name, value in sorted(options.items()):
        parts.extend(["--set", f"{name}={json.dumps(value)}"])
    return shlex.join(parts)


def space_was_a_file(settings: Mapping[str, Any]) -> bool:
    """Whether the search read its space from a file (the command names it generically)."""
    return bool(settings) and (settings.get("space_name") or "") not in _PRESETS


def trial_versions(results: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The distinct ``versions`` the trials recorded (normally one), most common first."""
    counts: dict[str, int] = {}
    for result in results:
        versions = result.get("versions") if isinstance(result, Mapping) else None
        if isinstance(versions, Mapping) and versions:
            key = json.dumps(dict(versions), sort_keys=True)
            counts[key] = counts.get(key, 0) + 1
    return [json.loads(k) for k, _ in sorted(counts.items(), key=lambda kv: -kv[1])]


def reader_versions() -> dict[str, str]:
    """The versions of what wrote the report (Python and the reading libraries)."""
    out = {"python": platform.python_version()}
    for name in _READER_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
