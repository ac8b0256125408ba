"""The exceptions npas raises for anything a user can get wrong.

Every error names the parameter, the value received and what is allowed, so that the
command line can print it as one line on stderr and exit with status 2.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "NPASError",
    "StorageError",
]


class NPASError(Exception):
    """Base class of every error npas raises on bad input or an unusable environment."""


class ConfigError(NPASError, ValueError):
    """A configuration value is invalid: unknown name, out of range, wrong type."""


class BudgetError(ConfigError):
    """The parameter budget cannot be met (<= 0, or below the configuration's minimum)."""


class DataError(NPASError):
    """A dataset cannot be found or read."""


class CheckpointError(NPASError):
    """A checkpoint is corrupt, truncated, or not one npas wrote."""


class StorageError(NPASError):
    """The study store (a SQL database) is unreachable or rejects the request."""


class ClusterError(NPASError):
    """The Ray cluster cannot be reached or used."""
