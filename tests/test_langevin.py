"""Langevin sampling, checked against the closed forms of a Gaussian energy E(x) = 1/2 (x - m)^T P (x - m).

- ULA: 20,000 parallel chains reach the target mean and the exact stationary covariance Sigma_h of
  ``langevin_stationary_covariance`` (within a few standard errors), at a small and a large step size; their
  covariance is detectably biased away from P^{-1} at the large one and the bias shrinks with the step;
- Sigma_h solves its defining equation Sigma = (I - h P) Sigma (I - h P)^T + sigma^2 I, scales with the temperature
  sigma^2 / (2 h) and is P^{-1} + h I / 2 to first order;
- the update is equation (1) step by step with the generator's noise, final_noise=False drops the last step's
  noise, noise_std = 0 is gradient descent ((I - h P)^k in closed form), and grad_clip bounds each step's move;
- clamped Langevin keeps the observed entries exactly and samples the conditional Gaussian in the free ones;
  bounds hold; the same seed gives the same chain; an energy network's parameters get no .grad and the sampler
  runs under torch.no_grad();
- annealed Langevin on the Gaussian's noisy energies E(x, sigma) (data N(m, P^{-1}) blurred by N(0, sigma^2 I))
  ends at the last level's exact ULA law, and its denoising step is Tweedie's linear map of it; completion keeps the
  observed entries exactly;
- ancestral sampling through the same levels follows its closed-form variance recursion (7) in every eigendirection,
  short of the data's covariance on coarse levels and reaching it on dense ones; completion keeps the observed
  entries exactly;
- the signal-to-noise corrector settles on an isotropic Gaussian at its closed-form variance (9), and the
  predictor-corrector sampler follows (7) composed with the corrector's step in high dimensions, repairing most of
  the coarse levels' shortfall;
- bad arguments fail with one line each.

Monte Carlo checks compare within 4 standard errors under fixed seeds (so they are deterministic); exact
identities are checked in float64 to ~1e-12.
"""

from __future__ import annotations

import functools
import math
import re
from itertools import pairwise

import pytest
import torch
from torch import Tensor, nn

from genzoo.models.energy.langevin import (
    ancestral_sampling,
    annealed_langevin,
    energy_and_gradient,
    geometric_sigmas,
    langevin,
    langevin_corrector,
    langevin_stationary_covariance,
)

F64 = torch.float64
PRECISION = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=F64)  # P: eigenvalues 2.44 and 0.56, correlated
MEAN = torch.tensor([1.0, -2.0], dtype=F64)  # m
CHAINS = 20_000


def gaussian_energy(x: Tensor) -> Tensor:
    """E(x) = 1/2 (x - m)^T P (x - m): (B,) for x (B, 2)."""
    d = x - MEAN  # (B, 2)
    return 0.5 * ((d @ PRECISION) * d).sum(-1)


def gaussian_gradient(x: Tensor) -> Tensor:
    """dE/dx = P (x - m): (B, 2)."""
    return (x - MEAN) @ PRECISION


