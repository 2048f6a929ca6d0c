"""Deterministic autoencoder.

An encoder maps x to a code z = f(x), a decoder maps it back, and training minimises the
reconstruction error (binary cross-entropy or squared error, summed over the pixels; squared
error for real vectors, whose decoder output is not squashed into [0, 1]). Nothing makes
the codes of the training data fill any particular region, so decoding a random code z ~ N(0, I)
rarely gives a digit: the limitation the course notes use to motivate the VAE. ``latent_sampler``
shows both sides: "prior" samples N(0, I) codes; "gmm" fits a Gaussian mixture to the training
codes after training (a post-hoc density on the latent space, as in Ghosh et al. 2020,
"From Variational to Deterministic Autoencoders") and samples codes from it.

The autoencoder defines no likelihood; ``eval`` says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.likelihoods import sum_data_dims
from genzoo.distributions.mixture import (
    covariance_scales,
    fit_gaussian_mixture,
    sample_gaussian_mixture,
)
from genzoo.distributions.numerics import draw
from genzoo.models.base import (
    GenerativeModel,
    ModelConfig,
    check_choice,
    check_positive,
)
from genzoo.nn.image import ImageDecoder, ImageEncoder, check_architecture


@dataclass
class AutoencoderConfig(ModelConfig):
    """The encoder/decoder networks shared by the autoencoder family."""

    latent_dim: int = 16  # dimensions of z
    hidden_dim: int = 512  # width of the hidden layers
    num_hidden_layers: int = 2  # per MLP encoder/decoder
    activation: str = "relu"  # hidden units of the MLP layers: "relu" | "tanh" | "gated" (gated linear units)
    architecture: str = "mlp"  # "mlp" | "conv"
    channels: int = 32  # first conv layer's channels (architecture="conv")

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "latent_dim", "hidden_dim", "num_hidden_layers", "channels")
        check_architecture(self.architecture, info.shape, self.activation)

    def networks(self, info: DataInfo, encoder_out: int, decoder_in: int, params_per_dim: int,
                 cond_dim: int = 0) -> tuple[ImageEncoder, ImageDecoder]:
        kw = dict(hidden_dim=self.hidden_dim, channels=self.channels, num_hidden_layers=self.num_hidden_layers,
                  activation=self.activation)
        return (ImageEncoder(self.architecture, info.shape, out_dim=encoder_out, cond_dim=cond_dim, **kw),
                ImageDecoder(self.architecture, info.shape, in_dim=decoder_in, params_per_dim=params_per_dim, **kw))


@dataclass
class AEConfig(AutoencoderConfig):
    reconstruction: str = "auto"  # "auto" (bce for pixels, mse for real values) | "bce" (cross-entropy against [0, 1] pixels) | "mse"
    latent_sampler: str = "gmm"  # "prior": z ~ N(0, I) | "gmm": mixture fitted to the training codes
    gmm_components: int = 10  # components of the latent mixture

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_choice(self, "reconstruction", ("auto", "bce", "mse"))
        check_choice(self, "latent_sampler", ("prior", "gmm"))
        check_positive(self, "gmm_components")
        if self.reconstruction == "bce" and info.value_type == "continuous":
            raise ValueError(f"AEConfig.reconstruction='bce' is a cross-entropy against pixels in [0, 1]; "
                             f"{info.name} holds real values: use mse (or auto)")

    def resolved_reconstruction(self, info: DataInfo) -> str:
        if self.reconstruction != "auto":
            return self.reconstruction
        return "mse" if info.value_type == "continuous" else "bce"


class AutoEncoder(GenerativeModel):
    name = "ae"
    description = "Deterministic autoencoder (BCE or MSE); samples from N(0, I) or a mixture fitted to its codes"
    Config = AEConfig
    capabilities = frozenset({"encode", "fit_after_training"})

    def __init__(self, config: AEConfig, info: DataInfo):
        super().__init__(config, info)
        d, g = config.latent_dim, config.gmm_components
        self.encoder, self.decoder = config.networks(info, encoder_out=d, decoder_in=d, params_per_dim=1)
        # The latent mixture (weights, means, Cholesky factors), N(0, I) until fitted.
        self.register_buffer("gmm_weights", torch.full((g,), 1.0 / g))
        self.register_buffer("gmm_means", torch.zeros(g, d))
        self.register_buffer("gmm_scale_tril", torch.eye(d).repeat(g, 1, 1))

    @property
    def input_kind(self) -> str:
        return self.info.value_type  # binary or K-level pixels as they are, real values as they are

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self.check_input(x)
        return self.encoder(x)  # (B, d)

    def output(self, logits: Tensor) -> Tensor:
        """The decoder's output as data: a sigmoid into [0, 1] for pixels, the identity for real values."""
        return logits if self.info.value_type == "continuous" else torch.sigmoid(logits)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.output(self.decoder(z))  # (B, *shape)

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        logits = self.decoder(self.encode(x))  # (B, *shape)
        if self.config.resolved_reconstruction(self.info) == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            recon = (self.output(logits) - x) ** 2
        recon = sum_data_dims(recon, self.info.shape)  # (B,)
        return {"loss": recon, "recon": recon}

    @torch.no_grad()
    def fit_after_training(self, batches: Iterable[tuple[Tensor, Tensor | None]]) -> None:
        """Fit the latent Gaussian mixture to the codes of the training data: EM from k-means++, seed 0."""
        codes = torch.cat([self.encode(x) for x, _ in batches])
        weights, means, precision_cholesky = fit_gaussian_mixture(
            codes, self.config.gmm_components, "full", reg_covar=1e-4, generator=torch.Generator(codes.device).manual_seed(0))
        covariances = covariance_scales(precision_cholesky, "full", len(weights))  # S, S S^T = Sigma
        self.gmm_weights.copy_(weights)
        self.gmm_means.copy_(means)
        self.gmm_scale_tril.copy_(torch.linalg.cholesky(covariances @ covariances.mT))

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Decoded codes (n, *shape), the codes drawn from N(0, I) or from the fitted mixture."""
        if self.config.latent_sampler == "prior":
            return self.decode(draw(torch.randn, (n, self.config.latent_dim), generator, self.device, self.dtype))
        return self.decode(sample_gaussian_mixture(n, self.gmm_weights, self.gmm_means, self.gmm_scale_tril, generator))
