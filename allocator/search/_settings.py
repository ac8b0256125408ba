"""The settings of one search: validated, defaulted, and recorded with the study.

A study records its settings (never the storage URL, which may hold a password) so that
``--resume`` continues it with the same space, model, data, epochs, seed and objectives,
whatever the command line gives for those, and tells the user when they differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from allocator._errors import ConfigError
from allocator.search._objectives import SAMPLERS, objectives
from allocator.search._worker import DEFAULT_RUNNER
from search_spaces import load_space

__all__ = ["KEEP_MODELS", "SearchSettings"]

KEEP_MODELS = ("none", "pareto", "all")

#: Settings that define a study; a resumed study keeps them.
STUDY_DEFINING = ("model", "data", "space", "epochs", "seed", "objective", "trial_options")

#: Config fields the search sets itself (the rest come from the space or trial_options).
_OWN_FIELDS = ("model", "data", "epochs", "seed")


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search needs; only ``study`` has no default.

    ``space`` is a preset name, a TOML/YAML/JSON file, or a space in the file vocabulary.
    ``trial_options`` sets further trial-config fields for every trial (``data_size``,
    ``batch_size``, ``max_steps_per_epoch``, ``lr``...); the space's values win over them.
    ``runner`` names the trial function as ``module:function``.

    Example:
        >>> SearchSettings("demo", trials=4).base_config()["epochs"]
        5
    """

    study: str
    model: str = "cnn1d"
    data: str = "mnist1d"
    space: str | Mapping[str, Any] = "default"
    trials: int = 24
    concurrency: int = 1
    epochs: int = 5
    seed: int = 0
    storage: str | None = None
    sampler: str = "tpe"
    objective: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    keep_models: str = "none"
    artifacts: str | None = None
    trial_options: Mapping[str, Any] = field(default_factory=dict)
    runner: str = DEFAULT_RUNNER
    verbose: bool = False
    max_retries: int = 1  # runs more of a trial whose worker died, before it is failed
    db_timeout: float = 300.0  # seconds the study store may stay unreachable
    early_stop: str = "none"  # none | pareto | asha (allocator/search/_epochs.py)
    engine: str = "pool"  # pool | tune (allocator/search/_engines.py)
    log: tuple[str, ...] = ()  # Tune logger callbacks: tensorboard, mlflow

    def __post_init__(self) -> None:
        object.__setattr__(self, "trial_options", MappingProxyType(dict(self.trial_options)))
        object.__setattr__(self, "log", tuple(self.log))
        if isinstance(self.space, Mapping):
            object.__setattr__(self, "space", MappingProxyType(dict(self.space)))

    def validate(self) -> None:
        """:class:`ConfigError` for the first setting out of its domain."""
        if not isinstance(self.study, str) or not self.study.strip():
            raise ConfigError(f"study must be a non-empty name, got {self.study!r}")
        if len(self.study) > 500:
            raise ConfigError(f"study name must be at most 500 characters, got {len(self.study)}")
        for name in ("trials", "concurrency", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        objectives(self.objective)
        if self.keep_models not in KEEP_MODELS:
            raise ConfigError(
                f"keep_models must be one of {', '.join(KEEP_MODELS)}, got {self.keep_models!r}"
            )
        if not (_number(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise ConfigError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial!r}")
        if not (_number(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise ConfigError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial!r}")
        mr = self.max_retries
        if isinstance(mr, bool) or not isinstance(mr, int) or mr < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {mr!r}")
        if not (_number(self.db_timeout) and self.db_timeout > 0):
            raise ConfigError(f"db_timeout must be a number of seconds > 0, got {self.db_timeout!r}")
        for key in self.trial_options:
            if key in _OWN_FIELDS:
                raise ConfigError(
                    f"trial option {key!r} is a setting of its own; use --{key} instead"
                )

    def base_config(self) -> dict[str, Any]:
        """The trial-config fields every trial shares (before the space's own)."""
        base: dict[str, Any] = {
            "model": self.model,
            "data": self.data,
            "epochs": self.epochs,
            "seed": self.seed,
            "threads": max(1, int(self.cpus_per_trial)),
        }
        if self.gpus_per_trial > 0:
            base["device"] = "cuda"
        base.update(self.trial_options)
        return base

    def record(self, space: Mapping[str, Any]) -> dict[str, Any]:
        """What the study keeps about this search (JSON; no storage URL, no password)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("storage", "verbose", "space", "trial_options")
        }
        out["trial_options"] = dict(self.trial_options)
        out["space"] = dict(space)
        out["space_name"] = space.get("name", "")
        return out

    @classmethod
    def resumed(cls, record: Mapping[str, Any], given: Mapping[str, Any]) -> SearchSettings:
        """The settings of a resumed study: its record, updated by ``given``.

        Giving a study-defining setting (model, data, space, epochs, seed, objective,
        trial options) with another value than the study's is a :class:`ConfigError`.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        stored = {k: v for k, v in record.items() if k in known}
        for key in STUDY_DEFINING:
            if key not in given or key not in stored:
                continue
            new, old = given[key], stored[key]
            if key == "space":
                same = _plain(load_space(new).to_dict()) == _plain(old)
            else:
                same = _plain(new) == _plain(old)
            if not same:
                shown = record.get("space_name", old) if key == "space" else old
                raise ConfigError(
                    f"{key} {new!r} differs from the resumed study's {shown!r}; a resumed "
                    "study keeps its model, data, space, epochs, seed, objective and trial options"
                )
        merged = {**stored, **{k: v for k, v in given.items() if k not in STUDY_DEFINING}}
        return cls(**merged)

    def artifacts_dir(self, storage_file: Path | None) -> Path:
        """Where kept weights go: ``artifacts``, else beside a SQLite file, else ./."""
        if self.artifacts:
            return Path(self.artifacts)
        if storage_file is not None:
            return storage_file.resolve().parent / f"{storage_file.stem}-artifacts"
        return Path.cwd() / "npas-artifacts"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
