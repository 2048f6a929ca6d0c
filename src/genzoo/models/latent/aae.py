"""Adversarial autoencoder.

Makhzani, Shlens, Jaitly, Goodfellow & Frey, "Adversarial Autoencoders", 2016 (arXiv:1511.05644).

An autoencoder whose codes are pushed towards a prior p(z) by a GAN played on the latent space:
a discriminator D(z) tells prior samples ("real") from codes of the data ("fake"), and the
encoder, as the generator, learns to fool it. The aggregated posterior
q(z) = E_{p_data(x)}[q(z | x)] is matched to p(z) adversarially, in place of the VAE's KL term.
Every batch goes through the paper's two phases (section 2), the second split into its players:

  1. reconstruction ("autoencoder"): encoder and decoder minimise -log p(x | z), z ~ q(z | x);
  2a. regularisation, discriminator ("discriminator"): D minimises -log D(z_p) - log(1 - D(z_q)),
      z_p ~ p(z), z_q ~ q(z | x);
  2b. regularisation, generator ("encoder"): the encoder minimises -log D(z_q), the
      non-saturating generator loss, with D held fixed.

Options (config):
- ``encoder``: "deterministic" (default) z = f(x), or "gaussian" z ~ N(mu(x), diag sigma^2(x)):
  two of the three choices of q(z | x) that the paper discusses, reporting similar results for
  them (its "universal approximator posterior" is not implemented).
- ``prior``: "gaussian" N(0, I), or "mixture": ``mixture_components`` equally weighted Gaussians
  N(m_k, s^2 I) with s = ``mixture_std`` in every coordinate and means on a circle of radius
  r = ``mixture_radius`` in the first two coordinates, as in the paper's 2-D figures:
  m_k = r (cos(2 pi k / K), sin(2 pi k / K), 0, ..., 0), k = 0..K-1. The defaults (K = 10,
  r = 4, s = 0.5) put neighbouring means 2 r sin(pi / K) = 2.5 apart, five standard deviations.
- ``label_conditioned`` (section 5, label information in the adversarial regularisation): the
  label y picks the mixture component of the prior sample and is shown to D as a one-hot
  vector beside z, so the codes of class y are pushed to component y, and ``sample`` draws
  class y from component y. Every training example is labelled here: the paper's extra
  "unlabelled" class for semi-supervised use is left out. The decoder does not see the label.

Deviations: Adam for every phase (the paper: SGD with momentum), with betas (0.5, 0.999) by
default and the regularisation phases at their own, lower learning rate (``adversarial_lr``);
the reconstruction error is the VAE's likelihood -log p(x | z) in nats.

The model defines no tractable likelihood: ``log_likelihood`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.gaussian import reparameterize
from genzoo.distributions.mixture import sample_gaussian_mixture
from genzoo.distributions.numerics import draw
from genzoo.models.adversarial.losses import (
    D_WINS_FAKE,
    D_WINS_REAL,
    discriminator_loss,
    frozen_call,
    generator_loss,
)
from genzoo.models.base import LogLikelihood, Phase, check_choice, check_positive
from genzoo.models.latent.vae import DecoderLikelihoodConfig, DecoderLikelihoodModel
from genzoo.nn.mlp import mlp

ENCODERS = ("deterministic", "gaussian")
PRIORS = ("gaussian", "mixture")
PHASES = ("autoencoder", "discriminator", "encoder")


@dataclass
class AAEConfig(DecoderLikelihoodConfig):
    encoder: str = "deterministic"  # "deterministic": z = f(x) | "gaussian": z ~ N(mu(x), diag sigma^2(x))
    prior: str = "gaussian"  # "gaussian": N(0, I) | "mixture": equally weighted Gaussians on a circle
    mixture_components: int = 10  # components K of the mixture prior
    mixture_radius: float = 4.0  # distance of the mixture means from 0, in the first two coordinates of z
    mixture_std: float = 0.5  # standard deviation of each mixture component in every coordinate
    label_conditioned: bool = False  # the label picks the mixture component and is shown to D (paper, section 5)
    disc_hidden_dim: int = 512  # width of the two hidden layers of the discriminator D(z)
    adversarial_lr: float = 2e-4  # learning rate of the discriminator and encoder phases (autoencoder: --lr)

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_choice(self, "encoder", ENCODERS)
        check_choice(self, "prior", PRIORS)
        check_positive(self, "mixture_components", "mixture_radius", "mixture_std", "disc_hidden_dim",
                       "adversarial_lr")
        if self.prior == "mixture" and self.latent_dim < 2:
            raise ValueError(f"AAEConfig.latent_dim={self.latent_dim} must be >= 2 for prior='mixture': "
                             "its means lie on a circle in the first two coordinates")
        if self.label_conditioned:
            if self.prior != "mixture":
                raise ValueError("AAEConfig.label_conditioned=True needs prior='mixture' "
                                 "(the label picks the mixture component)")
            if info.num_classes == 0:
                raise ValueError(f"AAEConfig.label_conditioned=True needs class labels, and dataset "
                                 f"{info.name!r} has none")
            if self.mixture_components != info.num_classes:
                raise ValueError(f"AAEConfig.mixture_components={self.mixture_components} must equal the "
                                 f"{info.num_classes} classes of {info.name!r} when label_conditioned=True")


class AdversarialAutoencoder(DecoderLikelihoodModel):
    name = "aae"
    description = ("Adversarial autoencoder (Makhzani et al. 2016): a discriminator on z matches the codes "
                   "to a Gaussian or mixture prior")
    Config = AAEConfig
    capabilities = frozenset({"encode"})
    training_defaults = {"betas": (0.5, 0.999)}  # the usual Adam betas of adversarial training (Radford et al.)

    def __init__(self, config: AAEConfig, info: DataInfo):
        super().__init__(config, info)
        d = config.latent_dim
        encoder_out = d if config.encoder == "deterministic" else 2 * d  # f(x), or (mu(x), log sigma^2(x))
        self.encoder, self.decoder = config.networks(info, encoder_out=encoder_out, decoder_in=d,
                                                     params_per_dim=self.likelihood.params_per_dim)
        # D([z, one_hot(y)]) -> logit: (B, d [+ num_classes]) -> (B, 1); two ReLU layers as in the paper
        label_dim = info.num_classes if config.label_conditioned else 0
        self.discriminator = mlp([d + label_dim, config.disc_hidden_dim, config.disc_hidden_dim, 1])

    @property
    def conditional(self) -> bool:
        return self.config.label_conditioned

    def phases(self) -> list[Phase]:
        """The encoder is a player twice: in reconstruction (with the decoder) and as D's opponent.

        The regularisation phases run at ``adversarial_lr``, below the reconstruction's rate: at
        the same rate the game oscillates and the codes stay off the prior while D is fooled (on
        digits, 100 epochs, d = 16: the train codes' per-dimension means average 0.72 in absolute
        value, stds 0.3-0.9, at 1e-3; 0.18 and ~0.96 at 2e-4, with a lower reconstruction error).
        """
        encoder, decoder = list(self.encoder.parameters()), list(self.decoder.parameters())
        lr = self.config.adversarial_lr
        return [Phase("autoencoder", encoder + decoder),
                Phase("discriminator", list(self.discriminator.parameters()), lr=lr),
                Phase("encoder", encoder, lr=lr)]

    # --- the prior p(z) ---------------------------------------------------------------------------
    def mixture_means(self) -> Tensor:
        """m_k = r (cos(2 pi k / K), sin(2 pi k / K), 0, ..., 0): (K, d)."""
        k, d, r = self.config.mixture_components, self.config.latent_dim, self.config.mixture_radius
        angle = 2 * math.pi * torch.arange(k, device=self.device, dtype=self.dtype) / k  # (K,)
        means = torch.zeros(k, d, device=self.device, dtype=self.dtype)
        means[:, 0], means[:, 1] = r * torch.cos(angle), r * torch.sin(angle)
        return means

    def prior_sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z): (n, d). With the mixture prior, ``labels`` (n,) pick the components; without
        them each component is drawn with probability 1/K. Noise from ``generator`` if given."""
        if self.config.prior == "gaussian":
            return draw(torch.randn, (n, self.config.latent_dim), generator, self.device, self.dtype)  # (n, d)
        means = self.mixture_means()  # (K, d)
        weights = torch.full((len(means),), 1 / len(means), device=self.device, dtype=self.dtype)
        return sample_gaussian_mixture(n, weights, means, torch.full_like(means, self.config.mixture_std), generator,
                                       components=labels)

    # --- encoder, decoder, discriminator ----------------------------------------------------------
    def q_sample(self, x: Tensor) -> Tensor:
        """A code z ~ q(z | x): f(x), or a reparameterised Gaussian sample (global RNG): (B, d)."""
        h = self.encoder(x)
        if self.config.encoder == "deterministic":
            return h
        mean, logvar = h.chunk(2, dim=-1)
        return reparameterize(mean, logvar)

    def discriminate(self, z: Tensor, y: Tensor | None, frozen: bool = False) -> Tensor:
        """D's logits (B,) for codes z (B, d) [and labels y (B,)]. ``frozen``: D's weights get no
        gradient (the encoder's turn)."""
        if self.config.label_conditioned:
            z = torch.cat([z, F.one_hot(y, self.info.num_classes).to(z.dtype)], dim=1)
        logits = frozen_call(self.discriminator, z) if frozen else self.discriminator(z)
        return logits.squeeze(1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The code of x: f(x), or the mean of the Gaussian q(z | x): (B, d). The label is unused."""
        self.check_input(x)
        h = self.encoder(x)
        return h if self.config.encoder == "deterministic" else h.chunk(2, dim=-1)[0]

    # --- objective ----------------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        y = self.check_labels(y, x.shape[0])
        if phase == "autoencoder":
            # 1. reconstruction: -log p(x | z), z ~ q(z | x), in nats
            recon = -self.log_px_given_z(x, self.q_sample(x))
            return {"loss": recon, "recon": recon}
        if phase == "discriminator":
            # 2a. D: prior samples are real, codes of the data fake; no gradient to the encoder
            with torch.no_grad():
                z_q = self.q_sample(x)
            z_p = self.prior_sample(x.shape[0], y)
            real, fake = self.discriminate(z_p, y), self.discriminate(z_q, y)
            return {"loss": discriminator_loss(real, fake),
                    "d_real": torch.sigmoid(real).detach(), "d_fake": torch.sigmoid(fake).detach()}
        if phase == "encoder":
            # 2b. the encoder as generator: -log D(z_q), gradients through D's input only
            fake = self.discriminate(self.q_sample(x), y, frozen=True)
            return {"loss": generator_loss(fake, "non_saturating"), "d_fake": torch.sigmoid(fake).detach()}
        raise ValueError(f"unknown phase {phase!r} for {self.name}; its phases are: {', '.join(PHASES)}")

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        self.check_input(x)
        self.check_labels(y, x.shape[0])
        return LogLikelihood(None, "unavailable",
                             "the adversarial autoencoder has no tractable likelihood: its codes are matched to "
                             "the prior by a discriminator, which gives neither log p(x) nor a bound on it")

    def training_warnings(self, row: dict[str, float]) -> list[str]:
        real, fake = row.get("discriminator/d_real"), row.get("discriminator/d_fake")
        if real is None or fake is None or not (real > D_WINS_REAL and fake < D_WINS_FAKE):
            return []
        return [f"the discriminator on z tells prior samples from codes almost perfectly (mean D(prior) "
                f"{real:.3f}, D(codes) {fake:.3f}): the codes do not match the prior, so decoded prior "
                "samples will not look like data; try a lower --lr or a narrower --disc-hidden-dim"]

    # --- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(n, *shape) from z ~ p(z) (the label's component if conditioned): the mean of p(x | z) for
        images, a draw for vectors (``sample_given_z``)."""
        labels = self.check_labels(labels, n)
        return self.sample_given_z(self.prior_sample(n, labels, generator), generator=generator)
