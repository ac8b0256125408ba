"""Inference and persistence: materialise an SSN, save and load it.

Saved files are plain ``torch.save`` dictionaries of tensors and JSON-like data, so they
load with ``torch.load(weights_only=True)``; nothing is unpickled but tensors.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from allocator._errors import CheckpointError, ConfigError
from allocator._plan import Plan
from allocator._ssn import (
    SSN,
    _refresh_rnn_weights,
    _release_rnn_weights,
    _split,
    generated_names,
)

__all__ = ["check_out_path", "load", "materialize", "save"]

FORMAT = "npas-ssn"
VERSION = 1


@torch.no_grad()
def materialize(ssn: SSN) -> nn.Module:
    """Compute every generated weight once and return a plain module of the model's own
    class, whose ``state_dict`` loads into a freshly built model.

    Only npas's parametrizations are removed: the model's own (``weight_norm``,
    ``spectral_norm``, ``orthogonal``, a user's) stay in place, on top of the plain
    tensors npas generated under them.

    Example:
        >>> import torch, allocator
        >>> ssn = allocator.shapeshift(torch.nn.Sequential(torch.nn.Linear(8, 8),
        ...                            torch.nn.Linear(8, 8)), budget=0.5)
        >>> plain = allocator.materialize(ssn)
        >>> type(plain).__name__, allocator.count_parameters(plain)
        ('Sequential', 144)
    """
    if not isinstance(ssn, SSN):
        raise TypeError(f"materialize() takes an SSN, got {type(ssn).__name__}")
    with parametrize.cached():
        weights = [_weight(ssn.model, s.name).detach().clone() for s in ssn.plan.slots]
    params: dict[str, nn.Parameter] = {}
    for slot, weight in zip(ssn.plan.slots, weights, strict=True):
        param = nn.Parameter(weight)
        params.update(dict.fromkeys(slot.owners, param))  # tied owners share one
    plain = copy.deepcopy(ssn.model)
    for module_name, module in list(plain.named_modules()):
        if parametrize.is_parametrized(module):
            _unparametrize(module, module_name, params)
    return plain


def _unparametrize(module: nn.Module, module_name: str, params: dict[str, nn.Parameter]) -> None:
    """Give a module of a deep-copied SSN plain weights where npas generated them.

    ``parametrize.remove_parametrizations`` would delete the properties from the injected
    class, which the copy shares with the live SSN, so the copy is restored by hand: its
    own class back when npas's were its only parametrizations, else a copy of the
    injected class without npas's properties (the model's own stay as they were).
    """
    names = generated_names(module)
    if not names:
        return
    plists = cast(nn.ModuleDict, module.parametrizations)
    cls = type(module)
    if len(names) == len(plists):
        del module._modules["parametrizations"]
        module.__class__ = cls.__bases__[0]
    else:
        attrs = {k: v for k, v in vars(cls).items() if k not in names}
        module.__class__ = type(cls.__name__, cls.__bases__, attrs)
        for name in names:
            del plists[name]
    for name in names:
        module.register_parameter(name, params[f"{module_name}.{name}" if module_name else name])
    if isinstance(module, nn.RNNBase):
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key, hook in list(hooks.items()):
                if hook in (_refresh_rnn_weights, _release_rnn_weights):
                    del hooks[key]
        module.__dict__.pop("_npas_hooked", None)
        module._init_flat_weights()


def _weight(model: nn.Module, qualified: str) -> torch.Tensor:
    module_name, name = _split(qualified)
    return cast(torch.Tensor, getattr(model.get_submodule(module_name), name))


def check_out_path(
    path: str | os.PathLike[str],
    flag: str = "path",
    *,
    forbidden: tuple[str | os.PathLike[str], ...] = (),
) -> None:
    """:class:`ConfigError` unless a file can be written at ``path``: checked by trying
    (a temporary file is created and removed beside it), before the work whose result
    goes there, not after. ``forbidden`` are files and folders the output must not be
    or lie inside (the study store, its ``-wal``/``-shm`` files, the artifacts folder).

    Example:
        >>> check_out_path("/proc/model.pt", "--out")
        Traceback (most recent call last):
        ...
        allocator._errors.ConfigError: --out '/proc/model.pt': cannot create a file in '/proc' (No such file or directory)
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise ConfigError(f"{flag} must be a file path, got {text!r}")
    target = Path(text).resolve()
    for other in forbidden:
        place = Path(other).resolve()
        if target == place or place in target.parents:
            how = "would overwrite" if target == place else "lies inside"
            raise ConfigError(
                f"{flag} {str(text)!r} {how} {str(place)!r}, which npas keeps (the study "
                "store or its kept weights); write the output somewhere else"
            )
    if target.is_dir():
        raise ConfigError(f"{flag} {str(text)!r} is a directory; give a file path inside it")
    if target.exists() and not target.is_file():
        raise ConfigError(f"{flag} {str(text)!r} exists and is not a regular file")
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {str(text)!r}: directory {str(folder)!r} does not exist")
    try:
        if target.exists():
            with open(target, "ab"):  # opening to append changes nothing
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".npas-probe-")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        what = f"write {str(target)!r}" if target.exists() else f"create a file in {str(folder)!r}"
        raise ConfigError(f"{flag} {str(text)!r}: cannot {what} ({exc.strerror or exc})") from None


def save(ssn: SSN, f: str | os.PathLike[str] | IO[bytes]) -> None:
    """Save an SSN's parameters and allocation (mapping, generators, budget).

    Load it back with :func:`load` and a freshly built model of the same class.
    """
    torch.save({"format": FORMAT, "version": VERSION, "state_dict": ssn.state_dict()}, f)


