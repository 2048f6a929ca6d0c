"""Conditional variational autoencoder.

Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional Generative
Models", NeurIPS 2015.

Conditioned on a class label y (one-hot, fed to encoder and decoder): recognition network
q(z | x, y), prior p(z | y), generation network p(x | z, y), and the conditional ELBO

    log p(x | y) >= E_q[log p(x | z, y)] - KL(q(z | x, y) || p(z | y)).

The prior is either N(0, I) ("standard", the common simplification) or a learned Gaussian
p(z | y) = N(mu(y), diag(sigma^2(y))) ("learned", the paper's prior network).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.models.base import check_labelled
from genzoo.models.latent.vae import VAE, VAEConfig
from genzoo.nn.mlp import mlp


@dataclass
class CVAEConfig(VAEConfig):
    prior: str = "standard"  # "standard": p(z|y) = N(0, I) | "learned": a prior network p(z|y)

    PRIORS = ("standard", "learned")

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_labelled(info, "cvae")


class CVAE(VAE):
    name = "cvae"
    description = "Conditional VAE (Sohn et al. 2015): label into encoder and decoder, standard or learned prior p(z|y)"
    Config = CVAEConfig

    def __init__(self, config: CVAEConfig, info: DataInfo):
        super().__init__(config, info)
        if config.prior == "learned":
            self.prior_net = mlp([info.num_classes, config.hidden_dim, 2 * config.latent_dim])

    @property
    def conditional(self) -> bool:
        return True

    def prior(self, batch_size: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """p(z | y) as (mean, logvar), each (B, d)."""
        if self.config.prior == "standard":
            return super().prior(batch_size, y)
        mean, logvar = self.prior_net(self.one_hot(y)).chunk(2, dim=-1)
        return mean, logvar