def random_precision(d: int, seed: int) -> Tensor:
    """A random symmetric positive definite (d, d) matrix, eigenvalues in [0.5, 3]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q @ torch.diag(0.5 + 2.5 * torch.rand(d, generator=g, dtype=F64)) @ q.T


def covariance_standard_errors(cov: Tensor, n: int) -> Tensor:
    """Standard errors (D, D) of the sample covariance of n Gaussian draws: Var = (S_ii S_jj + S_ij^2) / n."""
    return ((cov.diag()[:, None] * cov.diag()[None, :] + cov**2) / n).sqrt()


def sample_covariance(x: Tensor) -> Tensor:
    d = x - x.mean(0)
    return d.T @ d / (len(x) - 1)


@functools.cache
def ula_chains(step_size: float, steps: int) -> Tensor:
    """CHAINS independent ULA chains on the Gaussian energy from N(0, I): (CHAINS, 2), shared by the tests below."""
    start = torch.randn(CHAINS, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    return langevin(gaussian_energy, start, steps, step_size, generator=torch.Generator().manual_seed(1))


# steps: (1 - h lambda_min)^steps < 1e-6, so the chains have forgotten their start
STEP_SIZES = [(0.05, 500), (0.3, 100)]


# --- ULA and its stationary law --------------------------------------------------------------------------------
@pytest.mark.parametrize("step_size, steps", STEP_SIZES)
def test_ula_chains_reach_the_mean_and_the_closed_form_stationary_covariance(step_size, steps):
    x = ula_chains(step_size, steps)
    sigma_h = langevin_stationary_covariance(PRECISION, step_size)  # (2, 2)
    mean_se = (sigma_h.diag() / CHAINS).sqrt()  # (2,)
    assert ((x.mean(0) - MEAN).abs() < 4 * mean_se).all()  # ULA's mean is exact
    cov = sample_covariance(x)
    assert ((cov - sigma_h).abs() < 4 * covariance_standard_errors(sigma_h, CHAINS)).all()


def test_ula_bias_to_the_true_covariance_shrinks_with_the_step_size():
    true = torch.linalg.inv(PRECISION)
    (small, _), (large, _) = STEP_SIZES
    bias = {h: sample_covariance(ula_chains(h, steps)) - true for h, steps in STEP_SIZES}  # (2, 2) each
    # at the large step the chains' covariance is not P^{-1}: the bias (about h/2 = 0.15 on the diagonal) is seen
    assert (bias[large].abs() / covariance_standard_errors(true, CHAINS)).max() > 10
    # six times smaller a step, a bias several times smaller (h/2 to first order: 0.025 against 0.15)
    assert torch.linalg.norm(bias[small]) < torch.linalg.norm(bias[large]) / 3


def test_stationary_covariance_solves_its_equation_and_is_p_inverse_plus_h_over_2_to_first_order():
    precision = random_precision(3, seed=0)
    identity = torch.eye(3, dtype=F64)
    for step_size, noise_std in [(0.01, None), (0.3, None), (0.3, 0.1), (0.6, 2.0)]:
        sigma = langevin_stationary_covariance(precision, step_size, noise_std)
        variance = 2 * step_size if noise_std is None else noise_std**2
        a = identity - step_size * precision  # x' - m = A (x - m) + noise: the AR(1) map of ULA
        torch.testing.assert_close(sigma, a @ sigma @ a.T + variance * identity, rtol=0, atol=1e-12)
        # another noise is the temperature T = sigma^2 / (2 h): the same covariance times T
        default = langevin_stationary_covariance(precision, step_size)
        torch.testing.assert_close(sigma, variance / (2 * step_size) * default, rtol=1e-12, atol=0)
    # Sigma_h = P^{-1} + h I / 2 + O(h^2): the bias is the same in every direction at small steps
    h = 1e-4
    first_order = (langevin_stationary_covariance(precision, h) - torch.linalg.inv(precision)) / h
    torch.testing.assert_close(first_order, identity / 2, rtol=0, atol=1e-3)


def test_stationary_covariance_refuses_a_diverging_step_and_an_indefinite_precision():
    with pytest.raises(ValueError, match="^langevin_stationary_covariance: step_size must be > 0, got 0.0$"):
        langevin_stationary_covariance(PRECISION, 0.0)
    # lambda_max(P) = 2.443, so h = 0.9 is beyond 2 / lambda_max = 0.819
    with pytest.raises(ValueError, match=re.escape("step_size 0.9 >= 2 / lambda_max(P) = 0.819: the chain diverges")):
        langevin_stationary_covariance(PRECISION, 0.9)
    with pytest.raises(ValueError, match="the precision must be positive definite: its smallest eigenvalue is -1"):
        langevin_stationary_covariance(torch.diag(torch.tensor([1.0, -1.0], dtype=F64)), 0.1)


# --- the update, step by step ----------------------------------------------------------------------------------
def test_langevin_is_the_ula_update_with_the_generators_noise():
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    h = 0.1
    g = torch.Generator().manual_seed(3)
    by_hand = x
    for _ in range(3):  # (1) with sigma = sqrt(2 h), the noise drawn from the generator in order
        by_hand = by_hand - h * gaussian_gradient(by_hand) + math.sqrt(2 * h) * torch.randn(5, 2, generator=g,
                                                                                              dtype=F64)
    out = langevin(gaussian_energy, x, 3, h, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-12)
    # final_noise=False: the first step's noise, then a gradient step without any
    g = torch.Generator().manual_seed(3)
    first = x - h * gaussian_gradient(x) + math.sqrt(2 * h) * torch.randn(5, 2, generator=g, dtype=F64)
    out = langevin(gaussian_energy, x, 2, h, generator=torch.Generator().manual_seed(3), final_noise=False)
    torch.testing.assert_close(out, first - h * gaussian_gradient(first), rtol=0, atol=1e-12)
    # one step without its noise is x - h dE/dx, and draws nothing from the generator
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    out = langevin(gaussian_energy, x, 1, h, generator=g, final_noise=False)
    torch.testing.assert_close(out, x - h * gaussian_gradient(x), rtol=0, atol=1e-12)
    assert torch.equal(g.get_state(), state)


def test_zero_noise_is_gradient_descent_in_closed_form_and_draws_nothing():
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    h, steps = 0.2, 100
    state = torch.get_rng_state()
    out = langevin(gaussian_energy, x, steps, h, noise_std=0.0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not touched
    # x_k - m = (I - h P)^k (x_0 - m), row by row (I - h P is symmetric)
    power = torch.linalg.matrix_power(torch.eye(2, dtype=F64) - h * PRECISION, steps)
    torch.testing.assert_close(out, MEAN + (x - MEAN) @ power, rtol=0, atol=1e-12)
    assert (out - MEAN).abs().max() < 1e-3 < (x - MEAN).abs().max()  # it did descend to the minimum


def test_grad_clip_bounds_each_elements_move():
    def steep(x: Tensor) -> Tensor:  # E = 50 ||x||^2, dE/dx = 100 x
        return 50 * x.pow(2).sum(-1)

    x = torch.tensor([[0.001, -0.005], [0.5, -2.0]], dtype=F64)  # gradients 0.1, -0.5 (inside the clip), 50, -200
    h, clip = 0.01, 1.0
    move = langevin(steep, x, 1, h, noise_std=0.0, grad_clip=clip) - x
    torch.testing.assert_close(move, -h * (100 * x).clamp(-clip, clip), rtol=0, atol=1e-15)
    assert move.abs().max() <= h * clip + 1e-15  # (x - h c) - x is h c up to rounding
    torch.testing.assert_close(move[1], torch.tensor([-h * clip, h * clip], dtype=F64), rtol=0, atol=1e-15)
    unclipped = langevin(steep, x, 1, h, noise_std=0.0) - x
    assert unclipped.abs().max() > 100 * h * clip  # the clip is what held the large gradients back


def test_steps_zero_returns_a_copy():
    x = torch.randn(3, 2, dtype=F64)
    out = langevin(gaussian_energy, x, 0, 0.1)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


# --- clamped Langevin and bounds -------------------------------------------------------------------------------
def test_observed_entries_are_kept_and_the_free_ones_sample_the_conditional():
    h, steps, kept = 0.05, 300, 0.5
    start = torch.randn(CHAINS, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    start[:, 0] = kept
    observed = torch.tensor([True, False])  # (2,), broadcast over the batch: x_1 kept, x_2 sampled
    x = langevin(gaussian_energy, start, steps, h, observed=observed, generator=torch.Generator().manual_seed(6))
    assert torch.equal(x[:, 0], start[:, 0])  # exactly
    assert (x[:, 1] - start[:, 1]).abs().min() > 0  # every free entry moved
    # x_2 | x_1 = a is N(m_2 - P_21 (a - m_1) / P_22, 1 / P_22); ULA on its 1-D energy has variance Sigma_h(P_22)
    conditional_mean = MEAN[1] - PRECISION[1, 0] * (kept - MEAN[0]) / PRECISION[1, 1]
    conditional_var = langevin_stationary_covariance(PRECISION[1:, 1:], h)[0, 0]
    assert abs(x[:, 1].mean() - conditional_mean) < 4 * (conditional_var / CHAINS).sqrt()
    assert abs(x[:, 1].var() - conditional_var) < 4 * conditional_var * math.sqrt(2 / CHAINS)
    # the unconditional marginal of x_2 (variance 1.2 at m_2 = -2) is far from this one: the check can tell
    assert abs(x[:, 1].mean() - MEAN[1]) > 10 * (conditional_var / CHAINS).sqrt()


def test_bounds_hold_and_observed_entries_stay_exact_even_outside_them():
    def far(x: Tensor) -> Tensor:  # E = 1/2 ||x - 3||^2: the mass lies above the bounds
        return 0.5 * (x - 3).pow(2).flatten(1).sum(1)

    g = torch.Generator().manual_seed(7)
    x = torch.rand(50, 1, 2, 2, generator=g, dtype=F64)  # (B, C, H, W) images in [0, 1]
    out = langevin(far, x, 20, 0.1, bounds=(0.0, 1.0), generator=g)
    assert out.min() >= 0 and out.max() == 1  # in the bounds, and the clamp was needed
    assert langevin(far, x, 20, 0.1, generator=torch.Generator().manual_seed(7)).max() > 1
    x[:, :, 0, 0] = -5.0  # observed pixels outside the bounds
    observed = torch.zeros(1, 2, 2, dtype=torch.bool)
    observed[0, 0, 0] = True  # (C, H, W), broadcast over the batch
    out = langevin(far, x, 20, 0.1, bounds=(0.0, 1.0), observed=observed, generator=g)
    assert torch.equal(out[:, :, 0, 0], x[:, :, 0, 0]) and out[:, :, 1:, :].min() >= 0


# --- determinism and side effects ------------------------------------------------------------------------------
def test_same_seed_same_chain_and_the_global_rng_untouched():
    x = torch.randn(10, 2, dtype=F64)
    state = torch.get_rng_state()

    def run(seed: int) -> Tensor:
        return langevin(gaussian_energy, x, 10, 0.1, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    assert torch.equal(torch.get_rng_state(), state)


def test_network_parameters_get_no_grad_and_the_sampler_runs_under_no_grad():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()

    def energy(x: Tensor) -> Tensor:
        return network(x).squeeze(-1)  # (B, 1) -> (B,)

    x = torch.randn(8, 2, dtype=F64, requires_grad=True)
    before = x.detach().clone()
    out = langevin(energy, x, 5, 0.1, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        quiet = langevin(energy, x, 5, 0.1, generator=torch.Generator().manual_seed(8))
        e, grad = energy_and_gradient(energy, x)
    assert torch.equal(out, quiet) and not out.requires_grad
    assert all(p.grad is None for p in network.parameters())
    assert torch.equal(x.detach(), before) and x.grad is None  # the input is neither modified nor differentiated
    # energy_and_gradient against torch.func, example by example
    torch.testing.assert_close(e, energy(before).detach(), rtol=0, atol=1e-12)
    by_func = torch.vmap(torch.func.grad(lambda z: network(z).squeeze()))(before)  # (8, 2)
    torch.testing.assert_close(grad, by_func, rtol=0, atol=1e-12)
    assert not e.requires_grad and not grad.requires_grad


def test_energy_and_gradient_of_the_gaussian():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(9), dtype=F64)
    e, grad = energy_and_gradient(gaussian_energy, x)
    d = x - MEAN
    torch.testing.assert_close(e, 0.5 * torch.einsum("bi,ij,bj->b", d, PRECISION, d), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, d @ PRECISION, rtol=0, atol=1e-12)


# --- arguments --------------------------------------------------------------------------------------------------
def test_an_energy_reduced_over_the_batch_is_refused():
    message = "an energy must map x (4, 2) to per-example energies (4,): got ()"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        langevin(lambda x: gaussian_energy(x).mean(), torch.zeros(4, 2, dtype=F64), 1, 0.1)


@pytest.mark.parametrize("arguments, message", [
    ({"steps": -1, "step_size": 0.1}, "langevin: steps must be >= 0, got -1"),
    ({"steps": 1, "step_size": 0.0}, "langevin: step_size must be > 0, got 0.0"),
    ({"steps": 1, "step_size": 0.1, "noise_std": -0.5}, "langevin: noise_std must be >= 0, got -0.5"),
    ({"steps": 1, "step_size": 0.1, "grad_clip": 0.0}, "langevin: grad_clip must be > 0, got 0.0"),
    ({"steps": 1, "step_size": 0.1, "bounds": (1.0, 0.0)},
     "langevin: bounds must be (lo, hi) with lo < hi, got (1.0, 0.0)"),
])
def test_bad_arguments_fail_with_one_line(arguments, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        langevin(gaussian_energy, torch.zeros(2, 2, dtype=F64), **arguments)


# --- annealed Langevin ------------------------------------------------------------------------------------------
@functools.cache
def noisy_precision(sigma: float) -> Tensor:
    """(C + sigma^2 I)^{-1}, C = P^{-1}: the precision of the data N(m, C) blurred by N(0, sigma^2 I)."""
    return torch.linalg.inv(torch.linalg.inv(PRECISION) + sigma**2 * torch.eye(2, dtype=F64))


def noisy_gaussian_energy(x: Tensor, sigma: Tensor) -> Tensor:
    """E(x, sigma) = 1/2 (x - m)^T (C + sigma^2 I)^{-1} (x - m): (B,) for x (B, 2), sigma (B,) one level."""
    assert (sigma == sigma[0]).all()  # annealed Langevin runs a whole batch at one level
    d = x - MEAN
    return 0.5 * ((d @ noisy_precision(float(sigma[0]))) * d).sum(1)


def test_annealed_langevin_ends_at_the_last_levels_ula_law_and_denoises_by_tweedie():
    sigmas = geometric_sigmas(3.0, 0.3, 6)
    step = 0.1  # alpha at the last level: h = 0.05 there, larger at the noisier levels
    start = 3 * torch.randn(CHAINS, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    seen = []
    raw = annealed_langevin(noisy_gaussian_energy, start, sigmas, 100, step, denoise=False,
                            generator=torch.Generator().manual_seed(1), callback=lambda i, x: seen.append(i))
    assert seen == list(range(6))
    last = noisy_precision(0.3)
    target = langevin_stationary_covariance(last, step / 2)  # ULA at h = alpha / 2, noise sqrt(alpha)
    errors = covariance_standard_errors(target, CHAINS)
    assert ((sample_covariance(raw) - target).abs() < 4 * errors).all()
    assert ((raw.mean(0) - MEAN).abs() < 4 * (target.diagonal() / CHAINS).sqrt()).all()
    # the same chains, then Tweedie's step x - sigma_L^2 P_L (x - m): a linear map A of the raw samples
    denoised = annealed_langevin(noisy_gaussian_energy, start, sigmas, 100, step,
                                 generator=torch.Generator().manual_seed(1))
    a = torch.eye(2, dtype=F64) - 0.3**2 * last
    torch.testing.assert_close(denoised, MEAN + (raw - MEAN) @ a.T, rtol=0, atol=1e-12)


def test_annealed_steps_are_a_constant_share_of_each_levels_noise():
    calls = []

    def recording_energy(x: Tensor, sigma: Tensor) -> Tensor:
        calls.append(float(sigma[0]))
        return 0.0 * x.sum(1)  # flat: each step moves x by its noise alone, sqrt(alpha_i) eps

    sigmas = geometric_sigmas(1.0, 0.01, 3)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 0.1, 0.01], dtype=F64))
    x = torch.zeros(4000, 1, dtype=F64)
    levels = []
    annealed_langevin(recording_energy, x, sigmas, 1, 0.5, denoise=False, generator=torch.Generator().manual_seed(2),
                      callback=lambda i, x: levels.append(x.clone()))
    moves = [levels[0], levels[1] - levels[0], levels[2] - levels[1]]
    for move, sigma in zip(moves, sigmas.tolist()):  # alpha_i = 0.5 sigma_i^2 / sigma_L^2, noise sqrt(alpha_i)
        assert move.std().item() == pytest.approx(math.sqrt(0.5) * sigma / 0.01, rel=0.05)
    assert calls == [1.0, 0.1, 0.01]


def test_annealed_completion_keeps_the_observed_entries_exactly():
    known = torch.tensor([[5.0, 0.0]] * 4000, dtype=F64)
    observed = torch.tensor([True, False])
    start = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    out = annealed_langevin(noisy_gaussian_energy, start, geometric_sigmas(2.0, 0.2, 4), 300, 0.05, known=known,
                            observed=observed, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out[:, 0], known[:, 0])
    # at the last level x2 samples x2 | x1~ under precision Q = P_L, with x1~ = 5 + 0.2 eps (mean 5): mean
    # m2 - (Q12 / Q22) d, d = 5 - m1; the denoising step x2 - 0.2^2 (Q21 d + Q22 (x2 - m2)) is linear, so its mean is
    q, d = noisy_precision(0.2), 5.0 - 1.0
    conditional = -2.0 - q[0, 1] / q[1, 1] * d
    expected = conditional - 0.2**2 * (q[1, 0] * d + q[1, 1] * (conditional + 2.0))
    assert out[:, 1].mean().item() == pytest.approx(expected.item(), abs=4 * (1 / q[1, 1] / 4000).sqrt().item())
    assert abs(expected.item() + 5.2) < 0.3  # near the clean data's E[x2 | x1 = 5] = -2 - 0.8 * 4


@pytest.mark.parametrize("arguments, message", [
    ({"steps_per_level": 0}, "annealed_langevin: steps_per_level must be >= 1, got 0"),
    ({"known": torch.zeros(2, 2)}, "annealed_langevin: completion needs both known and observed"),
])
def test_annealed_langevin_refuses_bad_arguments_in_one_line(arguments, message):
    options = {"steps_per_level": 3, **arguments}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        annealed_langevin(noisy_gaussian_energy, torch.zeros(2, 2, dtype=F64), geometric_sigmas(1, 0.1, 2),
                          options.pop("steps_per_level"), 0.1, **options)
    with pytest.raises(ValueError, match="^geometric_sigmas: needs 0 < sigma_min <= sigma_max"):
        geometric_sigmas(0.1, 1.0, 3)


# --- ancestral sampling -----------------------------------------------------------------------------------------
def ancestral_covariance(sigmas: Tensor) -> Tensor:
    """The covariance (2, 2) of ancestral sampling's output on the noisy Gaussian energies from N(m, C + sigma_1^2 I):
    recursion (7) in each eigendirection of C = P^{-1} (variance c^2), where every level's energy is diagonal too."""
    c2, vectors = torch.linalg.eigh(torch.linalg.inv(PRECISION))  # (2,), (2, 2)
    levels = [*sigmas.tolist(), 0.0]
    v = c2 + levels[0] ** 2
    for sigma, following in pairwise(levels):
        v = v * (c2 + following**2) ** 2 / (c2 + sigma**2) ** 2 + following**2 * (sigma**2 - following**2) / sigma**2
    return vectors @ torch.diag(v) @ vectors.T


