"""The ``learned`` mapping: let a short training run decide which layers share.

A single-group SSN whose every layer mixes four templates through ``emb`` is trained
briefly on the user's task; each layer's learned embedding then describes how it uses
the shared parameters, and k-means (scikit-learn) over those embeddings gives the groups.
The loss of one pretraining batch, whatever the model returns, is :func:`batch_loss`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from allocator._batches import batch_loss
from allocator._errors import ConfigError
from allocator._layers import Slot
from allocator._mapping import resolve_groups
from allocator._plan import make_pretrain_plan

__all__ = ["batch_loss", "cluster_layers", "learn_mapping"]

log = logging.getLogger("allocator")


def cluster_layers(features: np.ndarray, count: int, seed: int) -> list[int]:
    """k-means of the rows of ``features`` into ``count`` non-empty groups, numbered in
    order of first appearance.

    >>> cluster_layers(np.array([[0.0], [0.1], [5.0], [5.1]]), 2, 0)
    [0, 0, 1, 1]
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    n = features.shape[0]
    if count == 1:
        return [0] * n
    if count == n:
        return list(range(n))
    scaled = features - features.mean(axis=0)
    scaled /= np.linalg.norm(scaled, axis=1, keepdims=True).clip(1e-12)
    # k-means can leave a cluster empty when rows coincide (sklearn warns, ConvergenceWarning):
    # give each empty cluster the layer farthest from its own centre, taken from a cluster
    # that has more than one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=count, n_init=10, random_state=seed).fit(scaled)
    labels = km.labels_.copy()
    for empty in sorted(set(range(count)) - set(labels.tolist())):
        dist = np.linalg.norm(scaled - km.cluster_centers_[labels], axis=1)
        sizes = np.bincount(labels, minlength=count)
        dist[sizes[labels] < 2] = -1
        labels[int(dist.argmax())] = empty
    index: dict[int, int] = {}
    return [index.setdefault(int(label), len(index)) for label in labels]


def _train_on_batches(net: nn.Module, batches: Any, loss_fn: Any = None) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for batch in batches:
        loss = batch_loss(net, batch, loss_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def learn_mapping(
    model: nn.Module,
    slots: Sequence[Slot],
    unshared: int,
    base: int,
    budget: int,
    groups: int | None,
    pretrain: Any,
    seed: int,
    *,
    loss: Any = None,
) -> list[int]:
    """Group of every slot, learned by pre-training a single-group ``emb`` SSN.

    ``loss(output, targets)`` replaces the default loss of an iterable ``pretrain``
    (see :func:`batch_loss`)."""
    from allocator._ssn import SSN

    count = resolve_groups("learned", groups, slots)
    assert count is not None
    if pretrain is None:
        raise ConfigError(
            "mapping 'learned' needs pretrain=: a callable that trains the network it is "
            "given, or an iterable of (inputs, targets) batches"
        )
    if loss is not None and (callable(pretrain) or not callable(loss)):
        raise ConfigError(
            "pretrain_loss must be a callable loss(output, targets) and goes with an iterable "
            "pretrain; a callable pretrain computes its own loss"
        )
    if count == 1:
        return [0] * len(slots)
    net = SSN(copy.deepcopy(model), make_pretrain_plan(slots, unshared, base, budget), seed=seed)
    if callable(pretrain):
        pretrain(net)
    else:
        _train_on_batches(net, pretrain, loss)
    features = np.stack(
        [g.embedding.detach().float().cpu().numpy() for _, g in net.generators()]
    )
    labels = cluster_layers(features, count, seed)
    log.info("learned mapping: %s", dict(zip((s.name for s in slots), labels, strict=True)))
    return labels
