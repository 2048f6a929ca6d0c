"""GAN players: generators z (B, d) -> images in [-1, 1] (or real vectors), discriminators -> logits (B,)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from genzoo.nn.image import check_quarterable
from genzoo.nn.mlp import mlp

# --- GAN networks: generators z (B, d) -> images in [-1, 1], discriminators images -> logits (B,) --
NORMS = ("batch", "layer", "none")


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> (B, *shape): an MLP ending in tanh (images scaled to [-1, 1]) or, with
    ``tanh=False``, in a linear layer (real vectors, unbounded)."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...], hidden_dim: int, num_hidden_layers: int = 2,
                 tanh: bool = True):
        super().__init__()
        self.net = nn.Sequential(mlp([latent_dim] + [hidden_dim] * num_hidden_layers + [math.prod(shape)]),
                                 nn.Tanh() if tanh else nn.Identity(), nn.Unflatten(1, shape))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """Images (B, C, H, W) or vectors (B, D) -> logits (B,): an MLP with LeakyReLU(0.2) activations."""

    def __init__(self, shape: tuple[int, ...], hidden_dim: int, num_hidden_layers: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp([math.prod(shape)] + [hidden_dim] * num_hidden_layers + [1],
                                                   activation=functools.partial(nn.LeakyReLU, 0.2)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def check_dcgan_shape(shape: tuple[int, int, int]) -> None:
    check_quarterable(shape, "the DCGAN networks")


def _norm(kind: str, channels: int, conv: bool) -> nn.Module:
    """Batch norm, layer norm (over (C, H, W) for conv features: one group) or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels) if conv else nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels) if conv else nn.LayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}; choose one of: {', '.join(NORMS)}")


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.'s initialisation: weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1].

    The DCGAN rules (Radford et al. 2016): fractionally-strided convolutions, no pooling, batch
    norm and ReLU everywhere but the tanh output. With one fully connected hidden layer, as in the
    MNIST DCGAN of Chen et al. 2016 (InfoGAN): z -> hidden_dim -> (2ch, H/4, W/4) -> (ch, H/2,
    W/2) -> (C, H, W), i.e. 7 -> 14 -> 28 for MNIST and 2 -> 4 -> 8 for the 8x8 digits. With
    ``num_classes``, a learned label embedding (latent_dim wide) is concatenated to z.
    """

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], hidden_dim: int, channels: int = 64,
                 num_classes: int = 0):
        super().__init__()
        check_dcgan_shape(shape)
        c, h, w = shape
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * channels * (h // 4) * (w // 4), bias=False),
            nn.BatchNorm1d(2 * channels * (h // 4) * (w // 4)), nn.ReLU(),
            nn.Unflatten(1, (2 * channels, h // 4, w // 4)),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1, bias=False),  # (B, ch, H/2, W/2)
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.ConvTranspose2d(channels, c, 4, stride=2, padding=1), nn.Tanh(),  # (B, C, H, W)
        )
        dcgan_init(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """Images (B, C, H, W) [+ labels (B,)] -> logits (B,).

    Strided convolutions, LeakyReLU(0.2), no pooling, no normalisation on the first layer (the
    DCGAN rules), then a fully connected feature layer phi(x) (hidden_dim) and a linear output.
    ``norm`` is "batch" (DCGAN), "layer" or "none" (a WGAN-GP critic must not use batch norm:
    its penalty is per example). With ``num_classes`` the output is the projection discriminator
    of Miyato & Koyama 2018 (arXiv:1802.05637): psi(phi(x)) + embed(y) . phi(x).
    """

    def __init__(self, shape: tuple[int, int, int], hidden_dim: int, channels: int = 64, num_classes: int = 0,
                 norm: str = "batch"):
        super().__init__()
        check_dcgan_shape(shape)
        c, h, w = shape
        bias = norm == "none"  # a bias before a normalisation is cancelled by it
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, ch, H/2, W/2)
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1, bias=bias),  # (B, 2ch, H/4, W/4)
            _norm(norm, 2 * channels, conv=True), nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * channels * (h // 4) * (w // 4), hidden_dim, bias=bias),
            _norm(norm, hidden_dim, conv=False), nn.LeakyReLU(0.2),  # phi(x): (B, hidden_dim)
        )
        self.out = nn.Linear(hidden_dim, 1)
        self.embed = nn.Embedding(num_classes, hidden_dim) if num_classes else None
        dcgan_init(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        phi = self.features(x)
        logits = self.out(phi).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(y) * phi).sum(1)
        return logits


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018, arXiv:1802.05957) of every linear, convolutional
    and embedding weight in ``module``, in place: W / sigma_max(W), sigma by power iteration."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(m)
    return module
