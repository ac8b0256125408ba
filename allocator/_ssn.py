"""Shapeshifter Networks: the user's model with generated weights.

:func:`shapeshift` finds the shareable weights, maps them to groups, splits the budget
and puts a :class:`~allocator._generators.GeneratedWeight` parametrization on every
shared weight. The user's modules keep their classes, names and ``forward``; the
returned :class:`SSN` holds the model and the parameter groups.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from allocator._budget import DOWNSAMPLE, UPSAMPLE, downsample_for, resolve_budget
from allocator._errors import CheckpointError, ConfigError
from allocator._generators import GeneratedWeight, ParameterGroup
from allocator._layers import SHAREABLE_KINDS, inventory, trainable_count
from allocator._mapping import MAPPINGS, assign_groups
from allocator._padding import ZeroRows, padding_rows
from allocator._plan import Allocation, Plan, largest_unshared, make_plan
from allocator._rows import embedding_modules, row_lookups
from allocator._vocab import DEFAULTS

__all__ = ["SSN", "shapeshift"]

log = logging.getLogger("allocator")

Pretrain = Callable[[nn.Module], Any] | Iterable[Any]
PretrainLoss = Callable[[Any, Any], Tensor]


def _refresh_rnn_weights(module: nn.Module, _args: Any) -> None:
    """nn.RNN/LSTM/GRU read their weights from a cached list: fill it with the generated
    weights for this call."""
    module._flat_weights = [  # type: ignore[assignment]
        getattr(module, n) if hasattr(module, n) else None
        for n in module._flat_weights_names  # type: ignore[union-attr]
    ]


def _release_rnn_weights(module: nn.Module, _args: Any, _out: Any) -> None:
    """After the call, drop the generated weights (and the graph they hold) from the cache."""
    plists = cast(nn.ModuleDict, module.parametrizations)
    module._flat_weights = [  # type: ignore[assignment]
        plists[n].get_buffer("original") if n in plists else getattr(module, n, None)
        for n in module._flat_weights_names  # type: ignore[union-attr]
    ]


def _split(qualified: str) -> tuple[str, str]:
    module, _, name = qualified.rpartition(".")
    return module, name


def generated_names(module: nn.Module) -> list[str]:
    """Names of the tensors of ``module`` that npas generates: those whose
    parametrization list starts with a :class:`GeneratedWeight`. The model's own
    parametrizations (``weight_norm``, a user's) are not npas's."""
    if not parametrize.is_parametrized(module):
        return []
    plists = cast(nn.ModuleDict, module.parametrizations)
    return [n for n, plist in plists.items() if isinstance(plist[0], GeneratedWeight)]  # type: ignore[index]


class SSN(nn.Module):
    """A Shapeshifter Network: the user's ``model`` whose shared weights are generated
    from ``groups``. Call it exactly like the model.

    Build one with :func:`allocator.shapeshift`; ``allocation()`` tells what went where.
    """

    def __init__(self, model: nn.Module, plan: Plan, *, seed: int = 0, init: bool = True) -> None:
        super().__init__()
        self.model = model
        self._plan = plan
        first = model.get_submodule(_split(plan.slots[0].name)[0])
        ref = getattr(first, _split(plan.slots[0].name)[1])
        self.groups = nn.ModuleList(
            ParameterGroup(g, dtype=ref.dtype, device=ref.device) for g in plan.groups
        )
        originals = self._attach()
        for module in model.modules():
            if getattr(module, "_npas_hooked", False):
                _release_rnn_weights(module, (), None)
        if init:
            _initialise(self, originals, seed)
        # Embeddings that look up only the rows a batch reads (allocator._rows).
        self._row_modules = embedding_modules(
            model, {slot.name: len(slot.owners) for slot in plan.slots})

    @property
    def plan(self) -> Plan:
        return self._plan

    def allocation(self) -> Allocation:
        """The allocation table: one row per generated weight, and the totals."""
        return Allocation(self._plan)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Each generated weight is computed once per call, however often it is read,
        # each group's windows are read from theta once (one gradient write per group),
        # and an embedding whose weight nothing else owns generates only the rows it reads.
        with parametrize.cached(), contextlib.ExitStack() as stack:
            for group in self.groups:
                stack.enter_context(cast(ParameterGroup, group).reading())
            stack.enter_context(row_lookups([self.model.get_submodule(n)
                                             for n in self._row_modules]))
            return self.model(*args, **kwargs)

    def generators(self) -> list[tuple[str, GeneratedWeight]]:
        """(weight name, generator) of every generated weight, in plan order."""
        out = []
        for slot in self._plan.slots:
            module, name = _split(slot.name)
            plist = self.model.get_submodule(module).parametrizations[name]  # type: ignore[index]
            out.append((slot.name, cast(GeneratedWeight, plist[0])))
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {"npas_plan": self._plan.to_dict()}

    def set_extra_state(self, state: Any) -> None:
        try:
            plan = Plan.from_dict(state["npas_plan"])
        except (KeyError, TypeError):
            raise CheckpointError("state_dict carries no npas allocation") from None
        if plan != self._plan:
            raise CheckpointError(
                "state_dict was saved from an SSN with another allocation; build the SSN "
                "with allocator.load() or with the same shapeshift() arguments"
            )

    def _attach(self) -> dict[int, Tensor]:
        """Replace every shared weight by its generator; return the dense originals."""
        originals: dict[int, Tensor] = {}
        for index, slot in enumerate(self._plan.slots):
            gen = GeneratedWeight(slot, self.groups[slot.group], index)  # type: ignore[arg-type]
            owners = [self.model.get_submodule(_split(o)[0]) for o in slot.owners]
            # An embedding's padding row stays zero in every owner of a tied weight.
            pad = padding_rows(owners)
            for owner, module in zip(slot.owners, owners, strict=True):
                name = _split(owner)[1]
                dense = module._parameters.pop(name)
                if dense is None or tuple(dense.shape) != slot.shape:
                    raise CheckpointError(
                        f"model does not match the allocation: {owner} is "
                        f"{None if dense is None else tuple(dense.shape)}, expected {slot.shape}"
                    )
                originals.setdefault(index, dense.detach())
                # The dense weight is dropped: an empty buffer stands in as the
                # parametrization's `original`, and it is not saved.
                module.register_buffer(name, dense.new_empty(0), persistent=False)
                parametrize.register_parametrization(module, name, gen, unsafe=True)
                plist = cast(nn.Module, module.parametrizations[name])  # type: ignore[index]
                plist.register_buffer("original", plist.get_buffer("original"), persistent=False)
                if pad:
                    zero = ZeroRows(pad, device=dense.device)
                    parametrize.register_parametrization(module, name, zero, unsafe=True)
                if isinstance(module, nn.RNNBase) and not getattr(module, "_npas_hooked", False):
                    module.register_forward_pre_hook(_refresh_rnn_weights)
                    module.register_forward_hook(_release_rnn_weights)
                    module._npas_hooked = True
        return originals


@torch.no_grad()
def _initialise(ssn: SSN, originals: dict[int, Tensor], seed: int) -> None:
    """Templates start from the layers' own initial weights; coefficients orthogonal.

    Each layer writes its weight into its first window and random permutations of it
    into its further windows (the same values, so the layer's own initialiser and
    scale); upsampling layers write first, so windows of downsampling layers win where
    they overlap. Coefficients of a group's layers are rows of one orthogonal matrix.
    """
    gen = torch.Generator().manual_seed(seed)
    plan = ssn.plan
    order = sorted(range(len(plan.slots)), key=lambda i: plan.slots[i].gen.expand is None)
    for i in order:
        slot = plan.slots[i]
        theta = cast(ParameterGroup, ssn.groups[slot.group]).theta
        flat = originals[i].reshape(-1).to(theta.dtype)
        m = theta.numel()
        pos = slot.offset
        for k in range(slot.gen.templates):
            vals = flat if k == 0 else flat[torch.randperm(flat.numel(), generator=gen).to(flat.device)]
            vals = vals[: slot.gen.window]
            start = 0
            while start < vals.numel():  # chunks of at most m: no index written twice
                step = min(m - pos, vals.numel() - start)
                theta[pos : pos + step] = vals[start : start + step]
                start += step
                pos = (pos + step) % m
    members: dict[int, list[GeneratedWeight]] = {}
    for slot, (_, g) in zip(plan.slots, ssn.generators(), strict=True):
        members.setdefault(slot.group, []).append(g)
    for group_gens in members.values():
        _init_coefficients(group_gens, gen)


def _orthogonal_rows(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """``rows`` unit vectors of length ``cols``, as orthogonal to each other as fits."""
    m = torch.empty(rows, cols)
    nn.init.orthogonal_(m, generator=gen)
    return m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _init_coefficients(gens: list[GeneratedWeight], gen: torch.Generator) -> None:
    """Unit-norm mixing vectors, rows of one orthogonal matrix across the group, stored
    so that one SGD step moves a generated weight about as far as a plain weight.

    With ``s`` the norm of a layer's first template (expanded to the layer's size), a
    step ``d`` on coefficients ``alpha`` moves the weight ``alpha . T`` by about
    ``s**2 * d``. So ``wavg`` stores ``s * alpha`` and divides by ``s``. ``emb`` divides
    ``A phi + b`` by ``a * s`` with ``a**2`` the sum of ``s**2`` over the group's ``emb``
    layers, and stores ``A = a * Q`` (orthonormal rows) and ``phi = s * Q^T alpha``: the
    steps through ``phi`` and through the shared ``A`` (whose gradient sums all layers)
    then both move weights like a plain step.
    """
    for g in gens:
        if g.combine in ("wavg", "emb"):
            norm = g.group.windows(g.offset, 1, g.window).norm().item()
            norm *= (g.numel / g.window) ** 0.5  # `emb+inter` (learned mapping) expands T
            g.scale.fill_(norm if norm > 0 else 1.0)
    wavg = [g for g in gens if g.combine == "wavg"]
    if wavg:
        rows = _orthogonal_rows(len(wavg), max(g.templates for g in wavg), gen)
        for g, row in zip(wavg, rows, strict=True):
            r = row[: g.templates]
            g.coef.copy_(g.scale * r / r.norm().clamp_min(1e-12))
    emb = [g for g in gens if g.combine == "emb"]
    if emb:
        group = emb[0].group
        assert group.emb_proj is not None
        k = group.emb_proj.shape[0]
        q = _orthogonal_rows(k, group.emb_proj.shape[1], gen)  # orthonormal rows (k <= 24)
        a = float(sum(float(g.scale) ** 2 for g in emb)) ** 0.5
        group.emb_proj.copy_(a * q)
        for g, row in zip(emb, _orthogonal_rows(len(emb), k, gen), strict=True):
            v = row[: g.templates]
            v = v / v.norm().clamp_min(1e-12)
            g.embedding.copy_(g.scale * (v @ q[: g.templates]))
            g.scale.mul_(a)
    for g in gens:
        if g.expand == "mask":  # random signs: copies differ from the start
            signs = torch.randint(0, 2, g.mask.shape, generator=gen).to(g.mask) * 2 - 1
            g.mask.copy_(signs)


def _check_options(templates: object, downsample: str | None, upsample: str, mapping: str) -> None:
    if downsample is not None and downsample not in DOWNSAMPLE:
        raise ConfigError(
            f"unknown downsample generator {downsample!r}; choose one of: {', '.join(DOWNSAMPLE)}"
        )
    if upsample not in UPSAMPLE:
        raise ConfigError(
            f"unknown upsample generator {upsample!r}; choose one of: {', '.join(UPSAMPLE)}"
        )
    if mapping not in MAPPINGS:
        raise ConfigError(f"unknown mapping {mapping!r}; choose one of: {', '.join(MAPPINGS)}")
    if isinstance(templates, bool) or not isinstance(templates, int) or templates < 1:
        raise ConfigError(f"templates must be an int >= 1, got {templates!r}")


def shapeshift(
    model: nn.Module,
    budget: int | float,
    *,
    groups: int | None = None,
    templates: int = DEFAULTS["templates"],
    downsample: str | None = DEFAULTS["downsample"],
    upsample: str = DEFAULTS["upsample"],
    mapping: str = DEFAULTS["mapping"],
    manual_map: Mapping[str, object] | None = None,
    pretrain: Pretrain | None = None,
    pretrain_loss: PretrainLoss | None = None,
    seed: int = 0,
    inplace: bool = False,
) -> SSN:
    """Turn ``model`` into a Shapeshifter Network with at most ``budget`` trainable
    parameters.

    Args:
        model: any ``torch.nn.Module``; it is copied unless ``inplace=True``.
        budget: an ``int`` parameter count, or a ``float`` fraction of the model's own
            trainable parameters (``0.1`` compact, ``4.0`` extra training capacity).
        groups: number of parameter groups ``P``. Default: 1, or derived by the
            ``type`` and ``manual`` mappings (which refuse an explicit value).
        templates: the most templates ``K_max`` a layer mixes when it is smaller than
            its group (default 4, the paper's).
        downsample: ``wavg``, ``emb``, ``avg`` or ``slice``: how a layer smaller than
            its group combines templates. Default (None): ``slice`` when the budget is
            below the model's own parameter count, ``wavg`` from it up.
        upsample: ``hash`` (default), ``inter``, ``repeat`` or ``mask``: how a layer
            larger than its group expands it.
        mapping: ``single`` (default), ``type``, ``roundrobin``, ``random``,
            ``manual`` (with ``manual_map``) or ``learned`` (with ``pretrain``).
        manual_map: layer (or weight) name -> group label, for ``mapping="manual"``.
        pretrain: for ``mapping="learned"``: a callable that trains the network it is
            given for a short schedule, or an iterable of batches for one epoch of
            training with Adam: ``(inputs, targets)`` pairs (cross-entropy of the
            output's logits) or dicts of keyword arguments whose output has a ``loss``
            (transformers models given ``labels``).
        pretrain_loss: with an iterable ``pretrain``: ``loss(output, targets)`` used
            instead (``targets`` is None for dict batches).
        seed: seeds the random mapping, initial templates and coefficients.
        inplace: modify ``model`` itself instead of a copy (saves memory).

    Example:
        >>> import torch, allocator
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
        ...                             torch.nn.Linear(64, 64), torch.nn.ReLU(),
        ...                             torch.nn.Linear(64, 10))
        >>> ssn = allocator.shapeshift(model, budget=0.25)
        >>> ssn(torch.randn(8, 64)).shape
        torch.Size([8, 10])
        >>> allocator.count_parameters(ssn) <= 0.25 * allocator.count_parameters(model)
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_options(templates, downsample, upsample, mapping)
    if any(generated_names(m) for m in model.modules()):
        raise ConfigError(
            "model already has npas-generated weights (is it an SSN?); pass the plain model"
        )
    found = inventory(model)
    slots, unshared = list(found.slots), found.unshared_count
    if not slots:
        raise ConfigError(
            f"model {type(model).__name__} has no shareable layer; shareable are: {SHAREABLE_KINDS}"
            + largest_unshared(found.unshared)
        )
    base = trainable_count(model)
    count = resolve_budget(budget, base)
    downsample = downsample_for(downsample, count, base)
    if mapping == "learned":
        from allocator._learned import learn_mapping

        assignment = learn_mapping(model, slots, unshared, base, count, groups, pretrain, seed,
                                   loss=pretrain_loss)
    elif pretrain_loss is not None:
        raise ConfigError(f"pretrain_loss is used by mapping 'learned' only, not {mapping!r}")
    else:
        assignment = assign_groups(mapping, slots, groups, seed=seed, manual_map=manual_map)
    options = {
        "budget": budget,
        "groups": groups,
        "templates": templates,
        "downsample": downsample,
        "upsample": upsample,
        "mapping": mapping,
        "seed": seed,
    }
    plan = make_plan(slots, unshared, base, count, assignment, downsample=downsample,
                     upsample=upsample, templates=templates, options=options,
                     unshared_weights=found.unshared)
    if plan.trainable < count:
        unused = count - plan.trainable
        if unused > 0.005 * count:
            log.warning(
                "budget %s: %s parameters (%.1f %%) left unused; the configuration can use "
                "at most %s (more templates or more groups use more)",
                f"{count:,}", f"{unused:,}", 100 * unused / count, f"{plan.trainable:,}",
            )
    target = model if inplace else copy.deepcopy(model)
    return SSN(target, plan, seed=seed)
