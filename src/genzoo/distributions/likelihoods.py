"""Per-dimension likelihoods p(x | params)."""

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
