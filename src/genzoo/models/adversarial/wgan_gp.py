"""Wasserstein GAN with gradient penalty.

Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, "Improved Training of Wasserstein GANs", 2017
(arXiv:1704.00028), Algorithm 1. The critic f (no sigmoid) estimates the Wasserstein-1 distance
between data and samples, W = max_{||f||_L <= 1} E[f(x)] - E[f(G(z))]; the Lipschitz constraint
is enforced softly by a penalty at random interpolates x_hat = eps x + (1 - eps) G(z):

    critic:    min_f  f(G(z)) - f(x) + lambda (||grad f(x_hat)||_2 - 1)^2     (n_critic updates)
    generator: min_G  -f(G(z))

on the DCGAN players of ``dcgan`` for images. Following the paper, the critic uses no batch norm
(the penalty is per example; batch statistics would couple the examples): layer norm, the paper's
recommended replacement, by default; Adam with lr 1e-4, betas (0, 0.9), n_critic 5, lambda 10.

On real vectors (the 2-D arena) the players are MLPs, as in the paper's toy experiments (its
released gan_toy.py: three hidden ReLU layers of 512 units in each player): a generator with a
linear output and a critic without normalisation (``d_norm`` applies to the convolutional critic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.models.adversarial.dcgan import DCGAN, DCGANConfig
from genzoo.models.adversarial.losses import gradient_penalty
from genzoo.models.base import check_positive
from genzoo.nn.players import MLPDiscriminator, MLPGenerator

GP_LIMIT = 1.0  # mean penalty above this: the critic's gradients are far from norm 1


@dataclass
class WGANGPConfig(DCGANConfig):
    losses: ClassVar[tuple[str, ...]] = ("wasserstein",)

    loss: str = "wasserstein"  # fixed: the critic's estimate of the Wasserstein-1 distance
    d_steps: int = 5  # n_critic: critic updates per generator update
    d_norm: str = "layer"  # normalisation in the critic's hidden layers: "layer" | "none" (no batch norm)
    gp_lambda: float = 10.0  # weight lambda of the gradient penalty
    mlp_hidden_layers: int = 3  # hidden layers of each MLP player on vector data (hidden_dim wide; the paper's toys: 3 of 512)

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "gp_lambda", allow_zero=True)
        check_positive(self, "mlp_hidden_layers")
        if self.d_norm == "batch":
            raise ValueError(f"{type(self).__name__}.d_norm='batch' is not allowed: the gradient penalty is per "
                             "example and batch norm couples the examples; use 'layer' or 'none'")

    def validate_data(self, info: DataInfo) -> None:
        if info.kind == "image":  # the DCGAN players; vectors get MLP players
            super().validate_data(info)


class WGANGP(DCGAN):
    name = "wgan-gp"
    description = "WGAN-GP (Gulrajani et al. 2017): Wasserstein critic with gradient penalty, n_critic steps"
    Config = WGANGPConfig
    # Algorithm 1 of the paper: Adam(alpha = 1e-4, beta1 = 0, beta2 = 0.9); minibatches of 64.
    training_defaults: ClassVar[dict] = {"lr": 1e-4, "betas": (0.0, 0.9), "batch_size": 64}

    def networks(self, config: WGANGPConfig, info: DataInfo) -> tuple[nn.Module, nn.Module]:
        """The DCGAN players for images; MLP players for vectors (a linear generator output, no norm in the critic)."""
        if info.kind == "image":
            return super().networks(config, info)
        return (MLPGenerator(config.latent_dim, info.shape, config.hidden_dim, config.mlp_hidden_layers, tanh=False),
                MLPDiscriminator(info.shape, config.hidden_dim, config.mlp_hidden_layers))

    def critic_objective(self, real_logits: Tensor, fake_logits: Tensor, real_in: Tensor, fake_in: Tensor,
                         y: Tensor | None) -> dict[str, Tensor]:
        gp = gradient_penalty(lambda v: self.discriminate(v, y), real_in, fake_in)
        return {"loss": fake_logits - real_logits + self.config.gp_lambda * gp,
                "critic_real": real_logits.detach(), "critic_fake": fake_logits.detach(),
                "wasserstein": (real_logits - fake_logits).detach(), "gp": gp.detach()}

    def generator_objective(self, fake_logits: Tensor) -> dict[str, Tensor]:
        return {"loss": -fake_logits, "critic_fake": fake_logits.detach()}

    def training_warnings(self, row: dict[str, float]) -> list[str]:
        """Collapsed samples, and a critic far from 1-Lipschitz (its Wasserstein estimate is then meaningless)."""
        messages = super().training_warnings(row)
        gp = row.get("discriminator/gp")
        if gp is not None and gp > GP_LIMIT:
            messages.append(f"the critic is far from 1-Lipschitz (mean gradient penalty {gp:.3g} > {GP_LIMIT}): "
                            "its Wasserstein estimate is unreliable; try a lower lr or a larger gp_lambda")
        return messages
