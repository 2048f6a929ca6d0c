"""Score matching: training an energy-based model p(x) = exp(-E(x)) / Z without its partition function.

- A. Hyvarinen, "Estimation of non-normalized statistical models by score matching", JMLR 6, 2005.
- Y. Song, S. Garg, J. Shi and S. Ermon, "Sliced score matching: a scalable approach to density and score
  estimation", UAI 2019, arXiv:1905.07088.
- P. Vincent, "A connection between score matching and denoising autoencoders", Neural Computation 23(7), 2011.

The model's score does not depend on Z:

    s(x) = d log p(x) / dx = -dE/dx.                                                                          (1)

Hyvarinen's objective 1/2 E_data ||s(x) - d log p_data / dx||^2 equals, after integrating by parts (p_data
smooth and vanishing at infinity), E_data J(x) + const with

    J(x) = tr(ds/dx) + 1/2 ||s(x)||^2.                                                                        (2)

The trace costs D backward passes for x of D = prod(shape) dimensions (``exact_score_matching_loss``, small D
only). Sliced score matching replaces it by a random projection, v ~ N(0, I), one backward pass each:

    J_v(x) = v^T (ds/dx) v + 1/2 (v^T s(x))^2,     E_v J_v(x) = J(x)   (E[v v^T] = I),                        (3)
    J_v(x) = v^T (ds/dx) v + 1/2 ||s(x)||^2                             (SSM-VR: the second term exact).      (4)

Denoising score matching (Vincent 2011) needs no second derivative: with x~ = x + sigma eps, eps ~ N(0, I),

    J_sigma(x, eps) = 1/2 ||s(x~) + (x~ - x) / sigma^2||^2 = 1/2 ||s(x~) + eps / sigma||^2,                   (5)

whose expectation is 1/2 E ||s(x~) - d log q_sigma(x~) / dx~||^2 + const, q_sigma = p_data * N(0, sigma^2 I):
DSM fits the score of the data blurred by the noise, not of the data. A Gaussian model fitted by DSM to data
of covariance C learns C + sigma^2 I.

For a Gaussian model E(x) = 1/2 (x - mu)^T P (x - mu), E_data J = -tr(P) + 1/2 tr(P^2 C) + 1/2 (m - mu)^T P^2
(m - mu) for data of mean m and covariance C; it is least at mu = m, P = C^{-1}: score matching gives the
maximum-likelihood estimate (Hyvarinen 2005).

Many noise levels (Song & Ermon, "Generative modeling by estimating gradients of the data distribution",
NeurIPS 2019, arXiv:1907.05600): one noise-conditional energy E(x, sigma) fitted by (5) at every sigma of a range
learns the score of the data blurred at each level, from nearly the data's (small sigma) to nearly a Gaussian's
(large sigma); annealed Langevin dynamics (``langevin.annealed_langevin``) then samples through the levels.

Every loss returns per-example values (B,) whose mean is minimised; each is differentiable with respect to the
energy's parameters (the second derivatives are taken with create_graph=True) and works under the caller's
``torch.no_grad()`` too (validation losses). The energy must treat examples independently (``langevin.Energy``).
Noise comes from the ``generator`` passed in (None: the global RNG).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.distributions.numerics import draw
from genzoo.models.energy.langevin import (
    Energy,
    NoiseConditionalEnergy,
    per_example_energy,
)


def _leaf_and_score(energy: Energy, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """A leaf copy of x (B, *shape) that requires grad, and s at it (1): (B, *shape), a function of that leaf."""
    x_leaf = x.detach().requires_grad_(True)  # the data need not require grad; second derivatives need a leaf
    (grad,) = torch.autograd.grad(per_example_energy(energy, x_leaf).sum(), x_leaf, create_graph=create_graph)
    return x_leaf, -grad


@torch.enable_grad()
def score(energy: Energy, x: Tensor, create_graph: bool = True) -> Tensor:
    """s(x) = -dE/dx (1): (B, *shape) for x (B, *shape). create_graph=False when it will not be differentiated."""
    return _leaf_and_score(energy, x, create_graph)[1]


@torch.enable_grad()
def exact_score_matching_loss(energy: Energy, x: Tensor) -> Tensor:
    """Hyvarinen's J(x) (2): (B,) for x (B, *shape), the trace by D = prod(shape) backward passes (small D only)."""
    x_leaf, s = _leaf_and_score(energy, x, create_graph=True)
    s_flat = s.flatten(1)  # (B, D)
    trace = torch.zeros_like(s_flat[:, 0])  # (B,)
    for i in range(s_flat.shape[1]):
        # d s_i / d x_i of every example at once: example b's s depends on its own x_b only
        (row,) = torch.autograd.grad(s_flat[:, i].sum(), x_leaf, create_graph=True)  # (B, *shape)
        trace = trace + row.flatten(1)[:, i]
    return trace + 0.5 * s_flat.pow(2).sum(1)


