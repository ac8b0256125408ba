"""The built-in spaces, written in the same vocabulary as a user's TOML or YAML file."""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

_SSN_MAPPINGS = ["single", "type", "roundrobin", "random", "learned"]
_GROUPS = {"type": "int", "low": 1, "high": 8}

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "description": "SSN over budgets 2 % to 400 %, every generator and mapping",
        "fixed": {"method": "ssn"},
        "dims": {
            "budget": {"type": "float", "low": 0.02, "high": 4.0, "log": True},
            "mapping": {"type": "choice", "values": _SSN_MAPPINGS},
            "groups": _GROUPS,
            "downsample": {"type": "choice", "values": ["wavg", "emb", "avg", "slice"]},
            "templates": {"type": "int", "low": 1, "high": 8},
            "upsample": {"type": "choice", "values": ["repeat", "inter", "hash", "mask"]},
        },
    },
    "lowbudget": {
        "description": "SSN below the model's size (1 % to 50 %): the upsampling generators",
        "fixed": {"method": "ssn"},
        "dims": {
            "budget": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
            "mapping": {"type": "choice", "values": _SSN_MAPPINGS},
            "groups": _GROUPS,
            "downsample": {"type": "choice", "values": ["wavg", "emb", "avg", "slice"]},
            "templates": {"type": "int", "low": 1, "high": 4},
            "upsample": {"type": "choice", "values": ["repeat", "inter", "hash", "mask"]},
        },
    },
    "highbudget": {
        "description": "SSN above the model's size (1x to 8x): templates and their mixing",
        "fixed": {"method": "ssn", "upsample": "inter"},
        "dims": {
            "budget": {"type": "float", "low": 1.0, "high": 8.0, "log": True},
            "mapping": {"type": "choice", "values": _SSN_MAPPINGS},
            "groups": _GROUPS,
            "downsample": {"type": "choice", "values": ["wavg", "emb", "avg"]},
            "templates": {"type": "int", "low": 1, "high": 8},
        },
    },
    "baselines": {
        "description": "the full model against SSN, reduced width and HashedNets at equal budget",
        "fixed": {"mapping": "single", "downsample": "slice", "upsample": "hash"},
        "dims": {
            "method": {"type": "choice", "values": ["full", "ssn", "reduced_width", "hashed"]},
            "budget": {"type": "float", "low": 0.02, "high": 1.0, "log": True},
        },
    },
}
