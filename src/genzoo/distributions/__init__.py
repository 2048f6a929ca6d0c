"""Densities shared by every family: diagonal Gaussians, the one Gaussian mixture, per-dimension likelihoods."""

from genzoo.distributions.gaussian import (
    gaussian_kl,
    gaussian_log_prob,
    reparameterize,
)
from genzoo.distributions.likelihoods import (
    LOG_2PI,
    MIXTURE_LOG_WEIGHT_FLOOR,
    PIXEL_LIKELIHOODS,
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    PixelLikelihood,
    bernoulli_log_prob,
    default_likelihood,
    discretized_logistic_log_mass,
    pixel_likelihood,
    sum_pixels,
)
from genzoo.distributions.mixture import (
    LOG_2PI,
    MIXTURE_LOG_WEIGHT_FLOOR,
    gaussian_mixture_log_prob,
)

__all__ = [
    "Bernoulli",
    "DiscretizedLogistic",
    "Gaussian",
    "LOG_2PI",
    "MIXTURE_LOG_WEIGHT_FLOOR",
    "PIXEL_LIKELIHOODS",
    "PixelLikelihood",
    "bernoulli_log_prob",
    "default_likelihood",
    "discretized_logistic_log_mass",
    "gaussian_kl",
    "gaussian_log_prob",
    "gaussian_mixture_log_prob",
    "pixel_likelihood",
    "reparameterize",
    "sum_pixels",
]
