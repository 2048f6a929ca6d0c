"""Variational autoencoder.

Kingma & Welling, "Auto-Encoding Variational Bayes", 2014 (arXiv:1312.6114), with the beta
weight of Higgins et al. 2017 ("beta-VAE") and the linear KL warm-up of Bowman et al. 2016 /
Sonderby et al. 2016 as options.

Generative model p(z) p(x|z), p(z) = N(0, I) (or p(z|y) in the conditional subclass); the
encoder q(z|x) = N(mu(x), diag(sigma^2(x))). Training maximises the evidence lower bound

    log p(x) >= ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))

with one reparameterised sample z = mu + sigma * eps (eps ~ N(0, I)) for the first term and the
closed-form Gaussian KL for the second.

``prior="vamp"`` replaces N(0, I) with the VampPrior of Tomczak & Welling, "VAE with a
VampPrior", 2018 (arXiv:1705.07120): the mixture of the encoder's own posteriors at K learned
pseudo-inputs u_k, p(z) = (1/K) sum_k q(z | u_k). The prior is then learned with the model
(the ELBO's optimal prior is the aggregate posterior, which this mixture approximates). Its KL
has no closed form, so the ELBO uses the one-sample estimate log q(z|x) - log p(z) at the same z.

Evaluation reports the ELBO and the importance-weighted bound of Burda et al. 2016 with K
samples, which approaches log p(x) as K grows.

Data: images (MLP or convolutional networks) with a Bernoulli, dequantised-Gaussian or
discretised-logistic p(x | z), or real vectors (MLP networks) with an unbounded Gaussian
p(x | z) = N(mu(z), diag sigma^2(z)), the log-scale floored (``likelihoods.UNBOUNDED_MIN_LOG_SCALE``).

This class holds the machinery shared by the whole family (``cvae``, ``dvae``, ``iwae`` are small
subclasses that change the conditioning, the encoder input, or the objective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.distributions.gaussian import gaussian_kl, gaussian_log_prob, reparameterize
from genzoo.distributions.likelihoods import (
    Gaussian,
    build_likelihood,
    params_to_last,
    sum_data_dims,
)
from genzoo.distributions.mixture import (
    gaussian_mixture_log_prob,
    sample_gaussian_mixture,
)
from genzoo.distributions.numerics import draw, importance_weighted_log_mean
from genzoo.models.base import (
    EvalDefaults,
    GenerativeModel,
    LogLikelihood,
    check_choice,
    check_positive,
)
from genzoo.models.latent.ae import AutoencoderConfig

EVAL_SAMPLES_PER_CHUNK = 100  # importance samples decoded at once when estimating log p(x)

# The likelihoods p(x | z) a decoder gives (``genzoo.distributions.likelihoods``), and the one
# likelihood="auto" picks for each value type. Real-valued data (the 2-D arena's vectors) get the
# unbounded Gaussian, whose mean is the decoder's output itself: "gaussian"'s sigmoid mean is for
# pixels dequantised into [0, 1], and would put the arena's points (|x| up to ~4) out of reach.
DECODER_LIKELIHOODS = ("bernoulli", "gaussian", "unbounded_gaussian", "discretized_logistic")
AUTO_LIKELIHOOD = {"binary": "bernoulli", "discrete": "discretized_logistic", "continuous": "unbounded_gaussian"}


@dataclass
class DecoderLikelihoodConfig(AutoencoderConfig):
    """The autoencoder networks plus the likelihood p(x | z) of the decoder (VAE, AAE, AVB)."""

    likelihood: str = "auto"  # "auto" (bernoulli for binary data, discretized_logistic for levels, unbounded_gaussian for real values) | "bernoulli" | "gaussian" (dequantised pixels) | "unbounded_gaussian" | "discretized_logistic"

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_choice(self, "likelihood", ("auto", *DECODER_LIKELIHOODS))
        name = type(self).__name__
        if self.likelihood == "discretized_logistic" and info.value_type == "continuous":
            raise ValueError(f"{name}.likelihood='discretized_logistic' needs discrete data; {info.name} is continuous")
        if self.likelihood == "gaussian" and info.value_type == "continuous":
            raise ValueError(f"{name}.likelihood='gaussian' has a sigmoid mean, for pixels dequantised into [0, 1]; "
                             f"{info.name} holds real values: use unbounded_gaussian (or auto)")

    def resolved_likelihood(self, info: DataInfo) -> str:
        return AUTO_LIKELIHOOD[info.value_type] if self.likelihood == "auto" else self.likelihood


@dataclass
class VAEConfig(DecoderLikelihoodConfig):
    beta: float = 1.0  # weight of the KL term in the training loss (1 = the ELBO)
    kl_warmup_steps: int = 0  # linear warm-up of the KL weight from 0 to beta
    prior: str = "standard"  # "standard": N(0, I) | "vamp": mixture of the posteriors of learned pseudo-inputs
    pseudo_inputs: int = 500  # components of the VampPrior (prior="vamp")

    PRIORS = ("standard", "vamp")  # the choices of ``prior`` (the conditional VAE has its own)

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "beta")
        check_positive(self, "kl_warmup_steps", allow_zero=True)
        check_choice(self, "prior", self.PRIORS)
        check_positive(self, "pseudo_inputs")


class DecoderLikelihoodModel(GenerativeModel):
    """A model whose decoder gives the parameters of a factorised likelihood p(x | z) (VAE, AAE, AVB).

    Subclasses build ``self.decoder``: codes (B, d) -> parameters (B, P*C, H, W) for images, (B, P*D)
    for vectors (P blocks of the data's channels: the layout ``params_to_last`` reads).
    """

    def __init__(self, config: DecoderLikelihoodConfig, info: DataInfo):
        super().__init__(config, info)
        self.likelihood = build_likelihood(config.resolved_likelihood(info), info.num_levels)

    @property
    def input_kind(self) -> str:
        return self.likelihood.input_kind

    def log_px_given_params(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | params) = sum_i log p(x_i | params_i): x (B, *shape), the decoder's output (..., B, P*C, H, W)
        or (..., B, P*D) -> (..., B); x broadcasts over the leading dimensions."""
        per_dim = self.likelihood.log_prob(x, params_to_last(params, self.info.shape))  # (..., B, *shape)
        return sum_data_dims(per_dim, self.info.shape)

    def mean_given_params(self, params: Tensor) -> Tensor:
        """The mean of p(x | params) (the location for discretized_logistic): (..., B, *shape)."""
        return self.likelihood.mean(params_to_last(params, self.info.shape))

    def decoder_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Parameters of p(x | z): z (B, d) -> (B, P*C, H, W) or (B, P*D). The label is unused."""
        return self.decoder(z)

    def log_px_given_z(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x | z [, y]): x (B, *shape), z (B, d) -> (B,); the VAE's ``decoder_params`` also takes
        leading sample dimensions, z (..., B, d) -> (..., B), over which x broadcasts."""
        return self.log_px_given_params(x, self.decoder_params(z, y))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x | z [, y]): (B, *shape), in [0, 1] for images."""
        return self.mean_given_params(self.decoder_params(z, y))

    def sample_given_z(self, z: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """What ``sample`` returns for codes z (n, d): for images the mean of p(x | z), as VAE samples
        are usually shown (a draw adds independent pixel noise); for vectors a draw x ~ p(x | z)
        (noise from ``generator``), since there the samples stand for the model's density, decoder
        noise included: (n, *shape)."""
        if self.info.kind == "image":
            return self.decode(z, y)
        params = params_to_last(self.decoder_params(z, y), self.info.shape)  # (n, D, P)
        uniform = draw(torch.rand, (*params.shape[:-1], self.likelihood.noise_per_dim), generator, params.device,
                       params.dtype)
        return self.likelihood.sample(params, uniform)

class VAE(DecoderLikelihoodModel):
    name = "vae"
    description = "Variational autoencoder (Kingma & Welling 2014): Gaussian encoder, ELBO, optional beta and KL warm-up"
    Config = VAEConfig
    capabilities = frozenset({"encode", "extra_likelihood_terms"})
    estimators = ("importance",)  # importance sampling from q(z|x): the ELBO at 1 draw, the IWAE bound at K
    eval_defaults = EvalDefaults(draws=1000)

    def __init__(self, config: VAEConfig, info: DataInfo):
        super().__init__(config, info)
        label_dim = info.num_classes if self.conditional else 0
        self.encoder, self.decoder = config.networks(
            info, encoder_out=2 * config.latent_dim, decoder_in=config.latent_dim + label_dim,
            params_per_dim=self.likelihood.params_per_dim, cond_dim=label_dim)
        if config.prior == "vamp":
            # pre-activations of the pseudo-inputs (K, *shape); see pseudo_inputs()
            self.pseudo_input_logits = nn.Parameter(torch.randn(config.pseudo_inputs, *info.shape))

    # --- the parts of the model ---------------------------------------------------------------
    def one_hot(self, y: Tensor | None) -> Tensor | None:
        return None if y is None else F.one_hot(y, self.info.num_classes).to(self.dtype)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z | x [, y]) = N(mean, diag(exp(logvar))): (B, d), (B, d)."""
        mean, logvar = self.encoder(x, self.one_hot(y)).chunk(2, dim=-1)
        return mean, logvar

    def prior(self, batch_size: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """p(z [| y]) as (mean, logvar), each (B, d). Here N(0, I)."""
        zeros = torch.zeros(batch_size, self.config.latent_dim, device=self.device, dtype=self.dtype)
        return zeros, zeros

    def pseudo_inputs(self) -> Tensor:
        """The VampPrior's pseudo-inputs u_k (K, *shape), in the range of the encoder's inputs:
        a sigmoid keeps them in [0, 1] for binary and discrete data; continuous data (real vectors)
        is unbounded, and so are they."""
        if self.info.value_type == "continuous":
            return self.pseudo_input_logits
        return torch.sigmoid(self.pseudo_input_logits)

    def vamp_components(self) -> tuple[Tensor, Tensor]:
        """The VampPrior's components q(z | u_k) as (mean, logvar), each (K, d)."""
        return self.posterior(self.pseudo_inputs())

    def log_prior(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(z [| y]): z (..., B, d) -> (..., B)."""
        if self.config.prior == "vamp":
            return gaussian_mixture_log_prob(z, *self.vamp_components())
        return gaussian_log_prob(z, *self.prior(z.shape[-2], y))

    def sample_prior(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z [| y]): (n, d). The VampPrior draws a pseudo-input uniformly, then z from its posterior."""
        if self.config.prior == "vamp":
            mean, logvar = self.vamp_components()  # (K, d) each
            weights = torch.full((len(mean),), 1 / len(mean), device=mean.device, dtype=mean.dtype)
            return sample_gaussian_mixture(n, weights, mean, torch.exp(0.5 * logvar), generator)
        return reparameterize(*self.prior(n, labels), generator=generator)

    @torch.no_grad()
    def gaussian_components(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor] | None:
        """p(x) = integral p(x | z) p(z) dz, a mixture of infinitely many Gaussians N(mu(z), diag sigma^2(z))
        when the decoder is Gaussian: n of them, z_i ~ p(z), each weighted 1 / n (None otherwise)."""
        if not isinstance(self.likelihood, Gaussian) or self.conditional:
            return None
        params = params_to_last(self.decoder_params(self.sample_prior(n, None, generator)), self.info.shape)
        mean, log_scale = self.likelihood.mean_log_scale(params)  # (n, *shape) each
        variances = torch.exp(2 * log_scale).reshape(n, -1)
        return torch.full((n,), 1 / n, device=mean.device), mean.reshape(n, -1), torch.diag_embed(variances)

    def decoder_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Parameters of p(x | z [, y]): z (..., B, d) -> (..., B, P*C, H, W) or (..., B, P*D)."""
        lead = z.shape[:-1]
        z = z.reshape(-1, z.shape[-1])
        if y is not None:  # broadcast the labels over any leading sample dimension
            z = torch.cat([z, self.one_hot(y).repeat(z.shape[0] // y.shape[0], 1)], dim=1)
        params = self.decoder(z)
        return params.reshape(*lead, *params.shape[1:])

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The posterior mean of z: (B, d)."""
        self.check_input(x)
        return self.posterior(x, self.check_labels(y, x.shape[0]))[0]

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x | z [, y]): (B, *shape), in [0, 1] for images."""
        return self.mean_given_params(self.decoder_params(z, self.check_labels(y, z.shape[0])))

    # --- objective -----------------------------------------------------------------------------
    def elbo_terms(self, x: Tensor, y: Tensor | None = None, encoder_input: Tensor | None = None,
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """-E_q[log p(x|z)] (one sample) and KL(q(z|.) || p(z)) (closed form), each (B,).

        ``encoder_input`` replaces x as the input of q (the denoising VAE encodes a corrupted x).
        """
        mean, logvar = self.posterior(x if encoder_input is None else encoder_input, y)
        z = reparameterize(mean, logvar, generator=generator)  # (B, d), differentiable in mean and logvar
        recon = -self.log_px_given_z(x, z, y)  # 1. reconstruction
        if self.config.prior == "vamp":  # 2. prior matching: no closed form, one-sample estimate at z
            kl = gaussian_log_prob(z, mean, logvar) - self.log_prior(z, y)
        else:
            kl = gaussian_kl(mean, logvar, *self.prior(x.shape[0], y))
        return {"recon": recon, "kl": kl}

    def kl_weight(self, step: int | None) -> float:
        warmup = self.config.kl_warmup_steps
        if step is None or warmup == 0:
            return self.config.beta
        return self.config.beta * min(1.0, step / warmup)

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        y = self.check_labels(y, x.shape[0])
        terms = self.elbo_terms(x, y)
        neg_elbo = terms["recon"] + terms["kl"]
        return {"loss": terms["recon"] + self.kl_weight(step) * terms["kl"], "neg_elbo": neg_elbo, **terms}

    def log_weights(self, x: Tensor, y: Tensor | None, num_samples: int,
                    generator: torch.Generator | None = None) -> Tensor:
        """log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x): (num_samples, B)."""
        mean, logvar = self.posterior(x, y)
        z = reparameterize(mean, logvar, num_samples, generator)  # (S, B, d)
        return self.log_px_given_z(x, z, y) + self.log_prior(z, y) - gaussian_log_prob(z, mean, logvar)

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """A lower bound on log p(x [| y]) per example.

        ``num_samples=1``: the ELBO (one reparameterised sample, closed-form KL).
        ``num_samples=K``: the importance-weighted bound log (1/K) sum_k w_k, computed in chunks
        of importance samples so memory stays bounded for K in the thousands.
        """
        self.check_input(x)
        y = self.check_labels(y, x.shape[0])
        if num_samples == 1:
            terms = self.elbo_terms(x, y, generator=generator)
            elbo = -(terms["recon"] + terms["kl"])
            kl = "KL estimated at that sample" if self.config.prior == "vamp" else "closed-form KL"
            return LogLikelihood(elbo, "lower_bound", f"ELBO: one sample of z, {kl}")
        # log (1/K) sum_k w_k, accumulating sum_k w_k and sum_k w_k^2 over chunks of importance samples
        sums, square_sums = [], []
        for start in range(0, num_samples, EVAL_SAMPLES_PER_CHUNK):
            log_w = self.log_weights(x, y, min(EVAL_SAMPLES_PER_CHUNK, num_samples - start), generator)  # (k, B)
            sums.append(torch.logsumexp(log_w, 0))
            square_sums.append(torch.logsumexp(2 * log_w, 0))
        bound, variance = importance_weighted_log_mean(torch.logsumexp(torch.stack(sums), 0),  # (B,) each
                                                       torch.logsumexp(torch.stack(square_sums), 0), num_samples)
        return LogLikelihood(bound, "lower_bound", f"importance-weighted bound, {num_samples} samples from q(z|x)",
                             variance)

    def likelihood_terms(self, x: Tensor, y: Tensor | None = None,
                         generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """{"elbo": (B,)}: the ELBO with one sample of z, reported beside the importance-weighted bound."""
        return {"elbo": self.log_likelihood(x, y, 1, generator).value}

    # --- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(n, *shape) from z ~ p(z): the mean of p(x | z) for images, a draw x ~ p(x | z) for vectors
        (``sample_given_z``)."""
        labels = self.check_labels(labels, n)
        return self.sample_given_z(self.sample_prior(n, labels, generator), labels, generator)
