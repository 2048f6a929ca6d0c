"""Diagonal Gaussians: log-density, closed-form KL, and the reparameterised sample.

Log-densities are summed over the last dimension and returned per example, in nats.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.distributions.numerics import LOG_2PI, draw


# --- diagonal Gaussians ------------------------------------------------------------------------
def gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))), summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar)).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


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


