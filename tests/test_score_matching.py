"""Score matching losses, checked as the formulas they claim and by the estimates they give on Gaussian data.

- the score is -dE/dx; exact SM is -tr(P) + 1/2 ||P (x - m)||^2 on a quadratic energy (image-shaped inputs too)
  and -tr(Hessian) + 1/2 ||dE/dx||^2 by torch.func on a small network; sliced SM and SSM-VR are their formulas with
  the generator's projections, and DSM is its formula with the generator's noise;
- sliced SM and SSM-VR average to exact SM over many projections (unbiased, within 4 standard errors), SSM-VR with
  the lower variance;
- on 4,000 points from a 2-D Gaussian, the SM objective of a Gaussian model is its closed form, least at the
  maximum-likelihood estimate (sample mean, biased sample covariance) with the value -tr(C_hat^{-1}) / 2; fitting
  by exact SM reaches that estimate to 1e-6, by sliced SM and SSM-VR to their Monte Carlo error, and by DSM with
  sigma = 0.5 the blurred covariance C_hat + sigma^2 I (its known bias);
- noise-conditional DSM with the exact noisy energy of Gaussian data has its closed-form mean at every level, and
  fitting a noise-conditional Gaussian by it recovers C_hat itself: knowing sigma removes one level's bias;
- every loss is per-example, differentiable in the network's parameters, the same under torch.no_grad(), and
  leaves the data alone; bad arguments fail with one line each.

Tolerances of the fits are several times the largest error seen over five data and projection seeds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from genzoo.models.energy.score_matching import (
    denoising_score_matching_loss,
    exact_score_matching_loss,
    noise_conditional_dsm_loss,
    score,
    sliced_score_matching_loss,
)

F64 = torch.float64
DATA_MEAN = torch.tensor([1.0, -2.0], dtype=F64)
DATA_COVARIANCE = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
SIGMA = 0.5  # DSM's noise


def random_precision(d: int, seed: int) -> Tensor:
    """A random symmetric positive definite (d, d) matrix, eigenvalues in [0.5, 3]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q @ torch.diag(0.5 + 2.5 * torch.rand(d, generator=g, dtype=F64)) @ q.T


def quadratic_energy(precision: Tensor, mean: Tensor) -> Callable[[Tensor], Tensor]:
    """E(x) = 1/2 (x - m)^T P (x - m) on x (B, *shape) flattened to (B, D)."""
    def energy(x: Tensor) -> Tensor:
        d = x.flatten(1) - mean  # (B, D)
        return 0.5 * ((d @ precision) * d).sum(1)
    return energy


def small_network(d: int, seed: int) -> nn.Module:
    """A tanh MLP energy R^d -> R (its Hessian is not constant), in float64."""
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0)).double()  # (B,)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(2)  # scores and curvatures of order 1 (the default initialisation gives ~0.1)
    return network


