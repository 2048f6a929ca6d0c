"""Densities shared by every family: diagonal Gaussians, the one Gaussian mixture, per-dimension likelihoods."""

from genzoo.distributions.gaussian import (
    gaussian_log_prob,
    gaussian_kl,
    reparameterize,
)
from genzoo.distributions.mixture import (
    MIXTURE_LOG_WEIGHT_FLOOR,
    gaussian_mixture_log_prob,
)
from genzoo.distributions.likelihoods import (
    UNBOUNDED_MIN_LOG_SCALE,
    sum_data_dims,
    params_to_last,
    bernoulli_log_prob,
    gumbel,
    standard_normal,
    logistic,
    DimensionLikelihood,
    Bernoulli,
    Gaussian,
    UnboundedGaussian,
    DiscretizedLogistic,
    Categorical,
    LogisticMixture,
    GaussianMixture,
    logistic_level,
    discretized_logistic_log_mass,
    LIKELIHOODS,
    build_likelihood,
)

__all__ = [
    "Bernoulli",
    "Categorical",
    "DimensionLikelihood",
    "DiscretizedLogistic",
    "Gaussian",
    "GaussianMixture",
    "LIKELIHOODS",
    "LogisticMixture",
    "MIXTURE_LOG_WEIGHT_FLOOR",
    "UNBOUNDED_MIN_LOG_SCALE",
    "UnboundedGaussian",
    "bernoulli_log_prob",
    "build_likelihood",
    "discretized_logistic_log_mass",
    "gaussian_kl",
    "gaussian_log_prob",
    "gaussian_mixture_log_prob",
    "gumbel",
    "logistic",
    "logistic_level",
    "params_to_last",
    "reparameterize",
    "standard_normal",
    "sum_data_dims",
]