@pytest.mark.parametrize("levels", [4, 400])
def test_ancestral_sampling_follows_its_variance_recursion_and_reaches_the_data_on_dense_levels(levels):
    sigmas = geometric_sigmas(3.0, 0.05, levels)
    target = torch.linalg.inv(PRECISION)  # the data's covariance C
    start = MEAN + torch.randn(CHAINS, 2, generator=torch.Generator().manual_seed(5), dtype=F64) @ torch.linalg.cholesky(
        target + 9.0 * torch.eye(2, dtype=F64)).T  # N(m, C + sigma_1^2 I), the first level's law
    seen = []
    out = ancestral_sampling(noisy_gaussian_energy, start, sigmas, generator=torch.Generator().manual_seed(6),
                             callback=lambda i, x: seen.append(i))
    assert seen == list(range(levels))
    expected = ancestral_covariance(sigmas)
    errors = covariance_standard_errors(expected, CHAINS)
    assert ((sample_covariance(out) - expected).abs() < 4 * errors).all()
    assert ((out.mean(0) - MEAN).abs() < 4 * (expected.diagonal() / CHAINS).sqrt()).all()
    if levels == 4:  # coarse: the bias of (7) is many standard errors of the sample covariance
        assert ((expected - target).abs() > 10 * errors).any()
    else:  # dense: the output's covariance cannot be told from the data's
        assert ((sample_covariance(out) - target).abs() < 4 * errors).all()
    biases = [(ancestral_covariance(geometric_sigmas(3.0, 0.05, n)) - target).abs().max() for n in (4, 20, 100, 2000)]
    assert all(later < 0.5 * earlier for earlier, later in pairwise(biases))


