"""Per-dimension likelihoods p(x_i | params_i): the one hierarchy every family uses.

Each class is the distribution of ONE data dimension given its P parameters. ``params`` holds
them on the last axis, (..., P); ``x`` (...) holds one value per dimension and broadcasts
against ``params[..., 0]`` (k samples of z per image need no copies of x). ``log_prob`` is
elementwise, (...) nats, and the caller sums over the data dimensions (``sum_data_dims``).
``sample(params, uniform)`` is a deterministic function of pre-drawn U(0, 1) noise
(..., ``noise_per_dim``), so that an autoregressive sampler can draw all its noise before it
generates; ``mean(params)`` is defined where it is meaningful. ``input_kind`` names the data
representation the likelihood is defined on (see ``genzoo.data.prepare``).

    name                  input kind   P      for
    bernoulli             binary       1      binary pixels (every family)
    gaussian              continuous   2      dequantised pixels in [0, 1]: sigmoid mean (VAE family)
    unbounded_gaussian    continuous   2      real vectors: identity mean (VAE family)
    discretized_logistic  discrete     2      K-level pixels (VAE family)
    categorical           discrete     K      K-level pixels, a softmax (autoregressive)
    logistic_mixture      discrete     3M     K-level pixels, PixelCNN++ (autoregressive)
    gaussian_mixture      continuous   3M     real values, RNADE (autoregressive)

``build_likelihood`` makes one by name. The VAE family's decoders lay their outputs out as
(..., P*C, H, W), P blocks of C channels; ``params_to_last`` reads that layout as (..., C, H, W, P).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.distributions.numerics import LOG_2PI, at_least_fp32

# The log-scale floor of the likelihoods of real-valued, unbounded data (unbounded_gaussian,
# gaussian_mixture): scales >= e^-5 = 0.0067. A Gaussian decoder or mixture component whose scale
# may shrink without limit makes the likelihood unbounded (a component collapsing onto one
# training point; Mattei & Frellsen 2018, "Leveraging the Exact Likelihood of Deep Latent Variable
# Models", arXiv:1802.04826). Data are assumed to be of order-one scale, like the 2-D arena, whose
# finest structure (a noise std of 0.1) is 15x the floor. Dequantised pixels have their own floor.
UNBOUNDED_MIN_LOG_SCALE = -5.0


def sum_data_dims(log_probs: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Per-dimension log-probabilities (..., *shape) -> (...), summed over the data's ``shape``."""
    return log_probs.sum(dim=tuple(range(-len(shape), 0)))


