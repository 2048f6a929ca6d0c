"""Plain networks: tensors in, tensors out. The probabilistic models take them as parts.

- ``mlp``: a multilayer perceptron builder.
- ``ImageEncoder``: (B, C, H, W) [+ (B, c) conditioning] -> (B, out_dim).
- ``ImageDecoder``: (B, in_dim) -> (B, P*C, H, W), P output parameters per pixel.

Both come as ``"mlp"`` or ``"conv"``. The convolutional pair halves the resolution twice with
stride-2 4x4 convolutions (28 -> 14 -> 7, 8 -> 4 -> 2) and mirrors it with transposed ones, so it
fits any image whose height and width are multiples of 4 (MNIST and the 8x8 digits).
"""

from __future__ import annotations

from torch import Tensor, nn
import torch

ARCHITECTURES = ("mlp", "conv")


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def check_architecture(architecture: str, shape: tuple[int, int, int]) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    _, h, w = shape
    if architecture == "conv" and (h % 4 or w % 4):
        raise ValueError(f"architecture 'conv' needs height and width divisible by 4, got {h}x{w}")


class ImageEncoder(nn.Module):
    """x (B, C, H, W) and an optional condition (B, cond_dim) -> features (B, out_dim)."""

    def __init__(self, architecture: str, shape: tuple[int, int, int], hidden_dim: int, out_dim: int,
                 cond_dim: int = 0, channels: int = 32, num_hidden_layers: int = 2):
        super().__init__()
        check_architecture(architecture, shape)
        c, h, w = shape
        if architecture == "mlp":
            self.features = nn.Flatten()
            feature_dim = c * h * w
            head_sizes = [feature_dim + cond_dim] + [hidden_dim] * num_hidden_layers + [out_dim]
        else:
            self.features = nn.Sequential(
                nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.ReLU(),  # (B, ch, H/2, W/2)
                nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.ReLU(),  # (B, 2ch, H/4, W/4)
                nn.Flatten(),
            )
            feature_dim = 2 * channels * (h // 4) * (w // 4)
            head_sizes = [feature_dim + cond_dim, hidden_dim, out_dim]
        self.head = mlp(head_sizes)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.features(x)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.head(h)


class ImageDecoder(nn.Module):
    """z (B, in_dim) -> per-pixel parameters (B, params_per_dim * C, H, W)."""

    def __init__(self, architecture: str, shape: tuple[int, int, int], hidden_dim: int, in_dim: int,
                 params_per_dim: int = 1, channels: int = 32, num_hidden_layers: int = 2):
        super().__init__()
        check_architecture(architecture, shape)
        c, h, w = shape
        self.out_shape = (params_per_dim * c, h, w)
        if architecture == "mlp":
            self.net = nn.Sequential(
                mlp([in_dim] + [hidden_dim] * num_hidden_layers + [params_per_dim * c * h * w]),
                nn.Unflatten(1, self.out_shape),
            )
        else:
            self.net = nn.Sequential(
                mlp([in_dim, hidden_dim, 2 * channels * (h // 4) * (w // 4)]), nn.ReLU(),
                nn.Unflatten(1, (2 * channels, h // 4, w // 4)),
                nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.ReLU(),  # (B, ch, H/2, W/2)
                nn.ConvTranspose2d(channels, params_per_dim * c, 4, stride=2, padding=1),  # (B, P*C, H, W)
            )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