def test_ancestral_completion_keeps_the_observed_entries_exactly_and_refuses_half_a_completion():
    known = torch.tensor([[5.0, 0.0]] * 100, dtype=F64)
    observed = torch.tensor([True, False])
    start = torch.randn(100, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    out = ancestral_sampling(noisy_gaussian_energy, start, geometric_sigmas(2.0, 0.2, 5), known=known,
                             observed=observed, generator=torch.Generator().manual_seed(8))
    assert torch.equal(out[:, 0], known[:, 0]) and out[:, 1].std() > 0.1
    with pytest.raises(ValueError, match="^ancestral_sampling: completion needs both known and observed$"):
        ancestral_sampling(noisy_gaussian_energy, start, geometric_sigmas(2.0, 0.2, 5), known=known)


# --- the predictor-corrector sampler ------------------------------------------------------------------------------
def isotropic_energy(variance: float):
    """E(x) = ||x||^2 / (2 variance): (B,) for x (B, D), N(0, variance I)."""
    return lambda x: 0.5 * x.square().sum(1) / variance


@pytest.mark.parametrize("snr", [0.16, 0.5])
def test_the_corrector_settles_at_its_closed_form_variance(snr):
    d, n, v = 400, 500, 2.0
    start = 2 * math.sqrt(v) * torch.randn(n, d, generator=torch.Generator().manual_seed(9), dtype=F64)  # too wide
    out = langevin_corrector(isotropic_energy(v), start, 150, snr, generator=torch.Generator().manual_seed(10))
    expected = v * (1 + snr**2) * (d + 2) / (d - 2)  # (9)
    error = expected * math.sqrt(2 / (n * d))  # the sample variance's standard error over n d entries
    assert abs(out.var().item() - expected) < 4 * error
    assert abs(out.var().item() - v) > 10 * error  # not exact: r^2 above the target


def pc_variance(sigmas: Tensor, c2: float, corrector_steps: int, snr: float) -> float:
    """The variance predictor-corrector sampling leaves on N(0, c2 I) data as D grows: at each level, the corrector's
    steps (1) with h = 2 r^2 v_i^2 / v (v_i = c2 + sigma_i^2: (8) with concentrated norms), then recursion (7)."""
    levels = [*sigmas.tolist(), 0.0]
    v = c2 + levels[0] ** 2
    for sigma, following in pairwise(levels):
        level_variance = c2 + sigma**2
        for _ in range(corrector_steps):
            h = 2 * snr**2 * level_variance**2 / v
            v = (1 - h / level_variance) ** 2 * v + 2 * h
        v = v * (c2 + following**2) ** 2 / level_variance**2 + following**2 * (sigma**2 - following**2) / sigma**2
    return v


def test_predictor_corrector_follows_its_recursion_and_repairs_coarse_levels():
    d, n, c2 = 400, 500, 1.0
    sigmas = geometric_sigmas(3.0, 0.05, 4)

    def noisy_isotropic_energy(x: Tensor, sigma: Tensor) -> Tensor:
        return isotropic_energy(c2 + float(sigma[0]) ** 2)(x)

    start = math.sqrt(c2 + 9.0) * torch.randn(n, d, generator=torch.Generator().manual_seed(11), dtype=F64)
    variances = []
    for steps in (0, 1, 3):
        out = ancestral_sampling(noisy_isotropic_energy, start, sigmas, generator=torch.Generator().manual_seed(12),
                                 corrector_steps=steps, snr=0.16)
        variances.append(out.var().item())
        # within 2%: the corrector's O(1 / D) excess (9) against the limit's recursion, and 5 standard errors
        assert out.var().item() == pytest.approx(pc_variance(sigmas, c2, steps, 0.16), rel=0.02)
    shortfalls = [c2 - v for v in variances]
    assert shortfalls[0] > 0.6 and shortfalls[2] < shortfalls[0] / 3  # ancestral's 4 levels leave 65% short


def test_the_corrector_keeps_held_entries_and_refuses_bad_arguments():
    held = torch.tensor([[5.0, 0.0]] * 10, dtype=F64)
    out = langevin_corrector(gaussian_energy, held, 3, 0.2, observed=torch.tensor([True, False]),
                             generator=torch.Generator().manual_seed(13))
    assert torch.equal(out[:, 0], held[:, 0]) and not torch.equal(out[:, 1], held[:, 1])
    for steps, snr in ((-1, 0.1), (1, 0.0)):
        with pytest.raises(ValueError, match="^langevin_corrector: needs steps >= 0 and snr > 0"):
            langevin_corrector(gaussian_energy, held, steps, snr)