def params_to_last(params: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A decoder's output (..., P*C, H, W) -> (..., C, H, W, P), or (..., P*D) -> (..., D, P).

    Parameter p of channel c is channel p*C + c of the decoder's output, as ``chunk(P, dim=-3)``
    splits it; a view, not a copy, so existing checkpoints score exactly as before.
    """
    axis = params.dim() - len(shape)  # the channel (or vector) axis
    return params.unflatten(axis, (-1, shape[0])).movedim(axis, -1)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """Elementwise log Bernoulli(x; sigmoid(logits)) for x in {0, 1}: log sigmoid((2x - 1) logits).

    Equal to -BCE-with-logits on binary x, as one fused op: 1.6x faster forward and backward on
    this CPU, which counts where an IWAE scores k decoder outputs per image. x broadcasts."""
    return F.logsigmoid((2 * x - 1) * logits)


def gumbel(uniform: Tensor) -> Tensor:
    """Standard Gumbel noise from U(0, 1): argmax(logits + gumbel) ~ Categorical(softmax(logits))."""
    tiny = torch.finfo(uniform.dtype).tiny
    return -torch.log(-torch.log(uniform.clamp(min=tiny)))


def standard_normal(uniform: Tensor) -> Tensor:
    """N(0, 1) noise from U(0, 1) by the inverse normal CDF (u = 0, which torch.rand can draw, is
    moved to the smallest normal float: about -13 standard deviations in fp32 instead of -inf)."""
    return torch.special.ndtri(uniform.clamp(min=torch.finfo(uniform.dtype).tiny))


def logistic(uniform: Tensor) -> Tensor:
    """Standard logistic noise from U(0, 1) by the inverse CDF log u - log(1 - u), u kept off 0 and 1."""
    u = uniform.clamp(1e-5, 1 - 1e-5)
    return torch.log(u) - torch.log1p(-u)


# --- the distribution of one dimension given its parameters ------------------------------------------
class DimensionLikelihood:
    """p(x_i | params_i) for one dimension: params (..., P), values x (...)."""

    name: ClassVar[str]
    input_kind: ClassVar[str]
    params_per_dim: int
    noise_per_dim: int

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:  # (...), (..., P) -> (...) nats
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:  # (..., P) -> (...)
        raise NotImplementedError(f"the {self.name} likelihood defines no mean here")

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:  # (..., P), (..., N) -> (...)
        raise NotImplementedError


class Bernoulli(DimensionLikelihood):
    """Binary x from one logit: log p = log sigmoid((2x - 1) logit) (= -BCE); x = [u < sigmoid(logit)]."""

    name, input_kind, params_per_dim, noise_per_dim = "bernoulli", "binary", 1, 1

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return bernoulli_log_prob(x, params[..., 0])

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[..., 0])

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:
        return (uniform[..., 0] < torch.sigmoid(params[..., 0])).to(params.dtype)


class Gaussian(DimensionLikelihood):
    """Uniformly dequantised pixels in [0, 1]: x ~ N(sigmoid(m), exp(log_scale)^2) from (m, log_scale).

    The log-scale is bounded below so that the density cannot collapse onto a single
    dequantised value (a half-bin standard deviation for 8-bit data is ~ exp(-6.2)).
    """

    name, input_kind, params_per_dim, noise_per_dim = "gaussian", "continuous", 2, 1
    min_log_scale = -6.0

    def location(self, m: Tensor) -> Tensor:
        """The mean from its parameter: a sigmoid keeps it in the pixels' [0, 1]."""
        return torch.sigmoid(m)

    def mean_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.location(params[..., 0]), params[..., 1].clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mean, log_scale = self.mean_log_scale(params)
        return -0.5 * LOG_2PI - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2

    def mean(self, params: Tensor) -> Tensor:
        return self.mean_log_scale(params)[0]

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:
        mean, log_scale = self.mean_log_scale(params)
        return mean + torch.exp(log_scale) * standard_normal(uniform[..., 0])


class UnboundedGaussian(Gaussian):
    """Real, unbounded x ~ N(m, exp(log_scale)^2) from (m, log_scale): the mean is the parameter itself
    (no sigmoid), the log-scale floored at ``UNBOUNDED_MIN_LOG_SCALE`` (see there)."""

    name = "unbounded_gaussian"
    min_log_scale = UNBOUNDED_MIN_LOG_SCALE

    def location(self, m: Tensor) -> Tensor:
        return m


class DiscretizedLogistic(DimensionLikelihood):
    """Discretised logistic pixels over K levels (Salimans et al. 2017, PixelCNN++, one component).

    Level k sits at k / (K - 1) in [0, 1]; its probability is the logistic mass of the bin
    [k - 1/2, k + 1/2] / (K - 1), with the first and last bins extended to -inf and +inf so
    that the K probabilities sum to one. Parameters: the location's logit and the log-scale.
    """

    name, input_kind, params_per_dim, noise_per_dim = "discretized_logistic", "discrete", 2, 1
    min_log_scale = -7.0

    def __init__(self, num_levels: int):
        self.num_levels = num_levels
        self.half_bin = 0.5 / (num_levels - 1)

    def mean_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(params[..., 0]), params[..., 1].clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mean, log_scale = self.mean_log_scale(params)
        return discretized_logistic_log_mass(x, mean, log_scale, self.half_bin)

    def mean(self, params: Tensor) -> Tensor:
        """The logistic's location (the mean before binning), as the VAE family shows its samples."""
        return self.mean_log_scale(params)[0]

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:
        mean, log_scale = self.mean_log_scale(params)
        return logistic_level(mean, log_scale, uniform[..., 0], self.num_levels).to(params.dtype)


class Categorical(DimensionLikelihood):
    """K-level x = k / (K - 1) from K logits (a softmax over the levels; 256 for 8-bit data)."""

    name, input_kind = "categorical", "discrete"

    def __init__(self, num_levels: int):
        self.num_levels = self.params_per_dim = self.noise_per_dim = num_levels

    def index(self, x: Tensor) -> Tensor:
        return (x * (self.num_levels - 1)).round().long()

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return F.log_softmax(at_least_fp32(params), -1).gather(-1, self.index(x).unsqueeze(-1)).squeeze(-1)

    def mean(self, params: Tensor) -> Tensor:
        levels = torch.arange(self.num_levels, device=params.device) / (self.num_levels - 1)  # (K,)
        return (F.softmax(at_least_fp32(params), -1) * levels).sum(-1)

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:
        return (params + gumbel(uniform)).argmax(-1).to(params.dtype) / (self.num_levels - 1)


class LogisticMixture(DimensionLikelihood):
    """K-level x from a mixture of M discretised logistics (Salimans et al. 2017, PixelCNN++).

    Parameters per dimension: M mixture logits, M means (on the [0, 1] pixel scale), M log-scales.
    """

    name, input_kind = "logistic_mixture", "discrete"
    min_log_scale = -7.0

    def __init__(self, num_levels: int, components: int):
        self.num_levels, self.components = num_levels, components
        self.params_per_dim, self.noise_per_dim = 3 * components, components + 1
        self.half_bin = 0.5 / (num_levels - 1)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, means, log_scales = at_least_fp32(params).chunk(3, dim=-1)  # each (..., M)
        return logits, means, log_scales.clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        logits, means, log_scales = self.split(params)
        log_mass = discretized_logistic_log_mass(x.unsqueeze(-1), means, log_scales, self.half_bin)  # (..., M)
        return torch.logsumexp(F.log_softmax(logits, -1) + log_mass, -1)

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:
        logits, means, log_scales = self.split(params)
        component = (logits + gumbel(uniform[..., :-1])).argmax(-1, keepdim=True)  # (..., 1)
        mean, log_scale = means.gather(-1, component)[..., 0], log_scales.gather(-1, component)[..., 0]
        return logistic_level(mean, log_scale, uniform[..., -1], self.num_levels).to(params.dtype)


class GaussianMixture(DimensionLikelihood):
    """Real x from a mixture of M Gaussians: the conditionals of RNADE (Uria, Murray & Larochelle,
    "RNADE: The real-valued neural autoregressive density-estimator", NeurIPS 2013, arXiv:1306.0186).

    Parameters per dimension: M mixture logits, M means, M log-scales (log standard deviations,
    floored at ``UNBOUNDED_MIN_LOG_SCALE``), in fp32 at least:

        p(x) = sum_m softmax(logits)_m N(x; mean_m, exp(log_scale_m)^2)

    Sampling uses M + 1 uniforms: the component by the Gumbel-max trick on the first M, the value
    mean + scale * Phi^-1(u) from the last (the inverse normal CDF).
    """

    name, input_kind = "gaussian_mixture", "continuous"
    min_log_scale = UNBOUNDED_MIN_LOG_SCALE

    def __init__(self, components: int):
        self.components = components
        self.params_per_dim, self.noise_per_dim = 3 * components, components + 1

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, means, log_scales = at_least_fp32(params).chunk(3, dim=-1)  # each (..., M)
        return logits, means, log_scales.clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        logits, means, log_scales = self.split(params)
        z = (x.unsqueeze(-1).to(means.dtype) - means) * torch.exp(-log_scales)  # (..., M) standardised
        log_normal = -0.5 * LOG_2PI - log_scales - 0.5 * z**2  # (..., M) log N(x; mean_m, scale_m^2)
        return torch.logsumexp(F.log_softmax(logits, -1) + log_normal, -1)

    def mean(self, params: Tensor) -> Tensor:
        logits, means, _ = self.split(params)
        return (F.softmax(logits, -1) * means).sum(-1)

    def sample(self, params: Tensor, uniform: Tensor) -> Tensor:
        logits, means, log_scales = self.split(params)
        component = (logits + gumbel(uniform[..., :-1])).argmax(-1, keepdim=True)  # (..., 1)
        mean, log_scale = means.gather(-1, component)[..., 0], log_scales.gather(-1, component)[..., 0]
        return mean + torch.exp(log_scale) * standard_normal(uniform[..., -1].to(mean.dtype))


def logistic_level(mean: Tensor, log_scale: Tensor, uniform: Tensor, num_levels: int) -> Tensor:
    """A draw of a logistic(mean, exp(log_scale)) rounded to the nearest of the K levels k / (K - 1)."""
    value = mean + torch.exp(log_scale) * logistic(uniform)
    k = num_levels - 1
    return (value * k).round().clamp(0, k) / k


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


def discretized_gaussian_log_mass(x: Tensor, mean: Tensor, log_scale: Tensor, half_bin: float) -> Tensor:
    """Elementwise log mass of the level x in [0, 1] under N(mean, exp(log_scale)^2) binned to width
    2 * half_bin, the first and last bins extended to -inf and +inf: the decoder of Ho et al. (2020,
    eq. 13). Computed from log-CDFs on the side of the mean where they do not underflow, as above."""
    inv_scale = torch.exp(-log_scale)
    upper = inv_scale * (x - mean + half_bin)
    lower = inv_scale * (x - mean - half_bin)
    log_cdf_upper = torch.special.log_ndtr(upper)  # mass of the first bin
    log_survival_lower = torch.special.log_ndtr(-lower)  # mass of the last bin
    log_mass = torch.where(
        upper + lower < 0,
        log_cdf_upper + _log1mexp(torch.special.log_ndtr(lower) - log_cdf_upper),
        log_survival_lower + _log1mexp(torch.special.log_ndtr(-upper) - log_survival_lower),
    )
    centre = inv_scale * (x - mean)
    log_density_mass = -0.5 * (centre**2 + LOG_2PI) - log_scale + math.log(2 * half_bin)
    log_mass = torch.where(upper - lower < 1e-3, log_density_mass, log_mass)
    return torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_survival_lower, log_mass))


