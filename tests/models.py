"""Small models of every shareable kind, shared by the allocator tests."""

from __future__ import annotations

import torch
from torch import nn


class TiedLanguageModel(nn.Module):
    """Embedding tied to the output layer, an LSTM and a Transformer encoder; two inputs."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True)
        layer = nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(dim, vocab)
        self.out.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.emb(tokens))
        return self.out(self.enc(h) * scale)

    @staticmethod
    def example() -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        return torch.randint(0, 50, (3, 7), generator=g), torch.tensor(2.0)


class ConvZoo(nn.Module):
    """Conv1d/2d/3d, transposed convs, a GRU and a plain RNN, separate q/k/v attention."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 32, 3, padding=1)
        self.t1 = nn.ConvTranspose1d(32, 16, 3, padding=1)
        self.c2 = nn.Conv2d(4, 32, 3, padding=1, groups=2)
        self.t2 = nn.ConvTranspose2d(32, 16, 3, padding=1)
        self.c3 = nn.Conv3d(2, 16, 3, padding=1)
        self.t3 = nn.ConvTranspose3d(16, 8, 3, padding=1)
        self.gru = nn.GRU(16, 24, batch_first=True, bidirectional=True)
        self.rnn = nn.RNN(48, 24, batch_first=True)
        self.attn = nn.MultiheadAttention(24, 4, kdim=16, vdim=16, batch_first=True)
        self.norm = nn.LayerNorm(24)
        self.head = nn.Linear(24 + 16 + 16 + 8, 5)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        a = self.t1(torch.tanh(self.c1(x1)))  # (B, 16, L)
        b = self.t2(torch.tanh(self.c2(x2)))  # (B, 16, H, W)
        c = self.t3(torch.tanh(self.c3(x3)))  # (B, 8, D, H, W)
        seq = a.transpose(1, 2)  # (B, L, 16)
        g, _ = self.gru(seq)
        r, _ = self.rnn(g)
        att, _ = self.attn(r, seq, seq)
        feats = [self.norm(att).mean(1), a.mean(2), b.mean((2, 3)), c.mean((2, 3, 4))]
        return self.head(torch.cat(feats, dim=1))

    @staticmethod
    def example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(2)
        return (torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 6, 6, generator=g),
                torch.randn(2, 2, 4, 4, 4, generator=g))


def mlp(width: int = 32, depth: int = 4, classes: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)
