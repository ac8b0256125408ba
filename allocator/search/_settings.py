"""The settings of one search: validated, defaulted, and recorded with the study.

A study records its settings (never the storage URL, which may hold a password) so that
``--resume`` continues it with the same space, model, data, epochs, seed and objectives,
whatever the command line gives for those, and tells the user when they differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
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

#: The largest seed: resumed and joining controllers seed their samplers with the seed
#: plus the trials seen plus 1,000,003 per controller, below NumPy's 2**32 limit.
MAX_SEED = 2**31 - 1

#: Settings that define a study; a resumed study keeps them.
STUDY_DEFINING = ("model", "data", "trial", "space", "epochs", "seed", "objective", "trial_options")

#: Config fields the search sets itself (the rest come from the space or trial_options).
_OWN_FIELDS = ("model", "data", "trial", "epochs", "seed")


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search needs; only ``study`` has no default.

    ``space`` is a preset name, a TOML/YAML/JSON file, or a space in the file vocabulary.
    ``trial_options`` sets further trial-config fields for every trial (``data_size``,
    ``batch_size``, ``max_steps_per_epoch``, ``lr``...); the space's values win over them.
    ``model`` is a zoo spec or ``MODULE:ATTR`` (a factory returning an ``nn.Module``),
    ``data`` a dataset name or ``MODULE:ATTR`` (a loader), ``trial`` ``MODULE:FUNCTION``
    (``fn(model, config, report)``; default: npas's loop). ``objective`` is one or more
    of ``NAME:max``, ``NAME:min``, ``step_time``, ``peak_memory``. On a Ray cluster,
    ``working_dir`` (a directory) and ``py_modules`` (package directories or modules)
    ship the user's code to every worker (Ray's runtime environment).
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
    objective: str | Sequence[str] | None = None
    trial: str | None = None
    ray_address: str | None = None
    working_dir: str | None = None
    py_modules: tuple[str, ...] = ()
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    keep_models: str = "none"
    artifacts: str | None = None
    trial_options: Mapping[str, Any] = field(default_factory=dict)
    runner: Any = DEFAULT_RUNNER  # ``module:function``, or a callable (the Python API)
    verbose: bool = False
    max_retries: int = 1  # runs more of a trial whose worker died, before it is failed
    db_timeout: float = 300.0  # seconds the study store may stay unreachable
    early_stop: str = "none"  # none | pareto | asha (allocator/search/_epochs.py)
    engine: str = "pool"  # pool | tune (allocator/search/_engines.py)
    log: tuple[str, ...] = ()  # Tune logger callbacks: tensorboard, mlflow

    def __post_init__(self) -> None:
        object.__setattr__(self, "trial_options", MappingProxyType(dict(self.trial_options)))
        object.__setattr__(self, "objective", one_objective_form(self.objective))
        object.__setattr__(self, "py_modules", tuple(self.py_modules))
        object.__setattr__(self, "log", tuple(self.log))
        if isinstance(self.space, Mapping):
            object.__setattr__(self, "space", MappingProxyType(dict(self.space)))

    def validate(self) -> None:
        """:class:`ConfigError` for the first setting out of its domain."""
        if not isinstance(self.study, str) or not self.study.strip():
            raise ConfigError(f"study must be a non-empty name, got {self.study!r}")
        if len(self.study) > 500:
            raise ConfigError(f"study name must be at most 500 characters, got {len(self.study)}")
        if self.study != self.study.strip() or not self.study.isprintable():
            raise ConfigError(
                f"study name {self.study!r} has control characters or spaces at its ends; "
                "use printable characters, e.g. mlp-mnist1d"
            )
        for name in ("trials", "concurrency", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                or not 0 <= self.seed <= MAX_SEED):
            raise ConfigError(
                f"seed must be an integer in 0..{MAX_SEED} (a resumed study's samplers add "
                f"to it and must stay below 2**32), got {self.seed!r}"
            )
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
        if self.working_dir is not None and not Path(self.working_dir).is_dir():
            raise ConfigError(f"--working-dir must be a directory, got {self.working_dir!r}")
        for path in self.py_modules:
            if not Path(path).exists():
                raise ConfigError(
                    f"--py-modules must be a package directory or a module file, got {path!r}"
                )
        for key in self.trial_options:
            if key in _OWN_FIELDS:
                raise ConfigError(
                    f"trial option {key!r} is a setting of its own; use --{key} instead"
                )

    def code_shipping(self) -> dict[str, Any]:
        """How the user's code reaches the workers: Ray's ``runtime_env`` (from
        ``working_dir`` and ``py_modules``) and the modules every node must import."""
        from allocator.search._cluster import code_runtime_env
        from trials.user import user_modules

        return {
            "runtime_env": code_runtime_env(self.working_dir, self.py_modules),
            "user_modules": user_modules(self.base_config()),
        }

    def base_config(self) -> dict[str, Any]:
        """The trial-config fields every trial shares (before the space's own)."""
        base: dict[str, Any] = {
            "model": self.model,
            "data": self.data,
            "epochs": self.epochs,
            "seed": self.seed,
            "threads": max(1, int(self.cpus_per_trial)),
        }
        if self.trial is not None:
            base["trial"] = self.trial
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
        out["objective"] = list(self.objective) if isinstance(self.objective, tuple) else self.objective
        out["py_modules"] = list(self.py_modules)
        if not isinstance(self.runner, str):
            out["runner"] = DEFAULT_RUNNER  # callables of the Python API: the default trial
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
            elif key == "objective":
                same = one_objective_form(new) == one_objective_form(old)
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


def one_objective_form(value: Any) -> Any:
    """``--objective`` values in one form: ``None``, one string, or a tuple of two or more.

    Example:
        >>> one_objective_form(["f1:max"]), one_objective_form(["a:max", "b:min"])
        ('f1:max', ('a:max', 'b:min'))
    """
    if value is None or isinstance(value, str):
        return value
    items = tuple(value)
    return None if not items else items[0] if len(items) == 1 else items


def runs_npas_trials(runner: Any) -> bool:
    """Whether ``runner`` runs ``trials.run`` (so its configs are checked up front): the
    default runner, or the Python API's runner that carries the user's callables."""
    from trials.user import Callables

    return runner == DEFAULT_RUNNER or isinstance(runner, Callables)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
