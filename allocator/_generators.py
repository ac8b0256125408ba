"""Weight generators: how a layer computes its weight from its parameter group.

:class:`ParameterGroup` owns a group's shared parameters ``theta`` (and the ``emb``
projection shared by its layers). :class:`GeneratedWeight` is the parametrization put on
a layer's weight (``torch.nn.utils.parametrize``): it reads windows of ``theta``, mixes
them (``slice``, ``wavg``, ``emb``, ``avg``) and, where the layer is larger than the
group, expands the result (``repeat``, ``inter``, ``hash``, ``mask``). The output depends only on
parameters, never on the input, so it can be computed once for inference.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from allocator._budget import EMB_DIM, MASK_WINDOW
from allocator._plan import GroupPlan, SlotPlan

__all__ = ["GeneratedWeight", "ParameterGroup", "inter_grid", "wrap"]


def _tile(x: Tensor, length: int) -> Tensor:
    """``x`` repeated end to end and cut to ``length`` values."""
    if length <= x.numel():
        return x[:length]
    return x.repeat(-(-length // x.numel()))[:length]


def inter_grid(m: int, rows: int, cols: int) -> tuple[int, int]:
    """The small matrix ``inter`` interpolates from: ``r x c >= m`` with the layer's
    aspect ratio, so that every one of the ``m`` values is read.

    >>> inter_grid(100, 40, 40)
    (10, 10)
    """
    scale = math.sqrt(m / (rows * cols))
    r = min(rows, max(1, round(rows * scale)))
    c = -(-m // r)
    if c > cols:
        c = cols
        r = -(-m // cols)
    return r, c


def _lerp_index(n_out: int, n_in: int) -> tuple[Tensor, Tensor, Tensor]:
    """Neighbours and weights of linear interpolation from ``n_in`` to ``n_out`` points
    with aligned corners (``F.interpolate(..., align_corners=True)``)."""
    if n_in == 1:
        zero = torch.zeros(n_out, dtype=torch.long)
        return zero, zero, torch.zeros(n_out)
    pos = torch.linspace(0, n_in - 1, n_out, dtype=torch.float64)
    lo = pos.floor().long().clamp(max=n_in - 2)
    return lo, lo + 1, (pos - lo).float()


def _signs(index: int, n: int, dtype: torch.dtype) -> Tensor:
    """``n`` fixed random signs (+1/-1), a function of the layer's index in the plan."""
    gen = torch.Generator().manual_seed(0x5EED + index)
    return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(dtype)


def hash_index(index: int, n: int, m: int) -> Tensor:
    """Where each of a layer's ``n`` weights reads its ``m`` values (``hash``), its sign
    folded in: weight ``i`` is ``cat((w, -w))[index[i]]``. Every value is read ``n // m``
    or ``n // m + 1`` times, at positions given by a fixed random permutation (a function
    of the layer's index in the plan), so that a value's copies are scattered over the
    layer instead of tiling it; the signs are :func:`_signs`, those of ``repeat`` and
    ``inter``. 32-bit where the values fit: 4 bytes per weight, index and sign together.

    >>> sorted((hash_index(0, 7, 3) % 3).tolist())
    [0, 0, 0, 1, 1, 2, 2]
    """
    gen = torch.Generator().manual_seed(0xA5A5 + index)
    reads = torch.randperm(n, generator=gen) % m
    negative = _signs(index, n, torch.float32) < 0
    dtype = torch.int32 if 2 * m <= torch.iinfo(torch.int32).max else torch.int64
    return (reads + m * negative).to(dtype)


def wrap(positions: Tensor, m: int, bound: int) -> Tensor:
    """``positions % m`` for positions known to lie below ``bound``: nothing to do below
    ``m``, one compare and subtract below ``2 m``; only longer reads pay the integer
    division (half a millisecond for a BERT batch's embedding rows on 2 CPU cores).

    >>> wrap(torch.tensor([0, 4, 5, 9]), 5, 10).tolist(), wrap(torch.tensor([12]), 5, 15).tolist()
    ([0, 4, 0, 4], [2])
    """
    if bound <= m:
        return positions
    if bound <= 2 * m:
        return torch.where(positions >= m, positions - m, positions)
    return positions % m


