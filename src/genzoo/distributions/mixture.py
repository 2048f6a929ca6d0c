"""The one Gaussian mixture of genzoo: its density and its sampler.

Every mixture in the package goes through these two functions: the VampPrior (the encoder's
posteriors at K pseudo-inputs, diagonal), the AAE's prior (K isotropic components on a circle)
and the AE's latent mixture (K full-covariance components fitted to the training codes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.distributions.numerics import LOG_2PI, draw

MIXTURE_LOG_WEIGHT_FLOOR = 60.0  # nats below the nearest component, see gaussian_mixture_log_prob


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


def sample_gaussian_mixture(n: int, weights: Tensor, means: Tensor, scales: Tensor,
                            generator: torch.Generator | None = None, components: Tensor | None = None) -> Tensor:
    """n draws (n, d) of sum_k w_k N(means_k, S_k S_k^T).

    ``weights`` (K,) sum to one; ``means`` (K, d); ``scales`` either (K, d), the standard deviations
    of diagonal components, or (K, d, d), lower Cholesky factors S_k of full covariances.
    ``components`` (n,) picks each draw's component (a label of a conditioned prior); otherwise
    it is drawn by the inverse CDF of the weights. Noise from ``generator``: first eps (n, d), then
    the uniform (n,) of the components, so a draw with given components uses the same eps.
    """
    eps = draw(torch.randn, (n, means.shape[-1]), generator, means.device, means.dtype)  # (n, d)
    if components is None:
        u = draw(torch.rand, (n,), generator, means.device, means.dtype)
        components = torch.searchsorted(weights.cumsum(0), u).clamp(max=len(weights) - 1)  # (n,)
    if scales.dim() == 2:  # diagonal
        return means[components] + scales[components] * eps
    return means[components] + (scales[components] @ eps.unsqueeze(-1)).squeeze(-1)
