"""Energy networks: inputs (B, *shape) -> energies (B,). Only networks: the model that samples from
exp(-E) and trains E lives in ``genzoo.models.energy``.

Both use SiLU (Swish) activations. Langevin dynamics needs dE/dx everywhere, and score matching
differentiates it again: a ReLU network's second derivatives are zero almost everywhere, which
would leave score matching's trace term without a gradient.

- ``ConvEnergy``: images (B, C, H, W) in [0, 1], the short-run EBM's network of Nijkamp et al.
  (2019) at MNIST size: a 3x3 convolution, two stride-2 4x4 convolutions (28 -> 14 -> 7, 8 -> 4 -> 2)
  and a convolution over the whole remaining map to one number.
- ``MLPEnergy``: vectors (B, D), an MLP.
- ``DenoiserEnergy``: a noise-conditional energy E(x, sigma) from a denoising network (a U-Net for
  images, a residual MLP for vectors), for denoising score matching over many noise levels.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

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


class DenoiserEnergy(nn.Module):
    """A noise-conditional energy built on a denoising network: (x (B, *shape), sigma (B,)) -> E(x, sigma) (B,).

    ``denoiser`` maps (inputs, t (B,) float, None) to outputs of the inputs' shape (``genzoo.nn.denoisers``'s
    ``UNet`` or ``MLPDenoiser``). With u = x - ``center``, s_d = ``sigma_data`` and the preconditioning of Karras
    et al. (2022, "Elucidating the design space of diffusion-based generative models", table 1),

        D(x, sigma) = center + c_skip u + c_out F(c_in u, t),
        c_skip = s_d^2 / (sigma^2 + s_d^2),  c_out = sigma s_d / sqrt(sigma^2 + s_d^2),  c_in = 1 / sqrt(sigma^2 + s_d^2),

    the energy is the inner product

        E(x, sigma) = <u, x - D(x, sigma)> / (2 sigma^2)
                    = |u|^2 / (2 (sigma^2 + s_d^2)) - s_d <u, F> / (2 sigma sqrt(sigma^2 + s_d^2)).

    A fresh network's F is 0 (its output layer starts at zero), so E starts as the energy of N(center,
    (s_d^2 + sigma^2) I): the exact noisy-data energy of Gaussian data of standard deviation s_d, whose
    score -dE/dx = (D - x) / sigma^2 is Tweedie's formula. The network's time input is log sigma mapped
    linearly from [log ``sigma_min``, log ``sigma_max``] to [0, 1000], the range of a diffusion timestep.
    """

    def __init__(self, denoiser: nn.Module, sigma_min: float, sigma_max: float, sigma_data: float,
                 center: float = 0.0):
        super().__init__()
        self.denoiser, self.sigma_data, self.center = denoiser, sigma_data, center
        self.log_sigma_min, self.log_span = math.log(sigma_min), math.log(sigma_max / sigma_min)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(x.dtype).reshape(-1, *[1] * (x.dim() - 1))  # (B, 1, ...)
        u = x - self.center
        scale = (sigma**2 + self.sigma_data**2).sqrt()
        t = 1000 * (sigma.flatten().log() - self.log_sigma_min) / self.log_span  # (B,)
        # the math kernel of attention: score matching differentiates dE/dx again, which the fused CPU kernel cannot
        with sdpa_kernel(SDPBackend.MATH):
            f = self.denoiser(u / scale, t, None)
        quadratic = u.square().flatten(1).sum(1) / (2 * scale.flatten() ** 2)
        return quadratic - self.sigma_data * (u * f).flatten(1).sum(1) / (2 * (sigma * scale).flatten())
