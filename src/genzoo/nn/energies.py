"""Energy networks: inputs (B, *shape) -> energies (B,). Only networks: the model that samples from
exp(-E) and trains E lives in ``genzoo.models.energy``.

Both use SiLU (Swish) activations. Langevin dynamics needs dE/dx everywhere, and score matching
differentiates it again: a ReLU network's second derivatives are zero almost everywhere, which
would leave score matching's trace term without a gradient.

- ``ConvEnergy``: images (B, C, H, W) in [0, 1], the short-run EBM's network of Nijkamp et al.
  (2019) at MNIST size: a 3x3 convolution, two stride-2 4x4 convolutions (28 -> 14 -> 7, 8 -> 4 -> 2)
  and a convolution over the whole remaining map to one number.
- ``MLPEnergy``: vectors (B, D), an MLP.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from genzoo.nn.image import check_quarterable
from genzoo.nn.mlp import mlp


class ConvEnergy(nn.Module):
    """(B, C, H, W) in [0, 1] -> (B,) with widths ``channels``, 2x and 4x that; H and W multiples of 4."""

    def __init__(self, shape: tuple[int, int, int], channels: int):
        super().__init__()
        check_quarterable(shape, "the convolutional energy network")
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.SiLU(),  # H / 2
            nn.Conv2d(2 * channels, 4 * channels, 4, stride=2, padding=1), nn.SiLU(),  # H / 4
            nn.Conv2d(4 * channels, 1, (h // 4, w // 4)),  # (B, 1, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2 * x - 1).flatten()  # pixels centred to [-1, 1]


class MLPEnergy(nn.Module):
    """(B, *shape) -> (B,): an MLP with ``num_hidden_layers`` SiLU layers of ``hidden_dim`` units."""

    def __init__(self, shape: tuple[int, ...], hidden_dim: int, num_hidden_layers: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp([math.prod(shape)] + [hidden_dim] * num_hidden_layers + [1],
                                                   activation=nn.SiLU))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
