"""Adversarial variational Bayes.

Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes: Unifying Variational Autoencoders
and Generative Adversarial Networks", 2017 (arXiv:1701.04722).

The VAE's generative model p(z) p(x | z), p(z) = N(0, I), with an implicit encoder: a network
z = f(x, eps), eps ~ N(0, I), whose density q(z | x) can be sampled but not evaluated. The ELBO

    ELBO(x) = E_q[ log p(x | z) - (log q(z | x) - log p(z)) ]

needs that density; AVB estimates the log ratio with a discriminator T(x, z), trained by
logistic regression to tell pairs (x, z ~ q(z | x)) from pairs (x, z ~ p(z)). Its optimum is
T*(x, z) = log q(z | x) - log p(z) (Proposition 1). The two players of Algorithm 1:

  1. "discriminator": T minimises softplus(-T(x, z_q)) + softplus(T(x, z_p)),
     z_q = f(x, eps), z_p ~ p(z)  (= -log sigma(T(x, z_q)) - log(1 - sigma(T(x, z_p))));
  2. "model": encoder and decoder minimise E_q[ -log p(x | z) + T(x, z) ] with z = f(x, eps)
     reparameterised and T's weights held fixed. Gradients still flow through T into z; those
     are the right ones, because the expected gradient of T* with respect to the encoder's
     parameters at fixed z is zero (Proposition 2).

Not a bound: T is an estimate of log q - log p, and a discriminator short of its optimum can
over- or underestimate the KL term, so ``recon + T`` (logged as ``neg_elbo_estimate``) and
``elbo_estimate`` are estimates of the negative ELBO / ELBO, not bounds on log p(x);
``log_likelihood`` reports "unavailable" and says why. The error can be large: after 5 epochs on
binarized MNIST (d = 16, defaults) T averaged 7 nats on held-out images, while the KL of the
Gaussian with q(z | x)'s mean and covariance, a lower bound on KL(q(z | x) || p(z)) (same
E_q log p(z), at most the entropy), was 71 nats: the encoder had learned to nearly ignore its
noise (variances of q(z | x) from 1e-5 to 1e-2 along its principal directions), and a
near-point-mass log q - log p is too steep for T to follow.

Choices: the noise eps (``noise_dim`` wide) enters the encoder once, concatenated to the
flattened image (mlp) or to the convolutional features (conv); T(x, z) is a network on
[features(x), z] of the same architecture. ``encode`` returns f(x, 0), a point summary of the
implicit posterior (not its mean). Adaptive contrast, the paper's variance-reduction technique
for higher-dimensional latents, is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.numerics import draw
from genzoo.models.adversarial.losses import discriminator_loss, frozen_call
from genzoo.models.base import LogLikelihood, Phase, check_positive
from genzoo.models.latent.vae import DecoderLikelihoodConfig, DecoderLikelihoodModel
from genzoo.nn.image import ImageEncoder

PHASES = ("discriminator", "model")


@dataclass
class AVBConfig(DecoderLikelihoodConfig):
    noise_dim: int = 16  # dimensions of the noise eps ~ N(0, I) fed to the encoder z = f(x, eps)
    disc_hidden_dim: int = 512  # width of the hidden layers of the discriminator T(x, z)

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "noise_dim", "disc_hidden_dim")


class AVB(DecoderLikelihoodModel):
    name = "avb"
    description = ("Adversarial variational Bayes (Mescheder et al. 2017): implicit encoder f(x, eps), "
                   "discriminator T(x, z) estimates the KL term")
    Config = AVBConfig
    capabilities = frozenset({"encode"})
    estimators = ("discriminator",)  # the ELBO with T(x, z) for its KL term: an estimate, not a bound

    def __init__(self, config: AVBConfig, info: DataInfo):
        super().__init__(config, info)
        d = config.latent_dim
        # f(x, eps): (B, C, H, W), (B, noise_dim) -> (B, d); decoder z (B, d) -> (B, P*C, H, W)
        self.encoder, self.decoder = config.networks(info, encoder_out=d, decoder_in=d,
                                                     params_per_dim=self.likelihood.params_per_dim,
                                                     cond_dim=config.noise_dim)
        # T(x, z): (B, C, H, W), (B, d) -> (B, 1), z joining the image features
        self.discriminator = ImageEncoder(config.architecture, info.shape, hidden_dim=config.disc_hidden_dim,
                                          out_dim=1, cond_dim=d, channels=config.channels,
                                          num_hidden_layers=config.num_hidden_layers)

    def phases(self) -> list[Phase]:
        model = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return [Phase("discriminator", list(self.discriminator.parameters())), Phase("model", model)]

    # --- the parts of the model ---------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I): (n, noise_dim)."""
        return draw(torch.randn, (n, self.config.noise_dim), generator, self.device, self.dtype)

    def q_sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = f(x, eps) ~ q(z | x), differentiable in the encoder's weights: (B, d)."""
        return self.encoder(x, self.noise(x.shape[0], generator))

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z) = N(0, I): (n, d)."""
        return draw(torch.randn, (n, self.config.latent_dim), generator, self.device, self.dtype)

    def T(self, x: Tensor, z: Tensor, frozen: bool = False) -> Tensor:
        """The discriminator T(x, z) (B,), which estimates log q(z | x) - log p(z) at its optimum.
        ``frozen``: T's weights get no gradient, z does (the model's turn)."""
        out = frozen_call(self.discriminator, x, z) if frozen else self.discriminator(x, z)
        return out.squeeze(1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """f(x, eps=0): a point summary of the implicit posterior q(z | x) (not its mean): (B, d)."""
        self.check_input(x)
        return self.encoder(x, x.new_zeros(x.shape[0], self.config.noise_dim))

    # --- objective ------------------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        if phase == "discriminator":
            # 1. logistic regression of (x, z ~ q(z|x)) against (x, z ~ p(z)); the encoder is not trained here
            with torch.no_grad():
                z_q = self.q_sample(x)
            t_q, t_p = self.T(x, z_q), self.T(x, self.prior_sample(x.shape[0]))
            return {"loss": discriminator_loss(t_q, t_p), "T_q": t_q.detach(), "T_p": t_p.detach()}
        if phase == "model":
            # 2. -log p(x|z) + T(x, z), z = f(x, eps): the negative ELBO with T in place of log q - log p
            z = self.q_sample(x)
            recon = -self.log_px_given_z(x, z)
            kl = self.T(x, z, frozen=True)
            neg_elbo = recon + kl
            return {"loss": neg_elbo, "recon": recon, "T": kl, "neg_elbo_estimate": neg_elbo}
        raise ValueError(f"unknown phase {phase!r} for {self.name}; its phases are: {', '.join(PHASES)}")

    @torch.no_grad()
    def elbo_estimate(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """log p(x | z) - T(x, z), z = f(x, eps), one eps per example from ``generator``: (B,) nats.

        An estimate of the ELBO, exact only when T is the optimal discriminator; not a bound, and
        too high wherever T underestimates the KL term (see the module docstring).
        """
        self.check_input(x)
        z = self.q_sample(x, generator)
        return self.log_px_given_z(x, z) - self.T(x, z)

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """The ELBO estimate log p(x | z) - T(x, z) (``elbo_estimate``): kind "estimate", not a bound.

        AVB's encoder density is implicit, so the ELBO's KL term is the discriminator's estimate,
        exact only at the optimal discriminator; the number can lie above log p(x).
        """
        return LogLikelihood(self.elbo_estimate(x, y, generator), "estimate",
                             "-log p(x|z) + T(x, z): the discriminator's estimate of the KL term in the ELBO; "
                             "exact only at the optimal discriminator, not a bound")

    def training_warnings(self, row: dict[str, float]) -> list[str]:
        kl = row.get("T")
        if kl is None or kl >= 0:
            return []
        return [f"the KL estimate T averages {kl:.3g} nats, below 0, which no KL divergence is: the "
                "discriminator is far from log q(z|x) - log p(z), so neg_elbo_estimate is unreliable"]

    # --- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(n, *shape) from z ~ N(0, I): the mean of p(x | z) for images, a draw for vectors (``sample_given_z``)."""
        return self.sample_given_z(self.prior_sample(n, generator), generator=generator)
