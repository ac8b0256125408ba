"""The configuration of one trial: plain, validated, JSON round-trippable data.

A :class:`TrialConfig` says everything a trial needs (model, data, parameter method,
budget, SSN generators, training schedule, device) and nothing about the search around
it. It is frozen, checks every value when built, and survives ``json.dumps`` /
``json.loads`` through :meth:`TrialConfig.to_dict` and :meth:`TrialConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from allocator._errors import BudgetError, ConfigError
from allocator._vocab import DEFAULTS, DOWNSAMPLE, MAPPINGS, METHODS, UPSAMPLE

__all__ = [
    "DEVICES",
    "DOWNSAMPLE",
    "MAPPINGS",
    "METHODS",
    "OPTIMIZERS",
    "SCHEDULES",
    "UPSAMPLE",
    "TrialConfig",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("cosine", "step", "none")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, validated on construction.

    ``budget`` is an ``int`` (an absolute count of trainable parameters) or a ``float``
    (a fraction of the full model's trainable count, so ``0.25`` is a quarter and
    ``4.0`` four times the model); it is ignored for ``method="full"``.

    Example:
        >>> cfg = TrialConfig(model="mlp", budget=0.1, epochs=3)
        >>> TrialConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    model: str = field(default="cnn1d", metadata=_help("model spec from trials.zoo"))
    data: str = field(default="mnist1d", metadata=_help("dataset name from trials.data"))
    data_root: str | None = field(default=None, metadata=_help("dataset cache directory"))
    data_size: int | None = field(
        default=None, metadata=_help("cap on the number of examples (quick runs)")
    )
    method: str = field(default="ssn", metadata=_help("one of " + ", ".join(METHODS)))
    budget: int | float = field(
        default=0.25,
        metadata=_help("parameter budget: an int count or a float fraction of the model"),
    )
    groups: int | None = field(
        default=None, metadata=_help("SSN parameter groups (None: the mapping decides)")
    )
    templates: int = field(default=DEFAULTS["templates"],
                           metadata=_help("SSN maximum templates per layer"))
    downsample: str | None = field(
        default=DEFAULTS["downsample"],
        metadata=_help("one of " + ", ".join(DOWNSAMPLE)
                       + " (None: slice below the model's size, wavg from it up)"))
    upsample: str = field(default=DEFAULTS["upsample"],
                          metadata=_help("one of " + ", ".join(UPSAMPLE)))
    mapping: str = field(default=DEFAULTS["mapping"],
                         metadata=_help("one of " + ", ".join(MAPPINGS)))
    manual_map: dict[str, int] | None = field(
        default=None, metadata=_help("layer name -> group, for mapping=manual")
    )
    pretrain_epochs: int = field(
        default=2, metadata=_help("epochs of the single-group SSN for mapping=learned")
    )
    epochs: int = field(default=10, metadata=_help("training epochs"))
    batch_size: int = field(default=128, metadata=_help("training batch size"))
    optimizer: str = field(
        default="sgd", metadata=_help("sgd (momentum 0.9, nesterov) or adamw")
    )
    lr: float = field(default=0.1, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=5e-4, metadata=_help("weight decay (weights only)"))
    schedule: str = field(default="cosine", metadata=_help("one of " + ", ".join(SCHEDULES)))
    label_smoothing: float = field(default=0.0, metadata=_help("label smoothing in [0, 1)"))
    grad_clip: float = field(
        default=5.0,
        metadata=_help("clip the gradients' global L2 norm to this before each step (0: off)"),
    )
    seed: int = field(default=0, metadata=_help("seed of data split, init and shuffling"))
    threads: int = field(default=1, metadata=_help("CPU threads for torch"))
    device: str = field(default="auto", metadata=_help("one of " + ", ".join(DEVICES)))
    amp: bool = field(default=True, metadata=_help("bfloat16 autocast (CUDA only)"))
    max_steps_per_epoch: int | None = field(
        default=None, metadata=_help("cap on training steps per epoch (quick tests)")
    )
    eval_test: bool = field(
        default=False, metadata=_help("also evaluate on the test split (final models only)")
    )
    trial: str | None = field(
        default=None,
        metadata=_help("your training function fn(model, config, report), as module:function "
                       "(default: npas's classification loop)"),
    )
    hp: dict[str, Any] | None = field(
        default=None,
        metadata=_help("your own hyperparameters (the space's user dimensions), for the model "
                       "factory and the trial function"),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _check_type(f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self._check_values()

    def _check_values(self) -> None:
        _choice("method", self.method, METHODS)
        if self.downsample is not None:
            _choice("downsample", self.downsample, DOWNSAMPLE)
        _choice("upsample", self.upsample, UPSAMPLE)
        _choice("mapping", self.mapping, MAPPINGS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        for name in ("model", "data"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string, got ''")
        if not math.isfinite(self.budget) or self.budget <= 0:
            raise BudgetError(
                "budget must be a positive number (an int count or a float fraction), "
                f"got {self.budget!r}"
            )
        for name in ("templates", "epochs", "batch_size", "threads"):
            _at_least(name, getattr(self, name), 1)
        for name in ("groups", "data_size", "max_steps_per_epoch"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        _at_least("seed", self.seed, 0)
        _at_least("pretrain_epochs", self.pretrain_epochs, 1 if self.mapping == "learned" else 0)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name, hint in (("weight_decay", ""), ("grad_clip", " (0: no clipping)")):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0{hint}, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
            )
        if self.mapping == "manual" and self.manual_map is None:
            raise ConfigError(
                "mapping 'manual' needs manual_map (layer name -> group), got None"
            )
        if self.trial is not None and ":" not in self.trial:
            raise ConfigError(f"trial must be MODULE:FUNCTION (e.g. train:fit), got {self.trial!r}")
        if self.hp:
            clash = sorted(set(self.hp) & {f.name for f in dataclasses.fields(self)})
            if clash:
                raise ConfigError(
                    f"user hyperparameter {clash[0]!r} is a trial-config field of npas; search "
                    "it as an npas dimension, or give yours another name"
                )
            if ":" not in self.model and self.trial is None:
                raise ConfigError(
                    f"user hyperparameters ({', '.join(sorted(self.hp))}) need a model factory "
                    f"(--model MODULE:ATTR) or a trial function (--trial); got model {self.model!r}"
                )
        if self.manual_map is not None and self.mapping != "manual":
            raise ConfigError(
                f"manual_map is only allowed with mapping='manual', got mapping={self.mapping!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-able dict (a fresh copy).

        Example:
            >>> TrialConfig(method="full").to_dict()["method"]
            'full'
        """
        out = dataclasses.asdict(self)
        if self.manual_map is not None:
            out["manual_map"] = dict(self.manual_map)
        if self.hp is not None:
            out["hp"] = dict(self.hp)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Build a configuration from :meth:`to_dict` output; unknown keys are errors.

        Example:
            >>> TrialConfig.from_dict({"model": "mlp", "epochs": 2}).epochs
            2
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a trial config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown trial config field {unknown[0]!r}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> TrialConfig:
        """A copy with some fields changed (validated again).

        Example:
            >>> TrialConfig().replace(epochs=1).epochs
            1
        """
        return dataclasses.replace(self, **changes)