def load(f: str | os.PathLike[str] | IO[bytes], model: nn.Module, *,
         map_location: Any = None) -> SSN:
    """Rebuild a saved SSN on ``model``, a fresh instance of the saved model's class
    (used in place: its dense weights are replaced).

    The file is read with ``torch.load(weights_only=True)``. A corrupt, truncated or
    foreign file raises :class:`allocator.CheckpointError`.
    """
    name = _name(f)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            data = torch.load(f, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {name} does not exist") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(
            f"cannot read checkpoint {name}: {_why_unreadable(exc, _is_pickle(f))}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{name} is not an npas SSN checkpoint: it holds {_kind(data)}, not the "
            f"dictionary allocator.save writes (format {FORMAT!r})"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{name} has SSN checkpoint version {data.get('version')!r}; this npas reads {VERSION}"
        )
    state = data.get("state_dict")
    try:
        plan = Plan.from_dict(state["_extra_state"]["npas_plan"])  # type: ignore[index]
    except (KeyError, TypeError):
        raise CheckpointError(f"{name} carries no npas allocation") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    _check_plan(plan, state, name)  # type: ignore[arg-type]
    try:
        ssn = SSN(model, plan, init=False)
    except (AttributeError, KeyError, CheckpointError) as exc:
        raise CheckpointError(f"{name} does not fit this model: {exc}") from None
    except (IndexError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{name} carries an allocation that cannot be rebuilt: {first}") from None
    try:
        ssn.load_state_dict(state)  # type: ignore[arg-type]
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CheckpointError(f"{name} does not fit this model: {' '.join(lines[:2])}") from None
    return ssn


def _check_plan(plan: Plan, state: dict[str, Any], name: str) -> None:
    """:class:`CheckpointError` for an allocation no ``allocator.save`` writes: no
    weights, a group index out of range, or a group whose size is not that of its saved
    values (checked before anything is allocated, so a size of 1e13 allocates nothing)."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{name} carries an invalid npas allocation: {why}")

    if not plan.slots or not plan.groups:
        raise bad(f"{len(plan.slots)} generated weights in {len(plan.groups)} groups; "
                  "a saved SSN has at least one of each")
    for slot in plan.slots:
        if not 0 <= slot.group < len(plan.groups):
            raise bad(f"weight {slot.name!r} is in group {slot.group}; there are groups "
                      f"0..{len(plan.groups) - 1}")
        if not slot.shape or any(d < 1 for d in slot.shape) or slot.offset < 0:
            raise bad(f"weight {slot.name!r} has shape {slot.shape} and offset {slot.offset}")
    for slot in plan.slots:
        group = plan.groups[slot.group]
        gen = slot.gen
        if not (1 <= gen.window <= group.size and 1 <= gen.templates <= max(1, group.k_max)):
            raise bad(f"weight {slot.name!r} takes {gen.templates} windows of {gen.window:g} "
                      f"values from group {slot.group} of {group.size:g} values and at most "
                      f"{group.k_max} templates")
    for i, group in enumerate(plan.groups):
        saved = state.get(f"groups.{i}.theta")
        count = saved.numel() if isinstance(saved, torch.Tensor) else None
        if group.size < 1 or count != group.size:
            raise bad(f"group {i} has size {group.size:g}, its saved values number "
                      f"{'none' if count is None else count}")


def _name(f: object) -> str:
    """How a checkpoint is named in messages: its path, else the stream's name."""
    if isinstance(f, (str, os.PathLike)):
        return str(f)
    stream_name = getattr(f, "name", None)
    return str(stream_name) if isinstance(stream_name, (str, os.PathLike)) else "(stream)"


def _is_pickle(f: str | os.PathLike[str] | IO[bytes]) -> bool:
    """Whether the file starts as a pickle of protocol 2 to 5 does (``\x80`` and the
    protocol), i.e. was written by ``pickle`` rather than being random bytes."""
    try:
        if isinstance(f, (str, os.PathLike)):
            with open(f, "rb") as stream:
                head = stream.read(2)
        else:
            f.seek(0)
            head = f.read(2)
    except (OSError, ValueError, AttributeError):
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _why_unreadable(exc: BaseException, is_pickle: bool = False) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a file."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(
        r"unsupported GLOBAL (\S+)", text)
    if refused:
        return (
            f"refused as unsafe: it holds a Python object ({refused.group(1)}) that loading "
            "would run, not only tensors; npas loads checkpoints with weights_only=True and "
            "never unpickles arbitrary objects"
        )
    if is_pickle and "Unsupported operand" in text and "Weights only load failed" in text:
        return (
            "refused as unsafe: it is a pickle that is not a PyTorch checkpoint of tensors "
            "(loading it could run code); npas loads checkpoints with weights_only=True"
        )
    if "Weights only load failed" in text or isinstance(exc, EOFError) or not text.strip():
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
        reason = f" ({' '.join(detail.group(1).split())})" if detail else ""
        return (
            f"not a checkpoint saved by allocator.save: corrupt, truncated or not a "
            f"PyTorch file{reason}"
        )
    first = text.strip().splitlines()[0]
    sentence = first.split(". ")[0].rstrip(".")
    return f"corrupt or truncated ({sentence})"


def _kind(data: object) -> str:
    if isinstance(data, dict):
        keys = ", ".join(repr(k) for k in list(data)[:3])
        return f"a dictionary of {len(data)} entries ({keys}{', ...' if len(data) > 3 else ''})"
    return f"a {type(data).__name__}"
