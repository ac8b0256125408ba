"""Generated embeddings compute only the rows a batch looks up.

An ``nn.Embedding`` reads a handful of rows of its weight per batch (a BERT batch of
16 x 128 tokens reads about 2,000 of 30,522), but the full path generates the whole
matrix every step and the lookup's backward writes a dense gradient of its size.
Inside :meth:`SSN.forward <allocator.SSN.forward>`, an embedding whose weight npas
generates and that nothing else owns looks up ``rows(unique ids)`` instead: the same
values and the same gradients (tested), computed for the rows that are read.

Each generator has a row function (:data:`ROW_EXPANDERS`, one per expansion kind); a
kind without one computes the full weight and indexes it, so a new kind is correct
before it is fast. Outside ``SSN.forward`` (``ssn.model(x)``), under ``materialize``,
``save`` and ``load``, nothing changes: the module's own ``forward`` and its
parametrization run as before.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from allocator._budget import MASK_WINDOW
from allocator._generators import GeneratedWeight
from allocator._padding import ZeroRows

__all__ = ["ROW_EXPANDERS", "generated_rows", "row_lookups", "rows_eligible"]


def _flat_positions(gen: GeneratedWeight, index: Tensor) -> Tensor:
    """Positions in the flattened weight of every value of rows ``index``."""
    cols = gen.numel // gen.shape[0]
    offsets = torch.arange(cols, device=index.device)
    return (index[:, None] * cols + offsets).reshape(-1)


#: Values of the mixed templates at positions ``q`` (1-D, long, each < the window).
Mixed = Callable[[Tensor], Tensor]


def _rows_repeat(gen: GeneratedWeight, w: Mixed, index: Tensor) -> Tensor:
    """``_tile(w, n) * sign`` at the rows' positions."""
    pos = _flat_positions(gen, index)
    return w(pos % gen.window) * gen.sign.index_select(0, pos)


