"""Encoder and decoder of the autoencoder family: MLP or convolutional for images (C, H, W), MLP
for vectors (D,)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genzoo.nn.mlp import ACTIVATIONS, ARCHITECTURES, mlp


def check_quarterable(shape: tuple[int, int, int], networks: str) -> None:
    """The conv networks here halve the resolution twice: height and width must be multiples of 4."""
    _, h, w = shape
    if h % 4 or w % 4:
        raise ValueError(f"{networks}: height and width must be divisible by 4, got {h}x{w}")


def check_architecture(architecture: str, shape: tuple[int, ...], activation: str = "relu") -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if architecture == "conv":
        if len(shape) != 3:
            raise ValueError(f"architecture 'conv' needs images (C, H, W), and these data are vectors of shape "
                             f"{tuple(shape)}: use --set architecture=mlp")
        check_quarterable(shape, "architecture 'conv'")


class ImageEncoder(nn.Module):
    """x (B, C, H, W) or (B, D) and an optional condition (B, cond_dim) -> features (B, out_dim)."""

    def __init__(self, architecture: str, shape: tuple[int, ...], hidden_dim: int, out_dim: int,
                 cond_dim: int = 0, channels: int = 32, num_hidden_layers: int = 2, activation: str = "relu"):
        super().__init__()
        check_architecture(architecture, shape, activation)
        if architecture == "mlp":
            self.features = nn.Flatten()
            feature_dim = math.prod(shape)
            head_sizes = [feature_dim + cond_dim] + [hidden_dim] * num_hidden_layers + [out_dim]
        else:
            c, h, w = shape
            self.features = nn.Sequential(
                nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.ReLU(),  # (B, ch, H/2, W/2)
                nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.ReLU(),  # (B, 2ch, H/4, W/4)
                nn.Flatten(),
            )
            feature_dim = 2 * channels * (h // 4) * (w // 4)
            head_sizes = [feature_dim + cond_dim, hidden_dim, out_dim]
        self.head = mlp(head_sizes, ACTIVATIONS[activation])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.features(x)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.head(h)


class ImageDecoder(nn.Module):
    """z (B, in_dim) -> per-dimension parameters (B, params_per_dim * C, H, W), or (B, params_per_dim * D)
    for vectors: P blocks of the data's channels."""

    def __init__(self, architecture: str, shape: tuple[int, ...], hidden_dim: int, in_dim: int,
                 params_per_dim: int = 1, channels: int = 32, num_hidden_layers: int = 2,
                 activation: str = "relu"):
        super().__init__()
        check_architecture(architecture, shape, activation)
        self.out_shape = (params_per_dim * shape[0], *shape[1:])  # (P*C, H, W) or (P*D,)
        if architecture == "mlp":
            self.net = nn.Sequential(
                mlp([in_dim] + [hidden_dim] * num_hidden_layers + [math.prod(self.out_shape)], ACTIVATIONS[activation]),
                nn.Unflatten(1, self.out_shape),
            )
        else:
            c, h, w = shape
            self.net = nn.Sequential(
                mlp([in_dim, hidden_dim, 2 * channels * (h // 4) * (w // 4)], ACTIVATIONS[activation]), nn.ReLU(),
                nn.Unflatten(1, (2 * channels, h // 4, w // 4)),
                nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.ReLU(),  # (B, ch, H/2, W/2)
                nn.ConvTranspose2d(channels, params_per_dim * c, 4, stride=2, padding=1),  # (B, P*C, H, W)
            )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


