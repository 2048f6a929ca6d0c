"""Densities used across families: diagonal Gaussians and the per-pixel output likelihoods.

Every log-probability is summed over all non-batch dimensions and returned per example, (B,),
in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
MIXTURE_LOG_WEIGHT_FLOOR = 60.0  # nats below the nearest component, see gaussian_mixture_log_prob


def sum_pixels(x: Tensor) -> Tensor:
    """(..., C, H, W) -> (...)."""
    return x.sum(dim=(-3, -2, -1))


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """Elementwise log Bernoulli(x; sigmoid(logits)) for x in {0, 1}: log sigmoid((2x - 1) logits).

    Equal to -BCE-with-logits on binary x, as one fused op: 1.6x faster forward and backward on
    this CPU, which counts where an IWAE scores k decoder outputs per image. x broadcasts."""
    return F.logsigmoid((2 * x - 1) * logits)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(x))) along ``dim``, stably."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def draw(sampler, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
         dtype: torch.dtype = torch.float32) -> Tensor:
    """``torch.randn`` or ``torch.rand`` noise on ``device``, drawn from ``generator`` if given.

    The generator may live on another device than the result (a CPU generator seeds GPU sampling).
    """
    if generator is None:
        return sampler(shape, device=device, dtype=dtype)
    return sampler(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


# --- diagonal Gaussians ------------------------------------------------------------------------
def gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))), summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar)).sum(-1)


def gaussian_mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log (1/K) sum_k N(z; means_k, diag(exp(logvars_k))): z (..., d), means and logvars (K, d) -> (...).

    The squared Mahalanobis distances come from the expansion
    sum_d (z_d^2 - 2 z_d m_kd + m_kd^2) / v_kd, two matmuls, so memory is (..., K) rather than
    (..., K, d): 5,000 importance samples against 500 components stay small. The expansion
    cancels large terms, so it runs in float32 (float64 if given) even under bf16 autocast.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        z, means, logvars = z.to(dtype), means.to(dtype), logvars.to(dtype)
        precisions = torch.exp(-logvars)  # (K, d)
        squared = (z**2) @ precisions.T - 2 * z @ (means * precisions).T + (means**2 * precisions).sum(-1)  # (..., K)
        log_components = -0.5 * (squared.clamp_min(0) + logvars.sum(-1) + z.shape[-1] * LOG_2PI)  # (..., K)
        # log-mean-exp, with each component's weight floored at e^-60 of the largest: a trained prior
        # has many components hundreds of nats away, whose weights (and gradients) would be
        # subnormal floats, slow to compute with on CPUs (they made a trained VampPrior IWAE's
        # k=50 training step 1.4x slower here). The floor changes the value
        # by at most a factor 1 + K e^-60 and zeroes those components' gradients (< e^-60 anyway).
        peak = log_components.detach().amax(-1, keepdim=True)  # (..., 1)
        weights = torch.exp((log_components - peak).clamp_min(-MIXTURE_LOG_WEIGHT_FLOOR))  # (..., K) in [e^-60, 1]
        return peak.squeeze(-1) + torch.log(weights.mean(-1))


def gaussian_kl(mean_q: Tensor, logvar_q: Tensor, mean_p: Tensor | None = None, logvar_p: Tensor | None = None) -> Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) in closed form, summed over the last dimension.

    With p = N(0, I) this is the course notes' 1/2 * sum(mu^2 + sigma^2 - log sigma^2 - 1).
    """
    if mean_p is None:
        return 0.5 * (mean_q**2 + torch.exp(logvar_q) - logvar_q - 1).sum(-1)
    return 0.5 * (
        logvar_p - logvar_q + (torch.exp(logvar_q) + (mean_q - mean_p) ** 2) * torch.exp(-logvar_p) - 1
    ).sum(-1)


