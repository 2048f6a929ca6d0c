"""Conditioners of coupling layers: the networks that read one part of x and output the parameters
of the transform of the other part. Tensors in, tensors out; the flows take them as parts.

Both start as zero maps (the last layer is zero-initialised, as in Glow), so a coupling layer
starts as the identity and a deep flow starts stable. A context enters every conditioner: a
vector (B, E) (a class label's one-hot) and/or, for the convolutional one, a map (B, C', H, W)
of the same size as its input (the image a variational dequantiser is conditioned on).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genzoo.nn.mlp import mlp


class MLPConditioner(nn.Module):
    """x (B, D) [+ context (B, E)] -> (B, out_dim): an MLP with ``layers`` hidden layers of ``hidden`` ReLUs."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int = 2, context_dim: int = 0):
        super().__init__()
        self.net = mlp([in_dim + context_dim] + [hidden] * layers + [out_dim])
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x if context is None else torch.cat([x, context], dim=1))


class ConvConditioner(nn.Module):
    """x (B, C, H, W) [+ context] -> (B, out_channels, H, W): Glow's coupling network (section 3.3),
    3x3 conv, ``blocks`` 1x1 convs, 3x3 conv, ReLUs between; the context map is concatenated to the
    input, the context vector added to the first hidden layer."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, blocks: int = 1, context_dim: int = 0,
                 context_channels: int = 0):
        super().__init__()
        self.first = nn.Conv2d(in_channels + context_channels, hidden, 3, padding=1)
        self.context = nn.Linear(context_dim, hidden, bias=False) if context_dim else None
        middle: list[nn.Module] = [nn.ReLU()]
        for _ in range(blocks):
            middle += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
        self.middle = nn.Sequential(*middle)
        self.last = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor, context: Tensor | None = None, context_map: Tensor | None = None) -> Tensor:
        h = self.first(x if context_map is None else torch.cat([x, context_map], dim=1))  # (B, hidden, H, W)
        if self.context is not None:
            h = h + self.context(context)[:, :, None, None]
        return self.last(self.middle(h))