# --- validation helpers -------------------------------------------------------------

_STR = ("model", "data", "method", "upsample", "mapping", "optimizer", "schedule", "device")
_OPT_STR = ("data_root", "trial", "downsample")
_INT = ("templates", "pretrain_epochs", "epochs", "batch_size", "seed", "threads")
_OPT_INT = ("groups", "data_size", "max_steps_per_epoch")
_FLOAT = ("lr", "weight_decay", "label_smoothing", "grad_clip")
_BOOL = ("amp", "eval_test")


def _check_type(name: str, value: Any) -> Any:
    """Check one field's type; returns the value normalised (ints accepted as floats)."""
    if name in _STR or (name in _OPT_STR and value is not None):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    elif name in _INT or (name in _OPT_INT and value is not None):
        if not _is_int(value):
            raise ConfigError(f"{name} must be an int, got {value!r}")
    elif name in _FLOAT:
        if not _is_number(value):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    elif name in _BOOL:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif name == "budget":
        if not _is_number(value):
            raise BudgetError(
                "budget must be a positive number (an int count or a float fraction), "
                f"got {value!r}"
            )
    elif name == "manual_map" and value is not None:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and _is_int(v) for k, v in value.items()
        ):
            raise ConfigError(
                f"manual_map must be a dict of layer name -> int group, got {value!r}"
            )
        return dict(value)
    elif name == "hp" and value is not None:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
        ):
            raise ConfigError(
                f"hp must be a dict of name -> string, number or boolean, got {value!r}"
            )
        return dict(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")
