"""Find the shareable weights of an arbitrary model, and say why the others are not.

A *slot* is one weight tensor that a Shapeshifter Network generates. Every trainable
parameter of the model is looked at where a module holds it:

* the weights of the known kinds are slots whenever they have two or more dimensions:
  ``Linear``, ``Conv*``, ``ConvTranspose*``, ``Embedding``/``EmbeddingBag``, the
  projection weights of ``MultiheadAttention``, the weight matrices of
  ``RNN``/``LSTM``/``GRU`` and transformers' ``Conv1D`` (GPT-2; it stores ``(in, out)``);
* any other parameter is a slot when it has at least two dimensions larger than one: the
  matrices of custom layers, positional tables, and the tensors that lie under a user's
  own parametrization (``weight_norm``'s direction ``original1``, the ``original`` of
  ``spectral_norm`` or ``orthogonal``), which npas generates while the user's
  parametrization stays on top.

Everything else stays with its layer as an :class:`UnsharedWeight` with its reason:
biases and norms (1-D), vectors stored with singleton dimensions (a ViT class token,
``weight_norm``'s magnitude ``original0``), frozen tensors, and embeddings whose contract
a generated weight cannot keep (``sparse=True``, ``max_norm``). A parameter tied between
modules (the same ``Parameter`` object in several places) is one slot, or one unshared
weight, with several owners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "SHAREABLE_KINDS",
    "Inventory",
    "Owned",
    "Slot",
    "UnsharedWeight",
    "fan_in",
    "find_slots",
    "inventory",
    "trainable_count",
]

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
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
_FROZEN = "frozen (requires_grad=False)"

#: What is shared; anything else is counted as unshared, with its reason.
SHAREABLE_KINDS = (
    "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, Embedding, EmbeddingBag, "
    "MultiheadAttention projections, RNN/LSTM/GRU weights, transformers' Conv1D, and any "
    "other trainable parameter with at least two dimensions larger than one"
)


def fan_in(kind: str, shape: tuple[int, ...]) -> int:
    """Inputs summed into one output of a weight of this kind and shape.

    ``Conv1D`` stores ``(in, out)``; an embedding looks up one row (fan-in 1, so that
    ``1 / sqrt(fan_in)`` is the unit scale torch gives embeddings); every other kind,
    known or not, follows the rule ``torch.nn.init`` applies to any tensor: dimension 1
    times the product of the dimensions after it.

    >>> fan_in("Linear", (10, 4)), fan_in("Conv2d", (8, 3, 3, 3)), fan_in("Conv1D", (4, 10))
    (4, 27, 4)
    >>> fan_in("Embedding", (100, 16)), fan_in("MyLayer", (1, 17, 32))
    (1, 544)
    """
    if kind in ("Embedding", "EmbeddingBag") or len(shape) < 2:
        return 1
    if kind == "Conv1D":
        return shape[0]
    return shape[1] * math.prod(shape[2:])


class Owned:
    """A tensor held under one or more qualified names (``owners``, tied when several),
    with a ``shape``; ``name`` is the first owner."""

    owners: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.owners[0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Slot(Owned):
    """One generated weight: where it lives, its kind and its shape.

    ``owners`` are qualified parameter names (``"encoder.0.weight"``); more than one
    when the model ties the weight between modules. ``name`` is the first owner.
    """

    owners: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]

    @property
    def module_name(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def fan_in(self) -> int:
        return fan_in(self.kind, self.shape)


@dataclass(frozen=True)
class UnsharedWeight(Owned):
    """A parameter that stays with its layer, and why. ``trainable`` is False for frozen
    tensors, which the budget does not count."""

    owners: tuple[str, ...]
    shape: tuple[int, ...]
    reason: str
    trainable: bool = True


@dataclass(frozen=True)
class Inventory:
    """A model's slots and unshared weights, each in module order."""

    slots: tuple[Slot, ...]
    unshared: tuple[UnsharedWeight, ...]

    @property
    def unshared_count(self) -> int:
        """Trainable parameters that are not shared (each tensor once)."""
        return sum(u.numel for u in self.unshared if u.trainable)


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2), recognised without importing transformers."""
    cls = parametrize.type_before_parametrizations(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def _kind(module: nn.Module) -> str:
    """The layer kind used by the ``type`` mapping (subclasses count as their base)."""
    for cls in (*_WEIGHT_MODULES, nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN):
        if isinstance(module, cls):
            return cls.__name__
    return parametrize.type_before_parametrizations(module).__name__


def _known_weights(module: nn.Module) -> tuple[str, ...]:
    """Names of the weights of a known kind (shared whenever they have 2+ dims)."""
    if isinstance(module, _WEIGHT_MODULES) or _is_conv1d(module):
        return ("weight",)
    if isinstance(module, nn.MultiheadAttention):
        return _MHA_WEIGHTS
    if isinstance(module, nn.RNNBase):
        return tuple(n for n in module._flat_weights_names if n.startswith("weight_"))
    return ()


def _refusal(module: nn.Module, name: str, shape: tuple[int, ...], known: bool) -> str | None:
    """Why a trainable parameter of ``module`` is not shared; None when it is."""
    if not shape:
        return "scalar"
    if len(shape) == 1:
        return "1-D (bias/norm)"
    if isinstance(module, _EMBEDDINGS) and name == "weight":
        if module.sparse:
            return "Embedding(sparse=True): sparse gradients cannot reach a shared group"
        if module.max_norm is not None:
            return "Embedding(max_norm=...): it renormalises its weight in place"
    if known:
        return None
    if sum(d > 1 for d in shape) < 2:
        return "a vector with singleton dimensions (bias, scale or token)"
    return None


def _holder_name(plist_name: str) -> str:
    """``"a.b.parametrizations.weight"`` -> ``"a.b"``; ``"parametrizations.weight"`` -> ``""``."""
    return plist_name.rsplit(".", 2)[0] if plist_name.count(".") >= 2 else ""


def _uses(model: nn.Module) -> dict[int, list[tuple[str, str, tuple[int, ...], str | None]]]:
    """Every place a parameter is held: (qualified name, kind, shape, refusal)."""
    modules = dict(model.named_modules())
    uses: dict[int, list[tuple[str, str, tuple[int, ...], str | None]]] = {}
    # named_modules() visits a module object once, under its first name, so every use
    # below is a distinct module; a Parameter tied between modules gets several uses.
    for mod_name, module in modules.items():
        under = isinstance(module, parametrize.ParametrizationList)
        # The originals under a user's parametrization ("conv.parametrizations.weight")
        # take the kind of the module that holds the parametrization ("conv").
        holder = modules[_holder_name(mod_name)] if under else module
        known = () if under else _known_weights(module)
        for pname, p in module.named_parameters(recurse=False):
            qual = f"{mod_name}.{pname}" if mod_name else pname
            shape = tuple(p.shape)
            why = (
                _FROZEN if not p.requires_grad
                else _refusal(module, pname, shape, pname in known)
            )
            uses.setdefault(id(p), []).append((qual, _kind(holder), shape, why))
    return uses


def inventory(model: nn.Module) -> Inventory:
    """The model's slots and unshared weights.

    >>> inv = inventory(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)))
    >>> [s.name for s in inv.slots], [(u.name, u.reason) for u in inv.unshared]
    (['0.weight'], [('0.bias', '1-D (bias/norm)'), ('1.weight', '1-D (bias/norm)'), ('1.bias', '1-D (bias/norm)')])
    """
    slots: list[Slot] = []
    unshared: list[UnsharedWeight] = []
    for uses in _uses(model).values():
        owners = tuple(q for q, _, _, _ in uses)
        _, kind, shape, _ = uses[0]
        why = next((w for _, _, _, w in uses if w is not None), None)
        if why is None:
            slots.append(Slot(owners, kind, shape))
        else:
            unshared.append(UnsharedWeight(owners, shape, why, trainable=why != _FROZEN))
    return Inventory(tuple(slots), tuple(unshared))


def trainable_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``, each tensor counted once (tied weights once).

    >>> trainable_count(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def find_slots(model: nn.Module) -> tuple[list[Slot], int]:
    """Return the model's shareable slots (in module order) and its unshared count.

    The unshared count is every other trainable parameter (biases, normalisation
    affines, class tokens, ...), each tensor counted once; :func:`inventory` also says
    why each one is not shared.

    >>> slots, unshared = find_slots(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    >>> [s.name for s in slots], unshared
    (['0.weight', '2.weight'], 5)
    """
    inv = inventory(model)
    return list(inv.slots), inv.unshared_count