@torch.enable_grad()
def sliced_score_matching_loss(energy: Energy, x: Tensor, projections: int = 1,
                               generator: torch.Generator | None = None, variance_reduced: bool = False) -> Tensor:
    """J_v(x) of (3), or of (4) with ``variance_reduced``, averaged over ``projections`` v ~ N(0, I): (B,).

    The projections are drawn from ``generator`` in one call, (projections, B, *shape); one backward pass each.
    SSM-VR's second term has no variance (the total usually, not always, has less: the two terms of (3) can be
    negatively correlated); it uses E[(v^T s)^2] = ||s||^2, true when E[v v^T] = I, as for Gaussian v.
    """
    if projections < 1:
        raise ValueError(f"sliced_score_matching_loss: projections must be >= 1, got {projections}")
    x_leaf, s = _leaf_and_score(energy, x, create_graph=True)  # (B, *shape)
    vs = draw(torch.randn, (projections, *x.shape), generator, x.device, x.dtype)  # (K, B, *shape)
    total = torch.zeros_like(s.flatten(1)[:, 0])  # (B,)
    for v in vs:  # (B, *shape)
        v_s = (v * s).flatten(1).sum(1)  # (B,) v^T s
        (jacobian_v,) = torch.autograd.grad(v_s.sum(), x_leaf, create_graph=True)  # (B, *shape) (ds/dx)^T v
        second = s.flatten(1).pow(2).sum(1) if variance_reduced else v_s**2  # (B,)
        total = total + (jacobian_v * v).flatten(1).sum(1) + 0.5 * second
    return total / projections


@torch.enable_grad()
def denoising_score_matching_loss(energy: Energy, x: Tensor, sigma: float,
                                  generator: torch.Generator | None = None) -> Tensor:
    """J_sigma(x, eps) of (5): (B,) for x (B, *shape), one eps ~ N(0, I) per example.

    Its optimum is the score of the data convolved with N(0, sigma^2 I), not the data's: a biased estimate of the
    data's score, by sigma^2 I in a Gaussian model's covariance.
    """
    if sigma <= 0:
        raise ValueError(f"denoising_score_matching_loss: sigma must be > 0, got {sigma}")
    eps = draw(torch.randn, x.shape, generator, x.device, x.dtype)  # (B, *shape)
    s = score(energy, x.detach() + sigma * eps)  # (B, *shape), create_graph: the loss is differentiated
    return 0.5 * (s + eps / sigma).flatten(1).pow(2).sum(1)


@torch.enable_grad()
def noise_conditional_dsm_loss(energy: NoiseConditionalEnergy, x: Tensor, sigma_min: float, sigma_max: float,
                               generator: torch.Generator | None = None, sigma_data: float | None = None) -> Tensor:
    """Denoising score matching over noise levels (Song & Ermon 2019, eq. 2 with their weight lambda = sigma^2):
    (B,) for x (B, *shape), each example at its own sigma, log-uniform on [sigma_min, sigma_max], and its own eps,

        sigma^2 J_sigma(x, eps) = 1/2 ||sigma s(x~, sigma) + eps||^2,   s(x, sigma) = -dE(x, sigma)/dx.        (6)

    In denoiser terms, s = (D - x~) / sigma^2, this is ||D - x||^2 / (2 sigma^2). A denoiser preconditioned as
    Karras et al. 2022, D = c_skip x~ + c_out F with c_out^2 = sigma^2 s_d^2 / (sigma^2 + s_d^2), then sees its
    network's error F - F* weighted by s_d^2 / (sigma^2 + s_d^2): the large levels, where sampling starts, barely
    train. With ``sigma_data`` = s_d the loss is multiplied by (sigma^2 + s_d^2) / s_d^2, Karras et al.'s
    lambda (eq. 8 with c_out), so that error weighs alike at every level. With the exact score of Gaussian data
    N(m, s_d^2 I) the expectation is D s_d^2 / (2 (sigma^2 + s_d^2)) at sigma's own weight and D / 2 at Karras
    et al.'s.
    """
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"noise_conditional_dsm_loss: needs 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if sigma_data is not None and not sigma_data > 0:
        raise ValueError(f"noise_conditional_dsm_loss: sigma_data must be > 0, got {sigma_data}")
    u = draw(torch.rand, (len(x),), generator, x.device, x.dtype)  # (B,)
    sigma = sigma_min * (sigma_max / sigma_min) ** u  # (B,) log-uniform
    eps = draw(torch.randn, x.shape, generator, x.device, x.dtype)  # (B, *shape)
    scale = sigma.reshape(-1, *[1] * (x.dim() - 1))
    s = score(lambda v: energy(v, sigma), x.detach() + scale * eps)  # (B, *shape)
    loss = 0.5 * (scale * s + eps).flatten(1).pow(2).sum(1)
    return loss if sigma_data is None else loss * (1 + (sigma / sigma_data) ** 2)
