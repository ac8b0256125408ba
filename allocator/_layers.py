"""Find the shareable weights of an arbitrary model.

A *slot* is one weight tensor that a Shapeshifter Network generates: the weight of a
``Linear``, ``Conv*``, ``ConvTranspose*``, ``Embedding``/``EmbeddingBag``, the projection
weights of ``MultiheadAttention`` and the weight matrices of ``RNN``/``LSTM``/``GRU``.
A weight tied between modules (the same ``Parameter`` object in several places) is one
slot with several owners. Every other trainable parameter stays with its layer and is
counted as *unshared*.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["SHAREABLE_KINDS", "Slot", "find_slots", "trainable_count"]

_WEIGHT_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
    nn.EmbeddingBag,
)
_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

#: Layer kinds whose weights are shared; anything else is counted as unshared.
SHAREABLE_KINDS = (
    "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, Embedding, EmbeddingBag, "
    "MultiheadAttention projections, RNN/LSTM/GRU weights"
)


@dataclass(frozen=True)
class Slot:
    """One generated weight: where it lives, its kind and its shape.

    ``owners`` are qualified parameter names (``"encoder.0.weight"``); more than one
    when the model ties the weight between modules. ``name`` is the first owner.
    """

    owners: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.owners[0]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def module_name(self) -> str:
        return self.name.rpartition(".")[0]


def _kind(module: nn.Module) -> str:
    """The layer kind used by the ``type`` mapping (subclasses count as their base)."""
    for cls in (*_WEIGHT_MODULES, nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN):
        if isinstance(module, cls):
            return cls.__name__
    return type(module).__name__


def _weight_names(module: nn.Module) -> tuple[str, ...]:
    if isinstance(module, _WEIGHT_MODULES):
        return ("weight",)
    if isinstance(module, nn.MultiheadAttention):
        return tuple(n for n in _MHA_WEIGHTS if module._parameters.get(n) is not None)
    if isinstance(module, nn.RNNBase):
        return tuple(n for n in module._flat_weights_names if n.startswith("weight_"))
    return ()


def trainable_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``, each tensor counted once (tied weights once).

    >>> trainable_count(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def find_slots(model: nn.Module) -> tuple[list[Slot], int]:
    """Return the model's shareable slots (in module order) and its unshared count.

    The unshared count is every other trainable parameter (biases, normalisation
    affines, positional embeddings, ...), each tensor counted once.

    >>> slots, unshared = find_slots(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    >>> [s.name for s in slots], unshared
    (['0.weight', '2.weight'], 5)
    """
    owners: dict[int, list[str]] = {}
    meta: dict[int, tuple[str, tuple[int, ...]]] = {}
    # named_modules() visits a module object once, under its first name, so every owner
    # below is a distinct module; a Parameter tied between modules gets several owners.
    for mod_name, module in model.named_modules():
        for pname in _weight_names(module):
            p = module._parameters.get(pname)
            if p is None or not p.requires_grad or p.dim() < 2:
                continue
            qual = f"{mod_name}.{pname}" if mod_name else pname
            owners.setdefault(id(p), []).append(qual)
            meta.setdefault(id(p), (_kind(module), tuple(p.shape)))
    slots = [Slot(tuple(names), *meta[key]) for key, names in owners.items()]
    shared_ids = set(owners)
    seen: set[int] = set()
    unshared = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in shared_ids and id(p) not in seen:
            seen.add(id(p))
            unshared += p.numel()
    return slots, unshared
