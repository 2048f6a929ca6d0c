"""Generative adversarial networks: the game, its regularisers, and the MLP ``gan``.

Goodfellow et al., "Generative Adversarial Nets", 2014 (arXiv:1406.2661). A generator G maps
noise z ~ N(0, I) to images; a discriminator D (logits, D = sigmoid) tells data from samples.
Algorithm 1 of the paper alternates k discriminator updates

    min_D  -log D(x) - log(1 - D(G(z)))

with one generator update, either of the minimax game, min_G log(1 - D(G(z))) (``loss="minimax"``),
or of the non-saturating loss the paper recommends in practice, min_G -log D(G(z))
(``loss="non_saturating"``): the same fixed point, but a strong gradient while D still rejects
the samples.

Regularisers, selectable on every GAN here (all off by default):
- instance noise (Sonderby et al. 2017, arXiv:1610.04490; Arjovsky & Bottou 2017,
  arXiv:1701.04862): N(0, sigma^2) noise on the real and the generated inputs of D, sigma
  annealed linearly to 0, so that the two distributions overlap early in training;
- the R1 penalty gamma/2 ||grad_x D(x)||^2 on real data (Mescheder et al. 2018, arXiv:1801.04406);
- spectral normalisation of D's weights (Miyato et al. 2018, arXiv:1802.05957).

This module holds what the family shares (``dcgan``, ``cgan``, ``wgan-gp`` are small subclasses
that swap the networks or the objective). Deviations from the 2014 paper: the MLP discriminator
uses LeakyReLU instead of maxout units and dropout, and the generator ends in tanh (images are
mapped to [-1, 1]) instead of a sigmoid. On real vectors (the 2-D arena) the MLP generator's output
is linear and the data are not rescaled: the players see the values as they are. A GAN defines no
density: ``log_likelihood`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from genzoo.data.core import DataInfo, scale_from_symmetric, scale_to_symmetric
from genzoo.distributions.numerics import at_least_fp32, draw
from genzoo.models.adversarial.losses import (
    D_WINS_FAKE,
    D_WINS_REAL,
    GENERATOR_LOSSES,
    MIN_DIVERSITY,
    add_instance_noise,
    annealed_std,
    discriminator_loss,
    frozen_call,
    generator_loss,
    r1_penalty,
    sample_diversity,
)
from genzoo.models.base import (
    GenerativeModel,
    LogLikelihood,
    ModelConfig,
    Phase,
    check_choice,
    check_positive,
)
from genzoo.nn.mode import eval_mode
from genzoo.nn.players import MLPDiscriminator, MLPGenerator, spectral_normalize


@dataclass
class GANConfig(ModelConfig):
    """What every GAN shares: the noise, the objective, the schedule of the players, the regularisers."""

    losses: ClassVar[tuple[str, ...]] = GENERATOR_LOSSES

    latent_dim: int = 64  # dimensions of the noise z ~ N(0, I)
    hidden_dim: int = 512  # width of the fully connected hidden layers
    loss: str = "non_saturating"  # generator loss: "minimax" (log(1 - D(G(z)))) | "non_saturating" (-log D(G(z)))
    d_steps: int = 1  # k (n_critic): discriminator updates per generator update
    instance_noise: float = 0.0  # initial std of the noise added to D's real and fake inputs ([-1, 1] scale); 0 = off
    instance_noise_anneal_steps: int = 10_000  # steps over which instance noise decays linearly to 0
    r1_gamma: float = 0.0  # weight gamma of the R1 penalty gamma/2 ||grad_x D(x)||^2 on real data; 0 = off
    spectral_norm: bool = False  # spectrally normalise every discriminator weight

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "latent_dim", "hidden_dim", "instance_noise_anneal_steps")
        check_choice(self, "loss", self.losses)
        if not (isinstance(self.d_steps, int) and self.d_steps >= 1):
            raise ValueError(f"{type(self).__name__}.d_steps={self.d_steps!r} (k, n_critic: discriminator updates "
                             "per generator update) must be an integer >= 1")
        check_positive(self, "instance_noise", "r1_gamma", allow_zero=True)
        if not isinstance(self.spectral_norm, bool):
            raise ValueError(f"{type(self).__name__}.spectral_norm={self.spectral_norm!r} must be true or false")


@dataclass
class MLPGANConfig(GANConfig):
    num_hidden_layers: int = 2  # per MLP generator/discriminator
    # On by default for the MLP players: without it the non-saturating MLP GAN collapses on digits
    # (FD 766 after 100 epochs, the collapse warning at step 250); with it both losses reach FD ~104.
    r1_gamma: float = 1.0  # weight gamma of the R1 penalty gamma/2 ||grad_x D(x)||^2 on real data; 0 = off

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "num_hidden_layers")




class GAN(GenerativeModel):
    name = "gan"
    description = ("GAN (Goodfellow et al. 2014): MLP players, minimax or non-saturating loss, k D steps; "
                   "optional instance noise, R1, spectral norm")
    Config = MLPGANConfig
    capabilities = frozenset({"decode"})  # decode(z): codes of the prior to images
    # Radford et al. 2016 (DCGAN), section 4: Adam with lr 2e-4 and beta1 0.5; minibatches of 64
    # here (the paper's 128 halves the number of updates per epoch on a CPU).
    training_defaults: ClassVar[dict] = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 64}

    def __init__(self, config: GANConfig, info: DataInfo):
        super().__init__(config, info)
        self.latent_dim = config.latent_dim
        self.generator, self.discriminator = self.networks(config, info)
        if config.spectral_norm:
            spectral_normalize(self.discriminator)

    def networks(self, config: MLPGANConfig, info: DataInfo) -> tuple[nn.Module, nn.Module]:
        """(generator z -> images in [-1, 1] or real vectors, discriminator -> logits (B,))."""
        return (MLPGenerator(config.latent_dim, info.shape, config.hidden_dim, config.num_hidden_layers,
                             tanh=info.kind == "image"),
                MLPDiscriminator(info.shape, config.hidden_dim, config.num_hidden_layers))

    @property
    def input_kind(self) -> str:
        return "continuous" if self.info.value_type == "continuous" else "discrete"

    def to_players(self, x: Tensor) -> Tensor:
        """Data -> the players' range: images [0, 1] -> [-1, 1] (the tanh's), vectors unchanged."""
        return scale_to_symmetric(x) if self.info.kind == "image" else x

    def from_players(self, x: Tensor) -> Tensor:
        """The players' range -> data: the inverse of ``to_players``."""
        return scale_from_symmetric(x) if self.info.kind == "image" else x

    # --- the players ---------------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I): (n, latent_dim); the global RNG unless a generator is given."""
        return draw(torch.randn, (n, self.latent_dim), generator, self.device, self.dtype)

    def g(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """G(z [, y]): (n, *shape) in the players' range ([-1, 1] for images)."""
        return self.generator(z) if y is None else self.generator(z, y)

    def discriminate(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits of D(x [, y]) for x in the players' range: (B,)."""
        return self.discriminator(x) if y is None else self.discriminator(x, y)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The generator as a map from codes z (n, latent_dim) to data (n, *shape): images in [0, 1]."""
        y = self.check_labels(y, z.shape[0])
        return self.from_players(self.g(z, y))

    def phases(self) -> list[Phase]:
        """Algorithm 1: k (``d_steps``) discriminator updates, then one generator update."""
        return [Phase("discriminator", list(self.discriminator.parameters()), self.config.d_steps),
                Phase("generator", list(self.generator.parameters()))]

    # --- the objective -------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        """The loss of player ``phase`` ("discriminator" or "generator") and its logged terms, each (B,)."""
        self.check_input(x)
        y = self.check_labels(y, x.shape[0])
        std = annealed_std(self.config.instance_noise, step, self.config.instance_noise_anneal_steps)
        if phase == "discriminator":
            return self.discriminator_terms(self.to_players(x.to(self.dtype)), y, std)  # into G's range
        if phase == "generator":
            return self.generator_terms(x.shape[0], y, std)
        raise ValueError(f"{self.name} has two players: pass phase='discriminator' or phase='generator', not {phase!r}")

    def discriminator_terms(self, real: Tensor, y: Tensor | None, std: float) -> dict[str, Tensor]:
        """D's update on real data (B, *shape) in the players' range and as many samples."""
        with torch.no_grad():  # this update does not train G
            fake = self.g(self.noise(real.shape[0]), y)
        # 1. instance noise on both inputs of D (std 0: off, and at evaluation)
        real_in, fake_in = add_instance_noise(real, std), add_instance_noise(fake, std)
        # 2. the game's objective (D's real and fake batches go through D separately, so that
        #    batch norm never mixes them)
        terms = self.critic_objective(at_least_fp32(self.discriminate(real_in, y)), at_least_fp32(self.discriminate(fake_in, y)),
                                      real_in, fake_in, y)
        # 3. R1 on the (noisy) real inputs D sees
        if self.config.r1_gamma:
            r1 = r1_penalty(lambda v: self.discriminate(v, y), real_in)
            terms["loss"] = terms["loss"] + self.config.r1_gamma / 2 * r1
            terms["r1"] = r1
        terms["fake_diversity"] = sample_diversity(fake, real).expand(real.shape[0])
        return terms

    def critic_objective(self, real_logits: Tensor, fake_logits: Tensor, real_in: Tensor, fake_in: Tensor,
                         y: Tensor | None) -> dict[str, Tensor]:
        """-log D(x) - log(1 - D(G(z))) per example, with D(x) and D(G(z)) as log terms."""
        return {"loss": discriminator_loss(real_logits, fake_logits),
                "d_real": torch.sigmoid(real_logits).detach(), "d_fake": torch.sigmoid(fake_logits).detach()}

    def generator_terms(self, n: int, y: Tensor | None, std: float) -> dict[str, Tensor]:
        """G's update on n samples: through D (with the same instance noise), not into D's weights."""
        fake_in = add_instance_noise(self.g(self.noise(n), y), std)
        fake_logits = frozen_call(self.discriminator, *((fake_in,) if y is None else (fake_in, y)))
        return self.generator_objective(at_least_fp32(fake_logits))

    def generator_objective(self, fake_logits: Tensor) -> dict[str, Tensor]:
        return {"loss": generator_loss(fake_logits, self.config.loss), "d_fake": torch.sigmoid(fake_logits).detach()}

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        self.check_input(x)
        return LogLikelihood(None, "unavailable",
                             f"{self.name} is a GAN: it defines no density, only a sampler; judge it by sample metrics")

    def training_warnings(self, row: dict[str, float]) -> list[str]:
        """A discriminator that wins outright, and collapsed samples."""
        messages = []
        d_real, d_fake = row.get("discriminator/d_real"), row.get("discriminator/d_fake")
        if d_real is not None and d_fake is not None and d_real > D_WINS_REAL and d_fake < D_WINS_FAKE:
            messages.append(f"the discriminator wins outright (D(x) = {d_real:.3f}, D(G(z)) = {d_fake:.3f}): the "
                            "generator gets little signal; try loss=non_saturating, instance_noise, r1_gamma or "
                            "spectral_norm")
        diversity = row.get("discriminator/fake_diversity")
        if diversity is not None and diversity < MIN_DIVERSITY:
            messages.append(f"mode collapse: the generated batch varies {diversity:.3f}x as much as the data "
                            "(mean per-pixel std); try r1_gamma, spectral_norm or a lower lr")
        return messages

    # --- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """G(z) for z ~ N(0, I): (n, *shape) (images in [0, 1]), with batch norm in eval mode."""
        labels = self.check_labels(labels, n)
        z = self.noise(n, generator)
        with eval_mode(self.generator):
            return self.decode(z, labels)
