"""npas core: turn any PyTorch model plus a parameter budget into a Shapeshifter Network."""

from allocator._errors import (
    BudgetError,
    CheckpointError,
    ClusterError,
    ConfigError,
    DataError,
    NPASError,
    StorageError,
)

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "NPASError",
    "StorageError",
]
