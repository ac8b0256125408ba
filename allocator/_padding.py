"""Embedding padding rows: a generated embedding keeps ``padding_idx`` at zero.

``nn.Embedding(padding_idx=i)`` promises that row ``i`` is zero and never trained. A
generated weight is computed from shared values, so its row ``i`` would be whatever
those values give; :class:`ZeroRows` is a second parametrization, after the generator,
that writes zeros there (out of place, so no gradient reaches the shared values through
that row, and the materialised weight has the zero row).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["ZeroRows", "padding_rows"]


def padding_rows(modules: Iterable[nn.Module]) -> list[int]:
    """The padding rows of the embeddings among ``modules`` (the owners of one weight).

    >>> padding_rows([nn.Embedding(5, 3, padding_idx=0), nn.Linear(3, 5)])
    [0]
    """
    rows: set[int] = set()
    for m in modules:
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.padding_idx is not None:
            rows.add(int(m.padding_idx) % m.num_embeddings)
    return sorted(rows)


class ZeroRows(nn.Module):
    """Parametrization setting the given rows of a weight to zero.

    >>> ZeroRows([1])(torch.ones(3, 2))
    tensor([[1., 1.],
            [0., 0.],
            [1., 1.]])
    """

    rows: Tensor

    def __init__(self, rows: Iterable[int], device: torch.device | str | None = None) -> None:
        super().__init__()
        index = torch.tensor(list(rows), dtype=torch.long, device=device)
        self.register_buffer("rows", index, persistent=False)

    def forward(self, weight: Tensor) -> Tensor:
        return weight.index_fill(0, self.rows, 0.0)

    def extra_repr(self) -> str:
        return f"rows={self.rows.tolist()}"