def reparameterize(mean: Tensor, logvar: Tensor, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """z = mean + sigma * eps, eps ~ N(0, I): a sample whose gradient flows into mean and logvar.

    Returns (B, d), or (num_samples, B, d) when ``num_samples`` is given.
    """
    shape = mean.shape if num_samples is None else (num_samples, *mean.shape)
    eps = draw(torch.randn, shape, generator, mean.device, mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


# --- per-pixel output likelihoods p(x | params) -------------------------------------------------
class PixelLikelihood:
    """A factorised likelihood over pixels. ``params`` is (..., P*C, H, W) for P parameters per pixel;
    ``x`` (..., C, H, W) broadcasts against it, so k samples of z per image need no copies of x.

    ``input_kind`` names the data representation it is a likelihood of (see ``genzoo.data``).
    """

    name: str
    input_kind: str
    params_per_dim: int

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:  # x (..., C, H, W) -> (...)
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:  # (..., C, H, W) in [0, 1]
        raise NotImplementedError

    def split(self, params: Tensor) -> tuple[Tensor, ...]:
        return params.chunk(self.params_per_dim, dim=-3)


class Bernoulli(PixelLikelihood):
    """Bernoulli pixels from logits: log p = x log sigmoid(l) + (1-x) log sigmoid(-l) (= -BCE)."""

    name, input_kind, params_per_dim = "bernoulli", "binary", 1

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return sum_pixels(bernoulli_log_prob(x, params))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


class Gaussian(PixelLikelihood):
    """Gaussian pixels with a per-pixel mean and log-scale, on uniformly dequantised data.

    The log-scale is bounded below so that the density cannot collapse onto a single
    dequantised value (a half-bin standard deviation for 8-bit data is ~ exp(-6.2)).
    """

    name, input_kind, params_per_dim = "gaussian", "continuous", 2
    min_log_scale = -6.0

    def _mean_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = self.split(params)
        return torch.sigmoid(mean), log_scale.clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mean, log_scale = self._mean_log_scale(params)
        return sum_pixels(-0.5 * LOG_2PI - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2)

    def mean(self, params: Tensor) -> Tensor:
        return self._mean_log_scale(params)[0]


class DiscretizedLogistic(PixelLikelihood):
    """Discretised logistic pixels over K levels (Salimans et al. 2017, PixelCNN++, one component).

    Level k sits at k / (K - 1) in [0, 1]; its probability is the logistic mass of the bin
    [k - 1/2, k + 1/2] / (K - 1), with the first and last bins extended to -inf and +inf so
    that the K probabilities sum to one.
    """

    name, input_kind, params_per_dim = "discretized_logistic", "discrete", 2
    min_log_scale = -7.0

    def __init__(self, num_levels: int):
        self.num_levels = num_levels
        self.half_bin = 0.5 / (num_levels - 1)

    def _mean_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = self.split(params)
        return torch.sigmoid(mean), log_scale.clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mean, log_scale = self._mean_log_scale(params)
        return sum_pixels(discretized_logistic_log_mass(x, mean, log_scale, self.half_bin))

    def mean(self, params: Tensor) -> Tensor:
        return self._mean_log_scale(params)[0]


def discretized_logistic_log_mass(x: Tensor, mean: Tensor, log_scale: Tensor, half_bin: float) -> Tensor:
    """Elementwise log mass of the level x in [0, 1] under a logistic(mean, exp(log_scale)) binned
    to width 2 * half_bin, the first and last bins extended to -inf and +inf (Salimans et al. 2017)."""
    inv_scale = torch.exp(-log_scale)
    upper = inv_scale * (x - mean + half_bin)
    lower = inv_scale * (x - mean - half_bin)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): mass of the first bin
    log_survival_lower = -F.softplus(lower)  # log (1 - sigmoid(lower)): mass of the last bin
    # Middle bins: log(sigmoid(upper) - sigmoid(lower)). Left of the mean it is computed from
    # the CDFs, right of it from the survival functions, so neither difference underflows:
    # log a - b = log a + log(1 - exp(log b - log a)).
    log_cdf_lower = lower - F.softplus(lower)
    log_survival_upper = -F.softplus(upper)
    log_mass = torch.where(
        upper + lower < 0,
        log_cdf_upper + _log1mexp(log_cdf_lower - log_cdf_upper),
        log_survival_lower + _log1mexp(log_survival_upper - log_survival_lower),
    )
    # When the bin is narrow in units of the scale the difference loses precision in fp32;
    # there the mass is the density at the bin centre times the bin width.
    centre = inv_scale * (x - mean)
    log_density_mass = centre - 2 * F.softplus(centre) - log_scale + math.log(2 * half_bin)
    log_mass = torch.where(upper - lower < 1e-3, log_density_mass, log_mass)
    return torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_survival_lower, log_mass))


def _log1mexp(a: Tensor) -> Tensor:
    """log(1 - exp(a)) for a < 0 (a is clamped just below zero: equal bin edges have zero mass)."""
    return torch.log(-torch.expm1(a.clamp(max=-1e-12)))


PIXEL_LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")


def pixel_likelihood(name: str, num_levels: int | None) -> PixelLikelihood:
    """Build the likelihood called ``name`` for data with ``num_levels`` levels."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian()
    if name == "discretized_logistic":
        if num_levels is None:
            raise ValueError("likelihood 'discretized_logistic' needs discrete data; this data is continuous")
        return DiscretizedLogistic(num_levels)
    raise ValueError(f"unknown likelihood {name!r}; choose one of: {', '.join(PIXEL_LIKELIHOODS)}")


def default_likelihood(value_type: str) -> str:
    """The natural likelihood for a data value type (the ``likelihood='auto'`` choice)."""
    return {"binary": "bernoulli", "discrete": "discretized_logistic", "continuous": "gaussian"}[value_type]
