"""Denoising networks: (x_t, t, y) -> a tensor of x_t's size times ``out_factor``. Only networks: the
diffusion process that reads their output lives in ``genzoo.models.diffusion``.

- ``timestep_embedding``: the sinusoidal embedding of Vaswani et al. (2017), as in Ho et al. (2020).
- ``UNet``: the U-Net of Ho et al. with the changes of Nichol & Dhariwal (2021): residual blocks with
  GroupNorm whose scale and shift come from the time (and class) embedding, self-attention at the
  low resolutions (``scaled_dot_product_attention``), strided-convolution downsampling and nearest
  upsampling back to each skip's own size (so odd sizes such as 7x7 work, and any channel count).
- ``MLPDenoiser``: residual MLP blocks for vectors (the 2-D arena), the embedding added to each block.

Labels: ``num_classes`` K > 0 adds a learned embedding of y in 0..K, where K is the "no label" token of
classifier-free guidance (Ho & Salimans 2022). y = None means no label for every example.
The last layer of each residual branch and the output layer start at zero, so a fresh network
outputs 0 (the mean of the noise) and each block starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding (B, dim) of timesteps t (B,): [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim / 2))."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]  # (B, dim / 2)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], 1)
    return F.pad(embedding, (0, dim % 2))


def zero(module: nn.Module) -> nn.Module:
    """``module`` with its parameters set to zero (the output layers of residual branches)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, or the largest divisor of ``channels`` below it (tiny test networks)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class Conditioning(nn.Module):
    """(t (B,), y (B,) or None) -> embedding (B, E): an MLP of the sinusoidal time embedding, plus a class embedding."""

    def __init__(self, base: int, dim: int, num_classes: int):
        super().__init__()
        self.base, self.num_classes = base, num_classes
        self.time = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: Tensor, y: Tensor | None) -> Tensor:
        embedding = self.time(timestep_embedding(t, self.base).to(self.time[0].weight.dtype))
        if self.label is not None:
            y = torch.full_like(t, self.num_classes, dtype=torch.long) if y is None else y
            embedding = embedding + self.label(y)
        return embedding


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv; GroupNorm scaled and shifted by the embedding, SiLU, dropout, 3x3 conv; plus the skip."""

    def __init__(self, channels: int, out_channels: int, embedding_dim: int, dropout: float, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(channels, groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.embedding = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, 2 * out_channels))
        self.norm = group_norm(out_channels, groups)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.embedding(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers(self.norm(h) * (1 + scale) + shift)  # N&D's scale-shift norm
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H x W positions, with GroupNorm before and a residual after."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention over {channels} channels needs a head count that divides them, got {heads}")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Upsample(nn.Module):
    """Nearest upsampling to the next skip's size (7 -> 14, 4 -> 7, ...), then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNet(nn.Module):
    """(x (B, C, H, W), t (B,), y) -> (B, out_factor C, H, W).

    ``channel_mult`` gives the width of each level in units of ``channels``; ``blocks`` residual blocks
    per level on the way down and blocks + 1 on the way up (each taking a skip); attention after the
    blocks of every level whose resolution (the height) is in ``attention_resolutions``.
    """

    def __init__(self, shape: tuple[int, int, int], out_factor: int = 1, channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2, 2), blocks: int = 2, attention_resolutions: tuple[int, ...] = (7,),
                 heads: int = 4, dropout: float = 0.1, num_classes: int = 0, groups: int = 8):
        super().__init__()
        c_in, height, _ = shape
        embedding_dim = 4 * channels
        self.conditioning = Conditioning(channels, embedding_dim, num_classes)
        self.stem = nn.Conv2d(c_in, channels, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        widths, width, resolution = [channels], channels, height
        for level, mult in enumerate(channel_mult):
            for _ in range(blocks):
                layers = [ResBlock(width, channels * mult, embedding_dim, dropout, groups)]
                width = channels * mult
                if resolution in attention_resolutions:
                    layers.append(Attention(width, heads, groups))
                self.down.append(nn.ModuleList(layers))
                widths.append(width)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(width, width, 3, stride=2, padding=1)]))
                widths.append(width)
                resolution = (resolution + 1) // 2
        self.middle = nn.ModuleList([ResBlock(width, width, embedding_dim, dropout, groups), Attention(width, heads, groups),
                                     ResBlock(width, width, embedding_dim, dropout, groups)])
        for level, mult in reversed(list(enumerate(channel_mult))):
            for block in range(blocks + 1):
                layers = [ResBlock(width + widths.pop(), channels * mult, embedding_dim, dropout, groups)]
                width = channels * mult
                if resolution in attention_resolutions:
                    layers.append(Attention(width, heads, groups))
                if level and block == blocks:
                    layers.append(Upsample(width))
                self.up.append(nn.ModuleList(layers))
            resolution = resolution * 2 if level else resolution
        self.out = nn.Sequential(group_norm(width, groups), nn.SiLU(), zero(nn.Conv2d(width, out_factor * c_in, 3, padding=1)))

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, embedding: Tensor, size: torch.Size | None = None) -> Tensor:
        for layer in layers:
            if isinstance(layer, ResBlock):
                h = layer(h, embedding)
            else:
                h = layer(h, size) if isinstance(layer, Upsample) else layer(h)
        return h

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        embedding = self.conditioning(t, y)
        h = self.stem(x)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, embedding)
            skips.append(h)
        h = self._run(self.middle, h, embedding)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, skips.pop()], 1), embedding, skips[-1].shape[-2:] if skips else None)
        return self.out(h)


class MLPDenoiser(nn.Module):
    """(x (B, D), t (B,), y) -> (B, out_factor D): ``layers`` residual blocks of width ``hidden``."""

    def __init__(self, dim: int, out_factor: int = 1, hidden: int = 128, layers: int = 3, num_classes: int = 0):
        super().__init__()
        self.conditioning = Conditioning(hidden, hidden, num_classes)
        self.stem = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                                  zero(nn.Linear(hidden, hidden))) for _ in range(layers))
        self.embed = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Sequential(nn.SiLU(), zero(nn.Linear(hidden, out_factor * dim)))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        embedding = self.conditioning(t, y)
        h = self.stem(x)
        for block, embed in zip(self.blocks, self.embed):
            h = h + block(h + embed(embedding))
        return self.out(h)