class GaussianEnergy(nn.Module):
    """E(x) = 1/2 (x - mu)^T L L^T (x - mu), L lower triangular with a positive (exp) diagonal: (B,) for (B, 2)."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(2, dtype=F64))
        self.raw = nn.Parameter(torch.zeros(2, 2, dtype=F64))  # below the diagonal: L; on it: log L_ii

    def factor(self) -> Tensor:
        return torch.tril(self.raw, -1) + torch.diag(self.raw.diagonal().exp())  # L (2, 2)

    def precision(self) -> Tensor:
        return self.factor() @ self.factor().T

    def covariance(self) -> Tensor:
        return torch.linalg.inv(self.precision())

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * ((x - self.mu) @ self.factor()).pow(2).sum(-1)  # ||L^T (x - mu)||^2 / 2


def gaussian_data(n: int = 4000, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """n draws (n, 2) from N(DATA_MEAN, DATA_COVARIANCE), their mean and biased covariance: the ML estimate."""
    g = torch.Generator().manual_seed(seed)
    x = DATA_MEAN + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(DATA_COVARIANCE).T
    centred = x - x.mean(0)
    return x, x.mean(0), centred.T @ centred / n


def fit(loss: Callable[[nn.Module, Tensor], Tensor], x: Tensor, model: GaussianEnergy | None = None) -> GaussianEnergy:
    """The Gaussian model (by default a ``GaussianEnergy``) minimising mean loss(model, x), by L-BFGS from mu = 0,
    L = I."""
    model = GaussianEnergy() if model is None else model
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = loss(model, x).mean()
        value.backward()
        return value

    optimizer.step(closure)
    return model


# --- the formulas -------------------------------------------------------------------------------------------------
def test_losses_are_their_formulas_on_a_quadratic_energy_of_image_shaped_inputs():
    precision, mean = random_precision(4, seed=0), torch.randn(4, dtype=F64)
    energy = quadratic_energy(precision, mean)
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=F64)  # (B, C, H, W), D = 4
    s = -((x.flatten(1) - mean) @ precision)  # (B, D): -dE/dx = -P (x - m)
    torch.testing.assert_close(score(energy, x), s.view_as(x), rtol=0, atol=1e-12)
    # (2): ds/dx = -P, so tr(ds/dx) = -tr(P) for every example
    torch.testing.assert_close(exact_score_matching_loss(energy, x), -precision.trace() + 0.5 * s.pow(2).sum(1),
                               rtol=0, atol=1e-12)
    # (3) and (4) with the generator's projections, drawn as (K, B, C, H, W): v^T (ds/dx) v = -v^T P v
    k = 3
    v = torch.randn(k, *x.shape, generator=torch.Generator().manual_seed(2), dtype=F64).flatten(2)  # (K, B, D)
    curvature = -torch.einsum("kbi,ij,kbj->kb", v, precision, v)  # (K, B)
    projected = (v * s).sum(2)  # (K, B) v^T s
    for variance_reduced, second in [(False, projected**2), (True, s.pow(2).sum(1).expand(k, -1))]:
        sliced = sliced_score_matching_loss(energy, x, k, torch.Generator().manual_seed(2), variance_reduced)
        torch.testing.assert_close(sliced, (curvature + 0.5 * second).mean(0), rtol=0, atol=1e-12)
    # (5) with the generator's noise: x~ = x + sigma eps, s(x~) = -P (x~ - m)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64).flatten(1)  # (B, D)
    noisy_score = -((x.flatten(1) + SIGMA * eps - mean) @ precision)
    torch.testing.assert_close(denoising_score_matching_loss(energy, x, SIGMA, torch.Generator().manual_seed(3)),
                               0.5 * (noisy_score + eps / SIGMA).pow(2).sum(1), rtol=0, atol=1e-12)


def test_exact_score_matching_is_the_hessian_trace_and_gradient_by_torch_func():
    network = small_network(3, seed=0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=F64)

    def one(z: Tensor) -> Tensor:  # E of one example (3,) -> ()
        return network(z[None])[0]

    hessians = torch.vmap(torch.func.jacrev(torch.func.grad(one)))(x)  # (B, 3, 3), reverse over reverse
    gradients = torch.vmap(torch.func.grad(one))(x)  # (B, 3)
    brute = -hessians.diagonal(dim1=1, dim2=2).sum(1) + 0.5 * gradients.pow(2).sum(1)  # s = -grad E
    torch.testing.assert_close(exact_score_matching_loss(network, x), brute, rtol=0, atol=1e-12)
    assert hessians.diagonal(dim1=1, dim2=2).sum(1).std() > 1e-3  # the trace varies: not a quadratic in disguise


def test_sliced_score_matching_averages_to_exact_score_matching():
    network = small_network(3, seed=1)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)  # (B, 3)
    exact = exact_score_matching_loss(network, x).detach()  # (B,)
    half_square = 0.5 * score(network, x).detach().pow(2).sum(1)  # (B,) 1/2 ||s||^2, about 0.3 here
    repeats = 20_000  # one projection each on x repeated: 20,000 independent J_v per example
    for variance_reduced in (False, True):
        draws = sliced_score_matching_loss(network, x.repeat(repeats, 1), 1, torch.Generator().manual_seed(6),
                                           variance_reduced).detach().view(repeats, -1)  # (repeats, B), rows r B + b
        mean, se = draws.mean(0), draws.std(0) / math.sqrt(repeats)
        assert ((mean - exact).abs() < 4 * se).all()  # unbiased
        assert (se < half_square / 20).all()  # tight enough that a wrong weight on either term would be seen


# --- Gaussian data: score matching's estimate in closed form and by fitting ----------------------------------
def test_the_sm_objective_of_a_gaussian_model_is_its_closed_form_and_least_at_the_ml_estimate():
    x, mean, covariance = gaussian_data()
    model = GaussianEnergy()
    with torch.no_grad():  # an arbitrary point: mu = (0.3, -1), L = [[1.2, 0], [-0.4, 0.7]]
        model.mu.copy_(torch.tensor([0.3, -1.0]))
        model.raw.copy_(torch.tensor([[math.log(1.2), 0.0], [-0.4, math.log(0.7)]]))
    p, offset = model.precision().detach(), mean - model.mu.detach()
    closed_form = -p.trace() + 0.5 * (p @ p @ covariance).trace() + 0.5 * offset @ p @ p @ offset
    torch.testing.assert_close(exact_score_matching_loss(model, x).mean().detach(), closed_form, rtol=1e-12, atol=0)
    # at mu = x_bar, L L^T = C_hat^{-1} (L its Cholesky factor): the value -tr(C_hat^{-1}) / 2 and a zero gradient
    factor = torch.linalg.cholesky(torch.linalg.inv(covariance))
    with torch.no_grad():
        model.mu.copy_(mean)
        model.raw.copy_(torch.tril(factor, -1) + torch.diag(factor.diagonal().log()))
    at_ml = exact_score_matching_loss(model, x).mean().item()
    assert at_ml == pytest.approx(-0.5 * torch.linalg.inv(covariance).trace().item(), abs=1e-12)

    def objective(theta: Tensor) -> Tensor:  # mean J as a function of (mu, L_11, L_21, L_22) (5,)
        raw = torch.stack([torch.stack([theta[2], torch.zeros_like(theta[2])]), theta[3:]])  # (2, 2)
        return exact_score_matching_loss(lambda z: torch.func.functional_call(model, {"mu": theta[:2], "raw": raw},
                                                                              (z,)), x).mean()

    theta = torch.cat([mean, model.raw.detach()[0, :1], model.raw.detach()[1]])  # (5,) at the ML estimate
    assert objective(theta).item() == pytest.approx(at_ml, abs=1e-12)
    gradient = torch.autograd.functional.jacobian(objective, theta)  # (5,)
    hessian = torch.autograd.functional.hessian(objective, theta)  # (5, 5)
    assert gradient.abs().max() < 1e-10
    assert torch.linalg.eigvalsh(hessian).min() > 0.01  # a strict minimum, not a saddle


def test_fitting_by_exact_and_sliced_score_matching_recovers_the_ml_estimate():
    x, mean, covariance = gaussian_data()
    # exact SM: the estimator is the ML estimate itself, reached to the optimiser's precision
    model = fit(exact_score_matching_loss, x)
    torch.testing.assert_close(model.mu.detach(), mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.covariance().detach(), covariance, rtol=0, atol=1e-6)
    # sliced SM: the same 4 projections per example at every evaluation (a fixed objective for L-BFGS); its
    # minimiser differs from ML by their Monte Carlo error (up to 0.06 on the covariance over five seeds)
    model = fit(lambda e, x: sliced_score_matching_loss(e, x, 4, torch.Generator().manual_seed(7)), x)
    torch.testing.assert_close(model.mu.detach(), mean, rtol=0, atol=0.08)
    torch.testing.assert_close(model.covariance().detach(), covariance, rtol=0, atol=0.15)
    # SSM-VR: its mean term is exactly 1/2 ||P (x - mu)||^2, least at x_bar; the covariance error up to 0.013
    model = fit(lambda e, x: sliced_score_matching_loss(e, x, 4, torch.Generator().manual_seed(7), True), x)
    torch.testing.assert_close(model.mu.detach(), mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.covariance().detach(), covariance, rtol=0, atol=0.04)


def test_denoising_score_matching_learns_the_covariance_blurred_by_its_noise():
    x, mean, covariance = gaussian_data()
    repeated = x.repeat(10, 1)  # ten noise draws per point: (40,000, 2)
    # the same noise at every evaluation (a fixed objective for L-BFGS)
    model = fit(lambda e, x: denoising_score_matching_loss(e, x, SIGMA, torch.Generator().manual_seed(8)), repeated)
    blurred = covariance + SIGMA**2 * torch.eye(2, dtype=F64)  # C_hat + sigma^2 I
    error = (model.covariance().detach() - blurred).abs().max()
    assert error < 0.06  # the noise's Monte Carlo error (up to 0.026 over five seeds)
    assert (model.covariance().detach() - covariance).diagonal().min() > SIGMA**2 / 2  # not C_hat: the bias is seen
    torch.testing.assert_close(model.mu.detach(), mean, rtol=0, atol=0.04)


class NoisyGaussianEnergy(GaussianEnergy):
    """E(x, sigma) = 1/2 (x - mu)^T (S + sigma^2 I)^{-1} (x - mu), S = (L L^T)^{-1}: the model's Gaussian blurred by
    N(0, sigma^2 I), (B,) for x (B, 2) and sigma (B,)."""

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        blurred = self.covariance() + sigma[:, None, None] ** 2 * torch.eye(2, dtype=F64)  # (B, 2, 2)
        d = x - self.mu
        return 0.5 * (d * torch.linalg.solve(blurred, d)).sum(-1)


@pytest.mark.parametrize("sigma_data", [None, 0.9])
@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_noise_conditional_dsm_of_the_exact_noisy_energy_is_its_closed_form(sigma, sigma_data):
    x = gaussian_data(n=100_000, seed=3)[0]
    model = NoisyGaussianEnergy()
    factor = torch.linalg.cholesky(torch.linalg.inv(DATA_COVARIANCE))  # the true model: S = C
    with torch.no_grad():
        model.mu.copy_(DATA_MEAN)
        model.raw.copy_(torch.tril(factor, -1) + torch.diag(factor.diagonal().log()))
    values = noise_conditional_dsm_loss(model, x, sigma, sigma, torch.Generator().manual_seed(4), sigma_data).detach()
    # s = -(C + sigma^2 I)^{-1} (x~ - m), so E 1/2 ||sigma s + eps||^2 = 1/2 tr(C (C + sigma^2 I)^{-1}),
    # times (sigma^2 + s_d^2) / s_d^2 at Karras et al.'s weight
    closed_form = 0.5 * torch.trace(DATA_COVARIANCE @ torch.linalg.inv(DATA_COVARIANCE + sigma**2 * torch.eye(2, dtype=F64)))
    if sigma_data is not None:
        closed_form = closed_form * (1 + sigma**2 / sigma_data**2)
    assert abs(values.mean() - closed_form) < 4 * values.std() / math.sqrt(len(values))


def test_noise_conditional_dsm_recovers_the_data_covariance_without_the_blur():
    x, mean, covariance = gaussian_data()
    repeated = x.repeat(10, 1)  # ten (sigma, noise) draws per point: (40,000, 2)
    model = fit(lambda e, x: noise_conditional_dsm_loss(e, x, 0.05, 1.0, torch.Generator().manual_seed(8)), repeated,
                NoisyGaussianEnergy())
    assert (model.covariance().detach() - covariance).abs().max() < 0.06  # Monte Carlo error, as DSM's test
    torch.testing.assert_close(model.mu.detach(), mean, rtol=0, atol=0.04)


# --- gradients, no_grad, arguments ----------------------------------------------------------------------------
LOSSES = {
    "exact": lambda e, x: exact_score_matching_loss(e, x),
    "sliced": lambda e, x: sliced_score_matching_loss(e, x, 2, torch.Generator().manual_seed(9)),
    "sliced-vr": lambda e, x: sliced_score_matching_loss(e, x, 2, torch.Generator().manual_seed(9), True),
    "denoising": lambda e, x: denoising_score_matching_loss(e, x, SIGMA, torch.Generator().manual_seed(9)),
}


@pytest.mark.parametrize("name", LOSSES)
def test_losses_are_per_example_differentiable_and_the_same_under_no_grad(name):
    network = small_network(3, seed=2)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(10), dtype=F64)
    before = x.clone()
    loss = LOSSES[name](network, x)
    assert loss.shape == (7,)
    loss.mean().backward()
    *weights, constant = network.parameters()  # the last is the output bias: an additive constant of E
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in weights)
    assert constant.grad is None  # E's additive constant: no score, so no score matching loss, depends on it
    with torch.no_grad():  # a validation loss
        torch.testing.assert_close(LOSSES[name](network, x), loss.detach(), rtol=0, atol=0)
    assert torch.equal(x, before) and x.grad is None


def test_bad_arguments_fail_with_one_line():
    energy = quadratic_energy(torch.eye(2, dtype=F64), torch.zeros(2, dtype=F64))
    x = torch.zeros(3, 2, dtype=F64)
    for sigma in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"^denoising_score_matching_loss: sigma must be > 0, got {sigma}$"):
            denoising_score_matching_loss(energy, x, sigma)
    with pytest.raises(ValueError, match="^noise_conditional_dsm_loss: needs 0 < sigma_min <= sigma_max, got 1.0, 0.5$"):
        noise_conditional_dsm_loss(lambda z, s: energy(z), x, 1.0, 0.5)
    with pytest.raises(ValueError, match="^noise_conditional_dsm_loss: sigma_data must be > 0, got 0.0$"):
        noise_conditional_dsm_loss(lambda z, s: energy(z), x, 0.5, 1.0, sigma_data=0.0)
    with pytest.raises(ValueError, match="^sliced_score_matching_loss: projections must be >= 1, got 0$"):
        sliced_score_matching_loss(energy, x, 0)
    message = "an energy must map x (3, 2) to per-example energies (3,): got (3, 1)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        exact_score_matching_loss(lambda z: energy(z)[:, None], x)