def _log1mexp(a: Tensor) -> Tensor:
    """log(1 - exp(a)) for a < 0 (a is clamped just below zero: equal bin edges have zero mass)."""
    return torch.log(-torch.expm1(a.clamp(max=-1e-12)))


LIKELIHOODS = ("bernoulli", "gaussian", "unbounded_gaussian", "discretized_logistic", "categorical",
               "logistic_mixture", "gaussian_mixture")


def build_likelihood(name: str, num_levels: int | None = None, components: int = 1) -> DimensionLikelihood:
    """The likelihood called ``name``, for data of ``num_levels`` levels (None: continuous data);
    ``components`` M of the mixtures. Which ones a model accepts is the model's own choice."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of: {', '.join(LIKELIHOODS)}")
    if name in ("discretized_logistic", "categorical", "logistic_mixture") and num_levels is None:
        raise ValueError(f"likelihood {name!r} needs discrete data; this data is continuous")
    return {
        "bernoulli": lambda: Bernoulli(),
        "gaussian": lambda: Gaussian(),
        "unbounded_gaussian": lambda: UnboundedGaussian(),
        "discretized_logistic": lambda: DiscretizedLogistic(num_levels),
        "categorical": lambda: Categorical(num_levels),
        "logistic_mixture": lambda: LogisticMixture(num_levels, components),
        "gaussian_mixture": lambda: GaussianMixture(components),
    }[name]()
