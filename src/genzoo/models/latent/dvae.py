"""Denoising variational autoencoder.

Im, Ahn, Memisevic & Bengio, "Denoising Criterion for Variational Auto-Encoding Framework",
AAAI 2017 (arXiv:1511.06406).

A corruption p(x~ | x) perturbs the input; the encoder sees the corrupted x~ and the decoder
reconstructs the clean x. The training objective is the denoising variational lower bound

    L_dvae = E_{p(x~|x)} E_{q(z|x~)} [log p(x|z) + log p(z) - log q(z|x~)]
           = E_{p(x~|x)} [E_{q(z|x~)} log p(x|z) - KL(q(z|x~) || p(z))],

estimated with one corruption and one z per example. The generative model is an ordinary VAE's,
so evaluation bounds log p(x) with the encoder applied to clean inputs (any q gives a bound).

Corruption: Gaussian noise of standard deviation ``noise_level`` added to the [0, 1] inputs, or,
for binary data, each bit flipped with probability ``noise_level`` (salt-and-pepper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.numerics import draw
from genzoo.models.base import check_choice
from genzoo.models.latent.vae import VAE, VAEConfig


@dataclass
class DVAEConfig(VAEConfig):
    corruption: str = "auto"  # "auto" (bitflip for binary inputs, else gaussian) | "gaussian" | "bitflip"
    noise_level: float = 0.1  # Gaussian standard deviation, or bit-flip probability

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_choice(self, "corruption", ("auto", "gaussian", "bitflip"))
        if self.corruption == "bitflip" and self.resolved_likelihood(info) != "bernoulli":
            raise ValueError("DVAEConfig.corruption='bitflip' needs binary inputs (likelihood 'bernoulli'); "
                             "use 'gaussian'")
        bitflip = self.resolved_corruption(info) == "bitflip"
        if not 0 < self.noise_level < (0.5 if bitflip else float("inf")):
            raise ValueError(f"DVAEConfig.noise_level={self.noise_level!r} must be > 0 (and < 0.5 for bit flips)")

    def resolved_corruption(self, info: DataInfo) -> str:
        if self.corruption != "auto":
            return self.corruption
        return "bitflip" if self.resolved_likelihood(info) == "bernoulli" else "gaussian"


class DVAE(VAE):
    name = "dvae"
    description = "Denoising VAE (Im et al. 2017): encode a corrupted input, reconstruct the clean one"
    Config = DVAEConfig
    capabilities = VAE.capabilities | {"corrupt"}

    @property
    def corruption(self) -> str:
        return self.config.resolved_corruption(self.info)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A sample x~ ~ p(x~ | x), same shape as x."""
        if self.corruption == "gaussian":
            return x + self.config.noise_level * draw(torch.randn, x.shape, generator, x.device, x.dtype)
        flip = draw(torch.rand, x.shape, generator, x.device, x.dtype) < self.config.noise_level
        return torch.where(flip, 1 - x, x)

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        y = self.check_labels(y, x.shape[0])
        terms = self.elbo_terms(x, y, encoder_input=self.corrupt(x))  # encode x~, reconstruct x
        neg_dvae_bound = terms["recon"] + terms["kl"]
        return {"loss": terms["recon"] + self.kl_weight(step) * terms["kl"], "neg_dvae_bound": neg_dvae_bound, **terms}