def _rows_mask(gen: GeneratedWeight, w: Mixed, index: Tensor) -> Tensor:
    """``w`` then its copies, each window of copied values times its learned scalar."""
    pos = _flat_positions(gen, index)
    window = gen.window
    scale = gen.mask.index_select(0, (pos - window).clamp_min(0) // MASK_WINDOW)
    scale = torch.where(pos < window, torch.ones_like(scale), scale)
    return w(pos % window) * scale


def _rows_inter(gen: GeneratedWeight, w: Mixed, index: Tensor) -> Tensor:
    """The bilinear interpolation of :meth:`GeneratedWeight.forward`, rows first: only
    the grid rows the requested rows interpolate between are read, interpolated along
    the first axis, then along the second."""
    r, c = gen.grid
    lo, hi = gen.lo0.index_select(0, index), gen.hi0.index_select(0, index)
    grid_rows = torch.cat((lo, hi))
    cells = (grid_rows[:, None] * c + torch.arange(c, device=index.device)).reshape(-1)
    small = w(cells % gen.window).view(2, index.numel(), c)  # _tile(w, r * c) at those rows
    small = torch.lerp(small[0], small[1], gen.frac0.index_select(0, index)[:, None])
    big = torch.lerp(small.index_select(1, gen.lo1), small.index_select(1, gen.hi1), gen.frac1)
    sign = gen.sign.view(gen.shape[0], -1).index_select(0, index)
    return (big * sign).reshape(-1)


def _rows_hash(gen: GeneratedWeight, w: Mixed, index: Tensor) -> Tensor:
    """``cat((w, -w))[hash]`` at the rows' positions."""
    folded = gen.hash.index_select(0, _flat_positions(gen, index)).long()
    negative = folded >= gen.window
    values = w(torch.where(negative, folded - gen.window, folded))
    return torch.where(negative, -values, values)


#: Row function per expansion kind: ``(generator, mixed templates at given positions,
#: row ids) -> values``.
ROW_EXPANDERS: dict[str, Callable[[GeneratedWeight, Mixed, Tensor], Tensor]] = {
    "repeat": _rows_repeat,
    "mask": _rows_mask,
    "inter": _rows_inter,
    "hash": _rows_hash,
}


def _mixed_at(gen: GeneratedWeight) -> Mixed:
    """The mixed templates at positions ``q``, reading only those positions of each
    template (inside ``SSN.forward`` their gradient is scattered into ``theta``'s)."""
    k = torch.arange(gen.templates, device=gen.group.theta.device)[:, None] * gen.window

    def at(q: Tensor) -> Tensor:
        values = gen.group.read_at(gen.reader, q if gen.templates == 1 else (k + q).reshape(-1))
        return gen.mix(values.view(gen.templates, -1))
    return at


def generated_rows(gen: GeneratedWeight, index: Tensor) -> Tensor:
    """Rows ``index`` (1-D, long) of the weight ``gen`` generates: equal to
    ``gen(...)[index]``, computed from the values those rows need.

    Every generator mixes its templates position by position, so a row needs only the
    template values at the positions it reads: its own (no expansion) or those its
    expansion copies or interpolates from.
    """
    shape = (index.numel(), *gen.shape[1:])
    if gen.expand is None:
        return _mixed_at(gen)(_flat_positions(gen, index)).view(shape)
    expander = ROW_EXPANDERS.get(gen.expand)
    if expander is None:  # a kind without a row function: the full weight, indexed
        return gen(gen.group.theta.new_empty(0)).index_select(0, index)
    return expander(gen, _mixed_at(gen), index).view(shape)


def rows_eligible(module: nn.Module, owners: int) -> bool:
    """Whether ``module``'s generated ``weight`` can be looked up row by row: a plain
    ``nn.Embedding`` (its class's ``forward`` is torch's), the weight's only owner
    (a tied weight is read in full by its other owners), no ``max_norm`` (which writes
    into the weight), dense gradients, and no parametrization but npas's on the weight."""
    if not isinstance(module, nn.Embedding) or owners != 1:
        return False
    if type(module).forward is not nn.Embedding.forward or "forward" in module.__dict__:
        return False
    if module.max_norm is not None or module.sparse:
        return False
    plists = getattr(module, "parametrizations", None)
    if plists is None or "weight" not in plists:
        return False
    plist = list(cast(nn.ModuleList, plists["weight"]))
    return isinstance(plist[0], GeneratedWeight) and all(
        isinstance(p, ZeroRows) for p in plist[1:]
    )


def _embedding_forward(module: nn.Embedding, ids: Tensor) -> Tensor:
    """``module(ids)`` from the rows ``ids`` reads."""
    flat = ids.reshape(-1)
    plist = cast(nn.ModuleList, module.parametrizations["weight"])  # type: ignore[index]
    if flat.numel() == 0 or flat.dtype not in (torch.long, torch.int):
        return cast(Tensor, nn.Embedding.forward(module, ids))
    uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    if int(uniq[0]) < 0 or int(uniq[-1]) >= module.num_embeddings:
        return cast(Tensor, nn.Embedding.forward(module, ids))  # torch's own error
    rows = generated_rows(cast(GeneratedWeight, plist[0]), uniq)
    for zero in list(plist)[1:]:  # ZeroRows: padding rows zero, out of place
        pad = torch.isin(uniq, cast(ZeroRows, zero).rows)
        rows = rows.masked_fill(pad[:, None], 0.0)
    return F.embedding(inverse.view(ids.shape), rows, None, None, module.norm_type,
                       module.scale_grad_by_freq, False)


@contextlib.contextmanager
def row_lookups(modules: list[nn.Module]) -> Iterator[None]:
    """Within the block, each of ``modules`` (eligible embeddings) looks up rows."""
    swapped: list[nn.Module] = []
    try:
        for module in modules:
            if "forward" not in module.__dict__ and rows_eligible(module, 1):
                # An instance attribute for the call only: nn.Module.__call__ runs it
                # (with the module's hooks); deleting it restores the class's forward.
                module.forward = functools.partial(
                    _embedding_forward, cast(nn.Embedding, module))
                swapped.append(module)
        yield
    finally:
        for module in swapped:
            del module.forward


def embedding_modules(model: nn.Module, owners: dict[str, int]) -> list[str]:
    """Names of the modules of ``model`` whose generated weight is looked up by rows;
    ``owners`` maps each generated weight's name to its number of owners."""
    out = []
    for qualified, count in owners.items():
        module_name, _, name = qualified.rpartition(".")
        if name == "weight" and rows_eligible(model.get_submodule(module_name), count):
            out.append(module_name)
    return out