def _chunks(offset: int, length: int, m: int) -> list[tuple[int, int, int]]:
    """``(theta position, reader position, count)`` runs of a read of ``length`` values
    from ``offset`` round a ``theta`` of ``m`` values (value ``j`` is
    ``theta[(offset + j) % m]``).

    >>> _chunks(3, 6, 5)
    [(3, 0, 2), (0, 2, 4)]
    """
    out, src, pos = [], 0, offset % m
    while src < length:
        n = min(m - pos, length - src)
        out.append((pos, src, n))
        src += n
        pos = 0
    return out


def _storage_unshared(t: Tensor) -> bool:
    """Whether no other tensor shares ``t``'s memory (a ``.grad`` handed out, a
    ``p.grad.detach()`` kept by the user, the autograd engine's own buffer).

    torch has no public API for a storage's use count; without the private one npas
    never reuses a buffer (the result is the same, only slower)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return False
    # The storage object made here holds one reference, `t` another.
    return bool(count(t.untyped_storage()._cdata) <= 2)


class _GradBuffer:
    """A group's reusable gradient memory (not state: copies and pickles drop it)."""

    def __init__(self) -> None:
        self.tensor: Tensor | None = None

    def __deepcopy__(self, memo: dict) -> _GradBuffer:
        return _GradBuffer()

    def __getstate__(self) -> dict:
        return {"tensor": None}


class _GroupRead(torch.autograd.Function):
    """Every read of a group in one ``SSN.forward``: forward returns each reader's
    values (views of ``theta`` where they do not wrap) and an empty ``token`` that row
    gathers (:class:`_GatherRows`) hang from; backward writes ``theta``'s gradient once,
    into memory the group reuses from step to step (:meth:`ParameterGroup.gradient`)."""

    @staticmethod
    def forward(ctx: Any, theta: Tensor, group: ParameterGroup, gathered: list) -> Any:
        ctx.set_materialize_grads(False)
        ctx.group, ctx.gathered = group, gathered
        return (*group._pieces(), theta.new_empty(0))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> Any:
        # This pass's row gathers, taken out: a second backward through the same graph
        # (retain_graph, or differentiating a create_graph gradient) brings its own.
        gathered = list(ctx.gathered)
        ctx.gathered.clear()
        return ctx.group.gradient(grads[:-1], gathered), None, None


class _GatherRows(torch.autograd.Function):
    """``theta[positions]`` inside ``SSN.forward``: its gradient is not a ``theta``-sized
    tensor of its own but a list entry that :class:`_GroupRead`'s backward (which runs
    after it: it waits for ``token``) adds into the group's one gradient write."""

    @staticmethod
    def forward(ctx: Any, token: Tensor, theta: Tensor, positions: Tensor,
                gathered: list) -> Tensor:
        ctx.positions, ctx.gathered = positions, gathered
        return theta.index_select(0, positions)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:
        ctx.gathered.append((ctx.positions, grad))
        return None, None, None, None


