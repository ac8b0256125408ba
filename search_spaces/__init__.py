"""Declarative search spaces over the fields of a trial configuration.

A space is a set of dimensions (a choice, an integer range, a float range, each possibly
on a log scale and conditional on other fields) plus pinned values. It maps to Optuna
distributions (:meth:`SearchSpace.distributions`, :meth:`SearchSpace.suggest`) and back
to a trial config (:meth:`SearchSpace.to_config`).

Example:
    >>> from search_spaces import load_space
    >>> space = load_space("default")
    >>> space.to_config({"budget": 0.1, "mapping": "type", "downsample": "slice",
    ...                  "upsample": "repeat"})
    {'method': 'ssn', 'budget': 0.1, 'mapping': 'type', 'downsample': 'slice', 'upsample': 'repeat'}
"""

from search_spaces._dims import Choice, Dimension, FloatRange, IntRange
from search_spaces._load import load_space, preset_names, space_from_dict
from search_spaces._space import SearchSpace
from search_spaces._vocab import FIELDS, FIXED_ONLY, RULES

__all__ = [
    "FIELDS",
    "FIXED_ONLY",
    "RULES",
    "Choice",
    "Dimension",
    "FloatRange",
    "IntRange",
    "SearchSpace",
    "load_space",
    "preset_names",
    "space_from_dict",
]
