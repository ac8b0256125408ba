"""npas core: turn any PyTorch model plus a parameter budget into a Shapeshifter Network.

>>> import torch, allocator
>>> model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 10))
>>> ssn = allocator.shapeshift(model, budget=0.5)
>>> ssn(torch.randn(4, 32)).shape
torch.Size([4, 10])

This package loads only the core (torch, numpy); the search service lives in
``allocator.search`` and the command line in ``allocator.cli``.
"""

from allocator._budget import DOWNSAMPLE, UPSAMPLE
from allocator._errors import (
    BudgetError,
    CheckpointError,
    ClusterError,
    ConfigError,
    DataError,
    NPASError,
    StorageError,
)
from allocator._export import load, materialize, save
from allocator._layers import SHAREABLE_KINDS, find_slots
from allocator._layers import trainable_count as count_parameters
from allocator._mapping import MAPPINGS
from allocator._plan import Allocation, Plan
from allocator._ssn import SSN, shapeshift

__all__ = [
    "DOWNSAMPLE",
    "MAPPINGS",
    "SHAREABLE_KINDS",
    "SSN",
    "UPSAMPLE",
    "Allocation",
    "BudgetError",
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "NPASError",
    "Plan",
    "StorageError",
    "count_parameters",
    "find_slots",
    "load",
    "materialize",
    "save",
    "shapeshift",
]