class ParameterGroup(nn.Module):
    """The shared parameters of one group: ``theta`` and, for ``emb``, ``A`` and ``b``.

    Every layer of the group registers what it reads (:meth:`add_reader`). Inside
    :meth:`reading` (the SSN's forward), all layers are served from one read of
    ``theta`` (the windows of those that lie end to end are one ``split``), and the
    backward pass writes ``theta``'s gradient once per group, into memory reused from
    step to step while nothing else holds it; outside it, each layer reads only its
    own windows.
    """

    def __init__(self, plan: GroupPlan, *, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(plan.size, dtype=dtype, device=device))
        self.emb_proj: nn.Parameter | None = None
        self.emb_bias: nn.Parameter | None = None
        if plan.emb_templates:
            k = plan.emb_templates
            self.emb_proj = nn.Parameter(torch.zeros(k, EMB_DIM, dtype=dtype, device=device))
            self.emb_bias = nn.Parameter(torch.zeros(k, dtype=dtype, device=device))
        self._reads: list[tuple[int, int]] = []  # (offset, length) per reader
        self._chain: list[int] = []  # readers whose windows follow each other from 0
        self._cursor = 0
        self._step: list[Tensor] | None = None  # this forward's reads (+ token), in `reading`
        self._gathered: list[tuple[Tensor, Tensor]] = []  # this forward's row gathers
        self._buffer = _GradBuffer()

    def add_reader(self, offset: int, length: int, *, chain: bool) -> int:
        """Register a layer reading ``length`` values from ``offset``; its reader index."""
        if chain and offset == self._cursor % self.theta.numel():
            self._chain.append(len(self._reads))
            self._cursor += length
        self._reads.append((offset, length))
        return len(self._reads) - 1

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Within the block, :meth:`read` serves every layer from one read of ``theta``."""
        self._step = []
        try:
            yield
        finally:
            self._step = None

    def _started(self) -> list[Tensor]:
        assert self._step is not None
        if not self._step:
            self._gathered = []
            self._step.extend(_GroupRead.apply(self.theta, self, self._gathered))
        return self._step

    def read(self, reader: int) -> Tensor:
        """The values reader ``reader`` registered, as one flat tensor."""
        if self._step is None:
            return self.window(*self._reads[reader])
        return self._started()[reader]

    def read_at(self, reader: int, positions: Tensor) -> Tensor:
        """``read(reader)[positions]``, without a gradient of the reader's size: an
        embedding reads a few rows of a large window."""
        if self._step is None:
            return self.read(reader).index_select(0, positions)
        token = self._started()[-1]
        offset, length = self._reads[reader]
        at = wrap(positions + offset if offset else positions, self.theta.numel(), offset + length)
        return _GatherRows.apply(token, self.theta.detach(), at, self._gathered)

    def _pieces(self) -> list[Tensor]:
        out: list[Tensor | None] = [None] * len(self._reads)
        if self._chain:
            lengths = [self._reads[i][1] for i in self._chain]
            for i, part in zip(self._chain, self._split_laps(lengths), strict=True):
                out[i] = part
        return [self.window(*r) if t is None else t for r, t in zip(self._reads, out, strict=True)]

    def gradient(self, grads: tuple[Tensor | None, ...],
                 gathered: list[tuple[Tensor, Tensor]]) -> Tensor:
        """``theta``'s gradient from its readers' gradients (``None`` where a reader's
        values were not used) and the row gathers' ``(positions, gradient)``.

        Written in one pass into memory the group keeps: a fresh ``theta``-sized tensor
        at every step is page-faulted in again by the allocator once it is larger than
        glibc's ``mmap`` threshold (32 MB), which cost more than the rest of the backward
        pass of small models at budget 4.0 (``docs/ssn.md``, Speed). The memory is
        reused only while no tensor but the group's shares it; under ``create_graph``
        the gradient is built out of place, so that it can be differentiated."""
        theta = self.theta
        m = theta.numel()
        if torch.is_grad_enabled():  # create_graph=True: differentiable, out of place
            out = theta.new_zeros(m)
            for (offset, length), g in zip(self._reads, grads, strict=True):
                if g is not None:
                    at = wrap(torch.arange(length, device=theta.device) + offset, m, offset + length)
                    out = out.index_add(0, at, g.reshape(-1))
            for at, g in gathered:
                out = out.index_add(0, at, g.reshape(-1))
            return out
        buf = self._buffer.tensor
        if buf is None or buf.shape != theta.shape or buf.dtype != theta.dtype \
                or buf.device != theta.device or not _storage_unshared(buf):
            buf = self._buffer.tensor = torch.empty_like(theta)
        # The chain's first lap round theta is written, the rest added.
        covered = min(self._cursor, m)
        buf[covered:].zero_()
        chained = set(self._chain)
        written = 0
        for i in (*self._chain, *(i for i in range(len(self._reads)) if i not in chained)):
            offset, length = self._reads[i]
            g = grads[i]
            for pos, src, n in _chunks(offset, length, m):
                first = i in chained and written < covered
                if first:
                    written += n
                    if g is None:
                        buf[pos : pos + n].zero_()
                    else:
                        buf[pos : pos + n].copy_(g.reshape(-1)[src : src + n])
                elif g is not None:
                    buf[pos : pos + n].add_(g.reshape(-1)[src : src + n])
        for at, g in gathered:
            buf.index_add_(0, at, g.reshape(-1))
        return buf.detach()  # another tensor on the same memory: autograd keeps it as .grad

    def _split_laps(self, lengths: list[int]) -> list[Tensor]:
        """Consecutive pieces of ``lengths`` values from 0, going round ``theta`` as often
        as they need: each lap round ``theta`` is one ``split`` (views), and a piece that
        crosses the end of a lap is joined."""
        m = self.theta.numel()
        bounds = list(itertools.accumulate(lengths, initial=0))
        total = bounds[-1]
        cuts = sorted(set(bounds) | set(range(0, total, m)))
        pieces: dict[int, Tensor] = {}
        for lap in range(0, total, m):
            inside = [c for c in cuts if lap <= c < min(lap + m, total)] + [min(lap + m, total)]
            sizes = [b - a for a, b in itertools.pairwise(inside)]
            rest = m - sum(sizes)
            parts = self.theta.split(sizes + ([rest] if rest else []))
            pieces.update(zip(inside, parts, strict=False))
        out = []
        for a, b in itertools.pairwise(bounds):
            segments, c = [], a
            while c < b:
                segments.append(pieces[c])
                c += segments[-1].numel()
            out.append(segments[0] if len(segments) == 1 else torch.cat(segments))
        return out

    def window(self, offset: int, length: int) -> Tensor:
        """``length`` consecutive values from ``offset``, wrapping around the end of
        ``theta``; a view (no copy) when they do not wrap."""
        theta = self.theta
        m = theta.numel()
        if offset + length <= m:
            return theta[offset : offset + length]
        if length <= m:
            return torch.cat((theta[offset:], theta[: offset + length - m]))
        return _tile(theta, offset + length)[offset:]

    def windows(self, offset: int, count: int, window: int) -> Tensor:
        """``count`` consecutive windows of ``window`` values from ``offset``."""
        return self.window(offset, count * window).view(count, window)

    def extra_repr(self) -> str:
        return f"size={self.theta.numel()}"


class GeneratedWeight(nn.Module):
    """Parametrization computing one layer's weight from its group.

    The group is referenced, not owned, so that it appears once in the SSN's parameters
    however many layers read it; the layer owns only what it learns itself
    (``coef`` for ``wavg``, ``embedding`` for ``emb``, ``mask`` for ``mask``).

    Mixing coefficients are stored multiplied by a constant ``scale`` (and divided by it
    in the forward): the weight is unchanged, but a gradient step on the coefficients
    moves the weight about as far as the same step would move a plain weight. Without it
    the coefficients' gradients, sums over the whole layer, make SGD at the plain
    model's learning rate diverge (``docs/ssn.md``).
    """

    scale: Tensor
    # fixed random signs of `repeat` and `inter`, a buffer (not saved)
    sign: Tensor
    # which window value each weight reads and its sign, for `hash`, a buffer (not saved)
    hash: Tensor
    # interpolation indices and weights of `inter`, buffers (not saved)
    lo0: Tensor
    hi0: Tensor
    frac0: Tensor
    lo1: Tensor
    hi1: Tensor
    frac1: Tensor

    def __init__(self, slot: SlotPlan, group: ParameterGroup, index: int = 0) -> None:
        super().__init__()
        self.__dict__["_group"] = group  # not a submodule: the SSN owns the groups
        self.shape = slot.shape
        self.numel = slot.numel
        self.offset = slot.offset
        self.combine = slot.gen.combine
        self.templates = slot.gen.templates
        self.window = slot.gen.window
        self.expand = slot.gen.expand
        self.reader = group.add_reader(self.offset, self.templates * self.window,
                                       chain=self.expand is None)
        dtype, device = group.theta.dtype, group.theta.device
        if self.combine == "wavg":
            self.coef = nn.Parameter(torch.zeros(self.templates, dtype=dtype, device=device))
        elif self.combine == "emb":
            self.embedding = nn.Parameter(torch.zeros(EMB_DIM, dtype=dtype, device=device))
        if self.combine in ("wavg", "emb"):
            # Learning-rate equaliser, set at initialisation and saved with the state.
            self.register_buffer("scale", torch.ones((), dtype=dtype, device=device))
        if self.expand == "mask":
            count = -(-(self.numel - self.window) // MASK_WINDOW)
            self.mask = nn.Parameter(torch.ones(count, dtype=dtype, device=device))
        if self.expand in ("repeat", "inter"):
            self.register_buffer("sign", _signs(index, self.numel, dtype).to(device),
                                 persistent=False)
        if self.expand == "hash":
            self.register_buffer("hash", hash_index(index, self.numel, self.window).to(device),
                                 persistent=False)
        if self.expand == "inter":
            rows = self.shape[0]
            cols = self.numel // rows
            self.grid = inter_grid(self.window, rows, cols)
            for axis, (n_out, n_in) in enumerate(zip((rows, cols), self.grid, strict=True)):
                lo, hi, frac = _lerp_index(n_out, n_in)
                self.register_buffer(f"lo{axis}", lo.to(device), persistent=False)
                self.register_buffer(f"hi{axis}", hi.to(device), persistent=False)
                self.register_buffer(f"frac{axis}", frac.to(device=device, dtype=dtype),
                                     persistent=False)

    @property
    def group(self) -> ParameterGroup:
        return self.__dict__["_group"]

    def signs(self) -> Tensor:
        """The fixed sign (+1/-1) of each generated weight of an expanded layer
        (``repeat``, ``inter``, ``hash``), as a flat tensor."""
        if self.expand == "hash":
            return 1 - 2 * (self.hash >= self.window).to(self.group.theta.dtype)
        return self.sign

    def reads(self) -> Tensor:
        """``hash``: the window value each generated weight reads (its sign aside)."""
        return (self.hash % self.window).long()

    def mix(self, t: Tensor) -> Tensor:
        """Templates ``(K, L)`` (``L`` values of each, all or some of a window) mixed
        into ``L`` values; linear and position by position, so any columns may be mixed
        (``allocator._rows`` mixes only the rows an embedding looks up)."""
        if self.combine == "slice":
            return t[0]
        if self.combine == "wavg":
            return (self.coef / self.scale) @ t  # scale the K coefficients, not the weight
        if self.combine == "emb":
            group = self.group
            assert group.emb_proj is not None and group.emb_bias is not None
            k = self.templates
            alpha = torch.addmv(group.emb_bias[:k], group.emb_proj[:k], self.embedding)
            return (alpha / self.scale) @ t  # K values scaled, not the weight
        # avg: the templates' sum over sqrt(K), so that K independent templates keep one
        # template's scale (their mean has 1 / sqrt(K) of it, docs/ssn.md)
        return t.sum(0) / math.sqrt(self.templates)

    def forward(self, _original: Tensor) -> Tensor:
        t = self.group.read(self.reader).view(self.templates, self.window)
        w = self.mix(t)
        if self.expand is None:
            return w.view(self.shape)
        if self.expand == "repeat":
            return (_tile(w, self.numel) * self.sign).view(self.shape)
        if self.expand == "hash":  # one gather reads value and sign (hash_index)
            return torch.cat((w, -w)).index_select(0, self.hash).view(self.shape)
        if self.expand == "mask":
            scale = self.mask.repeat_interleave(MASK_WINDOW)[: self.numel - self.window]
            tail = _tile(w, self.numel)[self.window :] * scale
            return torch.cat((w, tail)).view(self.shape)
        # Bilinear interpolation (align_corners=True), one axis at a time: gathers and a
        # lerp are many times faster on CPU than F.interpolate for a single channel.
        r, c = self.grid
        small = _tile(w, r * c).view(r, c)
        small = torch.lerp(small.index_select(0, self.lo0), small.index_select(0, self.hi0),
                           self.frac0[:, None])
        big = torch.lerp(small.index_select(1, self.lo1), small.index_select(1, self.hi1),
                         self.frac1)
        return (big.view(-1) * self.sign).view(self.shape)

    def extra_repr(self) -> str:
        gen = self.expand if self.combine == "slice" and self.expand else self.combine
        if self.expand and self.combine != "slice":
            gen = f"{self.combine}+{self.expand}"
        return f"{gen}, templates={self.templates}, shape={tuple(self.shape)}"
