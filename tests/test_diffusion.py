"""Diffusion: the mathematics of the Gaussian process, its bound, its samplers and the DDPM model around them.

- the forward process: q(x_t | x_0)'s moments by Monte Carlo, the posterior q(x_{t-1} | x_t, x_0) against Bayes'
  rule on the two Gaussians, the exact conversions between eps, x0 and v predictions;
- the schedules against their papers (Ho et al.'s linear 1e-4..0.02, Nichol & Dhariwal's eq. 17), the timestep
  spacings, and diffusers' DDIMScheduler as an oracle for the DDIM step and its timesteps;
- DDIM: eta = 0 is deterministic, eta = 1 is DDPM's ancestral sampler with beta-tilde; on Gaussian data the
  deterministic samplers solve the probability-flow ODE, whose exact solution is affine;
- the bound: the Monte Carlo estimate (one t per draw) is unbiased for the full T-term sum; on 1-D Gaussian data,
  with the Bayes-optimal denoiser, bound - H equals KL(q(x_{0:T}) || p(x_{0:T})) computed from the reverse-time
  factorisation (with beta-tilde it tends to ~0.44 nats, not 0, as T grows), and is ~0 when the reverse model is the
  true reverse process (learned variance); the decoder term is Ho et al.'s eq. 13, the prior term its closed form;
- the discretised Gaussian decoder: its masses sum to 1 and equal scipy's Phi differences;
- bf16 autocast, the learned variance and the hybrid loss's stop-gradient, inpainting, guidance, the EMA with
  warm-up, samples on the data's level grid, and configuration errors that name the field.
The last test shows a bug and fails until it is fixed: the EMA cannot average a module with integer buffers
(BatchNorm's num_batches_tracked).
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from scipy.stats import norm
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.likelihoods import discretized_gaussian_log_mass
from genzoo.models.diffusion.process import MAX_BETA, GaussianDiffusion, betas_for
from genzoo.models.diffusion.samplers import (
    ddim_sample,
    ddim_step,
    ddpm_sample,
    dpm_solver_pp_2m,
    timestep_sequence,
)
from genzoo.models.registry import build_model
from genzoo.nn.denoisers import MLPDenoiser, UNet
from genzoo.train.ema import ema_decay_at, ema_model

F64 = torch.float64
SCHEDULES = ("linear", "cosine")
VECTORS = DataInfo("eight-gaussians", (2,), 0, "continuous", None)
DIGITS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
TINY = {"hidden": 16, "layers": 1, "timesteps": 20, "dropout": 0.0,  # vectors: the MLP denoiser
        "channels": 8, "channel_mult": (1,), "blocks": 1, "heads": 1, "attention_resolutions": (0,)}  # images


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomise(module: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Add N(0, std^2) noise to every parameter: the zero-initialised output layers move, so the network is nonzero."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def ddpm(info: DataInfo, seed: int = 0, **config):
    """A tiny DDPM with random (nonzero) weights, in eval mode."""
    torch.manual_seed(seed)
    model = build_model("ddpm", info, {**TINY, **config})
    return randomise(model, 0.2, seed).eval()


def reference_alpha_bar(schedule: str, timesteps: int) -> np.ndarray:
    """alpha_bar_t (T,) from the papers, in numpy float64: Ho et al.'s linear betas (scaled by 1000 / T) or
    Nichol & Dhariwal eq. 17, beta_t = 1 - f(t + 1) / f(t) clipped at 0.999."""
    if schedule == "linear":  # the end clipped at 0.999 for T < 50
        betas = np.linspace(1e-4 * 1000 / timesteps, min(0.02 * 1000 / timesteps, 0.999), timesteps)
    else:
        s = 0.008
        f = np.cos((np.arange(timesteps + 1) / timesteps + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    return np.cumprod(1 - betas)


def full(n: int, t: int) -> Tensor:
    return torch.full((n,), t, dtype=torch.long)


# --- the forward process ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t", [0, 300, 999])
def test_q_sample_moments(schedule, t):
    """x_t = q_sample(x_0, t, eps) has mean sqrt(alpha_bar_t) x_0 and variance 1 - alpha_bar_t (eq. 4)."""
    process = GaussianDiffusion(schedule, 1000)
    n, x0 = 20_000, torch.tensor([[-1.0, -0.3, 0.4, 1.0]], dtype=F64)
    xt = process.q_sample(x0.expand(n, 4), full(n, t), torch.randn(n, 4, generator=gen(t), dtype=F64))
    alpha_bar = reference_alpha_bar(schedule, 1000)[t]
    variance = 1 - alpha_bar
    # 5 standard errors: the mean's is sqrt(var / n), the sample variance's sqrt(2 / (n - 1)) var
    assert torch.allclose(xt.mean(0), math.sqrt(alpha_bar) * x0[0], rtol=0, atol=5 * math.sqrt(variance / n))
    assert torch.allclose(xt.var(0), torch.full((4,), variance, dtype=F64), rtol=5 * math.sqrt(2 / (n - 1)), atol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_posterior_is_bayes_rule(schedule):
    """q(x_{t-1} | x_t, x_0) is the product of q(x_t | x_{t-1}) and q(x_{t-1} | x_0), renormalised: precisions add,
    the mean is precision-weighted; beta-tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)."""
    T = 50
    process = GaussianDiffusion(schedule, T)
    alpha_bar = torch.from_numpy(reference_alpha_bar(schedule, T))
    prev = torch.cat([torch.ones(1, dtype=F64), alpha_bar[:-1]])
    beta = 1 - alpha_bar / prev
    g = gen(0)
    x0, xt = torch.randn(T, 3, generator=g, dtype=F64), torch.randn(T, 3, generator=g, dtype=F64)
    mean, log_variance = process.q_posterior(x0, xt, torch.arange(T))
    for t in range(1, T):
        # q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t): as a function of x_{t-1}, precision (1 - beta_t) / beta_t
        precision = (1 - beta[t]) / beta[t] + 1 / (1 - prev[t])
        bayes_mean = ((1 - beta[t]).sqrt() * xt[t] / beta[t] + prev[t].sqrt() * x0[t] / (1 - prev[t])) / precision
        assert torch.allclose(mean[t], bayes_mean, rtol=1e-10, atol=1e-12)
        assert math.isclose(log_variance[t].exp().item(), 1 / precision.item(), rel_tol=1e-10)
        assert math.isclose(1 / precision.item(), (beta[t] * (1 - prev[t]) / (1 - alpha_bar[t])).item(), rel_tol=1e-10)
    # t = 0 (the paper's t = 1): x_{-1} = x_0 exactly; the log-variance is clipped to beta-tilde at t = 1
    assert torch.allclose(mean[0], x0[0], rtol=0, atol=1e-12)
    assert math.isclose(log_variance[0].item(), log_variance[1].item(), rel_tol=1e-12)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_predictions_convert_exactly(prediction):
    """The true target of each prediction type maps back to the true (eps, x_0): x_t = a x_0 + s eps, v = a eps - s x_0."""
    process = GaussianDiffusion("cosine", 1000, prediction)
    g = gen(1)
    x0, eps = torch.randn(64, 2, 3, generator=g, dtype=F64), torch.randn(64, 2, 3, generator=g, dtype=F64)
    t = torch.randint(0, 999, (64,), generator=g)  # the last index has alpha_bar ~ 1e-9: x0 from eps is ill-posed
    xt = process.q_sample(x0, t, eps)
    eps_back, x0_back = process.to_eps_x0(process.target(x0, eps, t), xt, t)
    assert eps_back.dtype == F64
    assert torch.allclose(eps_back, eps, rtol=0, atol=1e-10) and torch.allclose(x0_back, x0, rtol=0, atol=1e-10)


# --- schedules and timesteps ------------------------------------------------------------------------------------
def test_cosine_schedule_is_nichol_dhariwal_eq17():
    """Cosine: alpha_bar_t = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) pi / 2), until beta reaches the 0.999 clip."""
    T, s = 1000, 0.008
    process = GaussianDiffusion("cosine", T)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    exact = torch.tensor([f[t + 1] / f[0] for t in range(T)], dtype=F64)
    clipped = process.betas >= MAX_BETA
    assert process.betas.dtype == F64 and clipped.tolist() == [False] * (T - 1) + [True]  # only beta_T: f(T) = 0
    assert torch.allclose(process.alpha_bar[:-1], exact[:-1], rtol=1e-12, atol=0)
    assert process.betas[-1].item() == MAX_BETA
    assert math.isclose(process.alpha_bar[-1].item(), exact[-2].item() * (1 - MAX_BETA), rel_tol=1e-12)


@pytest.mark.parametrize("T", [1000, 500, 10])
def test_linear_schedule_is_ho_et_al(T):
    """Linear: beta from 1e-4 to 0.02 at T = 1000 in equal steps, the ends scaled by 1000 / T otherwise (the last
    clipped at 0.999)."""
    betas = betas_for("linear", T)
    scale = 1000 / T
    assert math.isclose(betas[0].item(), 1e-4 * scale, rel_tol=1e-12)
    assert math.isclose(betas[-1].item(), min(0.02 * scale, MAX_BETA), rel_tol=1e-12)
    steps = betas.diff()
    assert len(betas) == T and torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-9, atol=0)


@pytest.mark.parametrize("offset, sigma_1", [(0.008, 0.0064), (0.001, 0.0027)])
def test_the_cosine_offset_sets_the_first_steps_noise_against_the_8_bit_bin(offset, sigma_1):
    """sigma_1 = sqrt(1 - alpha_bar_1) (N&D eq. 17 at t = 1): N&D's s = 0.008 leaves it above the half bin 1/255 of
    8-bit data on [-1, 1], where even an exact decoder mean puts only Phi(0.0039 / sigma_1) of a level's mass in
    its bin; s = 0.001 puts it inside."""
    process = GaussianDiffusion("cosine", 1000, cosine_offset=offset)
    noise = math.sqrt(1 - process.alpha_bar[0].item())
    assert noise == pytest.approx(sigma_1, abs=5e-5)
    assert math.isclose(noise, math.sqrt(process.betas[0].item()), rel_tol=1e-12)  # alpha_bar_0 = 1
    assert (noise < 1 / 255) == (offset < 0.008)
    torch.testing.assert_close(betas_for("cosine", 1000), GaussianDiffusion("cosine", 1000).betas, rtol=0, atol=0)
    with pytest.raises(ValueError, match="offset s must be >= 0, got -0.1"):
        betas_for("cosine", 10, -0.1)


def test_unknown_schedule_lists_valid_names():
    """An unknown schedule fails with the valid names."""
    with pytest.raises(ValueError, match="linear, cosine"):
        betas_for("quadratic", 10)
    with pytest.raises(ValueError, match="linear, cosine"):
        GaussianDiffusion("quadratic", 10)


@pytest.mark.parametrize("T,S", [(1000, 50), (1000, 30), (1000, 7), (10, 3), (10, 9)])
def test_timestep_sequences(T, S):
    """Trailing starts at T - 1, strictly decreasing, S entries; leading is k floor(T / S), k = S-1..0."""
    trailing = timestep_sequence(T, S, "trailing")
    assert len(trailing) == S and trailing[0] == T - 1 and trailing[-1] >= 0
    assert all(a > b for a, b in pairwise(trailing))
    assert timestep_sequence(T, S, "leading") == [k * (T // S) for k in range(S - 1, -1, -1)]


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_full_sequence_visits_every_index(spacing):
    """S = T visits every training index T-1..0."""
    assert timestep_sequence(20, 20, spacing) == list(range(19, -1, -1))


@pytest.mark.parametrize("steps", [0, -1, 21])
def test_timestep_sequence_refuses_steps_out_of_range(steps):
    """Steps outside 1..T fail with the valid range; an unknown spacing lists the valid ones."""
    with pytest.raises(ValueError, match=r"--steps .* must lie in 1\.\.20"):
        timestep_sequence(20, steps)
    with pytest.raises(ValueError, match="trailing, leading"):
        timestep_sequence(20, 5, "linspace")


# --- samplers -----------------------------------------------------------------------------------------------------
def mlp_predict(process: GaussianDiffusion, seed: int = 0):
    """predict(x_t, t) -> Split from a small random MLP in float64."""
    torch.manual_seed(seed)
    net = randomise(MLPDenoiser(3, process.output_factor, 16, 1), 0.3, seed).double()
    return lambda xt, t: process.split(net(xt, t, None), xt, t, clip=True)  # x0 in [-1, 1]: eps at alpha_bar ~ 1e-9


def test_ddim_eta0_is_deterministic():
    """DDIM with eta = 0 draws no noise: two generators give the same samples from the same x_T."""
    process = GaussianDiffusion("cosine", 50, "v")
    predict, x = mlp_predict(process), torch.randn(8, 3, generator=gen(0), dtype=F64)
    a = ddim_sample(predict, x, process, 10, 0.0, gen(1))
    b = ddim_sample(predict, x, process, 10, 0.0, gen(2))
    c = ddim_sample(predict, x, process, 10, 0.5, gen(1))  # eta > 0 does draw
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)


@pytest.mark.parametrize("steps", [50, 10])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_eta1_is_ddpm_with_beta_tilde(steps, prediction):
    """DDIM with eta = 1 (Song et al. eq. 16) is ancestral sampling with the posterior variance beta-tilde, over the
    full schedule and over a respaced one; both draw their noise in the same order from the generator."""
    process = GaussianDiffusion("cosine", 50, prediction, "small")
    predict, x = mlp_predict(process), torch.randn(8, 3, generator=gen(0), dtype=F64)
    ddim = ddim_sample(predict, x, process, steps, 1.0, gen(3))
    ancestral = ddpm_sample(predict, x, process, steps, gen(3))
    assert torch.allclose(ddim, ancestral, rtol=0, atol=1e-6)
    assert not torch.allclose(ddim, ddim_sample(predict, x, process, steps, 1.0, gen(4)), atol=1e-2)  # noise matters


# Oracle: diffusers' DDIMScheduler. Its "linspace" spacing is broken upstream: its step goes to t - T // S, not to
# the next timestep of the sequence (diffusers #9261, #11347), so only "leading" (any S) and "trailing" with S
# dividing T are comparable. With T / S not an integer its trailing timesteps also differ: np.arange accumulates
# rounding at the exact .5 ties (S = 48: 936 where round(937.5) = 938 - 1 = 937 here) and can give S + 1 of them (S = 61).
DIFFUSERS_CASES = [("leading", 50), ("leading", 30), ("leading", 7), ("trailing", 50), ("trailing", 8),
                   ("trailing", 1000)]


def diffusers_ddim(process: GaussianDiffusion, spacing: str) -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=process.timesteps, trained_betas=process.betas.numpy(),
                         set_alpha_to_one=True, clip_sample=False, prediction_type="epsilon", timestep_spacing=spacing)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("spacing,steps", DIFFUSERS_CASES)
def test_ddim_matches_diffusers(schedule, spacing, steps):
    """diffusers' DDIMScheduler visits the same timesteps and its step (eta = 0) gives the same x_{t-1}."""
    process = GaussianDiffusion(schedule, 1000)
    scheduler = diffusers_ddim(process, spacing)
    scheduler.set_timesteps(steps)
    sequence = timestep_sequence(1000, steps, spacing)
    assert scheduler.timesteps.tolist() == sequence
    g = gen(steps)
    for i, t in enumerate(sequence):
        x, eps = torch.randn(2, 1, 3, 3, generator=g, dtype=F64), torch.randn(2, 1, 3, 3, generator=g, dtype=F64)
        alpha_bar_t = process.alpha_bar[t].item()
        alpha_bar_s = process.alpha_bar[sequence[i + 1]].item() if i + 1 < len(sequence) else 1.0
        x0 = (x - math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)
        ours = ddim_step(x, eps, x0, alpha_bar_t, alpha_bar_s, 0.0, None)
        # diffusers keeps alpha_bar in float32: 1 - alpha_bar near t = 0 loses ~1e-7 / 1e-4 of itself, ~5e-6 here
        torch.testing.assert_close(ours, scheduler.step(eps, t, x, eta=0.0).prev_sample, rtol=1e-5, atol=1e-5)


# --- the probability-flow ODE on Gaussian data ----------------------------------------------------------------------
M, S_DATA = 0.5, 0.7  # the 1-D data distribution N(m, s^2)


def gaussian_posterior(process: GaussianDiffusion, t: Tensor, xt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(a, sigma, E[x_0 | x_t], Var[x_0 | x_t]) at indices t for x_0 ~ N(m, s^2): x_t ~ N(a m, a^2 s^2 + sigma^2)."""
    a = process.alpha_bar.sqrt()[t].reshape(-1, 1)
    sigma = (1 - process.alpha_bar[t]).sqrt().reshape(-1, 1)
    total = a**2 * S_DATA**2 + sigma**2
    return a, sigma, M + a * S_DATA**2 * (xt - a * M) / total, S_DATA**2 * sigma**2 / total


def optimal_eps(process: GaussianDiffusion):
    """The Bayes-optimal eps-denoiser of N(m, s^2) data: eps = (x_t - a E[x_0 | x_t]) / sigma."""
    def denoiser(xt: Tensor, t: Tensor, y) -> Tensor:
        a, sigma, mean, _ = gaussian_posterior(process, t, xt)
        return (xt - a * mean) / sigma
    return denoiser


def ode_errors(run, steps_list) -> list[float]:
    """Max |x_0 - exact| over 256 draws of x_T for ``run`` (cosine schedule, optimal eps) at each number of steps."""
    process = GaussianDiffusion("cosine", 1000, "eps")
    denoiser = optimal_eps(process)
    predict = lambda xt, t: process.split(denoiser(xt, t, None), xt, t)
    x = torch.randn(256, 1, generator=gen(0), dtype=F64)
    a_T, sigma_T = process.alpha_bar[-1].sqrt(), (1 - process.alpha_bar[-1]).sqrt()
    exact = M + S_DATA * (x - a_T * M) / (a_T**2 * S_DATA**2 + sigma_T**2).sqrt()
    return [(run(predict, x, process, steps) - exact).abs().max().item() for steps in steps_list]


def test_deterministic_samplers_solve_the_probability_flow_ode():
    """On N(m, s^2) data the probability-flow ODE keeps z = (x_t - a m) / sqrt(a^2 s^2 + sigma^2), so it maps x_T to
    m + s z: DDIM (eta = 0) converges to it at first order (the error halves when the steps double), and
    DPM-Solver++(2M), second order, is closer in 20 steps than DDIM in 160."""
    e20, e40, e80, e160 = ode_errors(ddim_sample, [20, 40, 80, 160])
    assert 1.7 < e20 / e40 < 2.3 and 1.7 < e40 / e80 < 2.3 and e160 < 0.03
    (solver20,) = ode_errors(dpm_solver_pp_2m, [20])
    assert solver20 < e160 / 5


# --- the bound ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vectors", "images"])
def test_monte_carlo_bound_is_unbiased(kind):
    """E[nll_bound] (one uniform t in 2..T per draw, times T - 1) equals the sum of all T + 1 terms of the bound."""
    torch.manual_seed(0)
    if kind == "vectors":
        process, num_levels, clip = GaussianDiffusion("cosine", 20, "v", "small"), None, False
        net = randomise(MLPDenoiser(2, 1, 16, 1), 0.3).double()
        x0 = torch.randn(4, 2, generator=gen(0), dtype=F64).repeat(1000, 1)
    else:  # learned variance, clipped x0, the decoder discretised to 17 levels
        process, num_levels, clip = GaussianDiffusion("cosine", 20, "v", "learned"), 17, True
        net = randomise(UNet((1, 4, 4), 2, 8, (1,), 1, (0,), 1, 0.0), 0.1)
        x0 = (torch.randint(0, 17, (2, 1, 4, 4), generator=gen(0)) / 8 - 1).repeat(400, 1, 1, 1)
    denoiser = lambda xt, t, y: net(xt, t, y)
    with torch.no_grad():
        mc = torch.cat([process.nll_bound(denoiser, x0, None, 1, num_levels, gen(10 + r), clip)[0] for r in range(2)])
        terms = process.bound_terms(denoiser, x0, None, num_levels, gen(20), clip)  # (B, T + 1)
    full_sum = terms.sum(1)
    se = math.hypot(mc.std() / math.sqrt(len(mc)), full_sum.std() / math.sqrt(len(full_sum)))
    assert abs(mc.mean() - full_sum.mean()) < 4 * se, (mc.mean(), full_sum.mean(), se)
    # power: drawing t from 3..T instead of 2..T would move the mean by (T - 1) (mean KL_{3..T} - mean KL_{2..T})
    kls = terms[:, 1:-1].mean(0)  # KL_2..KL_T
    assert abs((process.timesteps - 1) * (kls[1:].mean() - kls.mean())) > 6 * se


def gaussian_reverse_gap(process: GaussianDiffusion, variances: str) -> float:
    """KL(q(x_{0:T}) || p(x_{0:T})) = KL(q(x_T) || N(0, 1)) + sum_t E KL(q(x_{t-1} | x_t) || p(x_{t-1} | x_t)) for
    N(m, s^2) data and the optimal mean; computed from the reverse-time factorisation, independently of the bound.

    q(x_{t-1} | x_t) = N(mu-tilde(x_t, E[x_0 | x_t]), beta-tilde_t + c_t^2 Var[x_0 | x_t]), c_t the posterior's
    coefficient of x_0; p has the same mean and variance beta-tilde_t ("small"), or the true one ("true").
    """
    alpha_bar = torch.from_numpy(reference_alpha_bar(process.schedule, process.timesteps))
    prev = torch.cat([torch.ones(1, dtype=F64), alpha_bar[:-1]])
    beta = 1 - alpha_bar / prev
    _, _, _, v = gaussian_posterior(process, torch.arange(process.timesteps), torch.zeros(process.timesteps, 1))
    v = v[:, 0]
    a_T2 = alpha_bar[-1]
    marginal = a_T2 * S_DATA**2 + 1 - a_T2  # q(x_T) = N(a_T m, a_T^2 s^2 + sigma_T^2)
    gap = 0.5 * (marginal + a_T2 * M**2 - 1 - math.log(marginal))
    if variances == "true":
        return float(gap)
    tilde = beta * (1 - prev) / (1 - alpha_bar)
    coef = beta * prev.sqrt() / (1 - alpha_bar)
    ratio = torch.cat([v[:1] / tilde[1], (tilde[1:] + coef[1:] ** 2 * v[1:]) / tilde[1:]])  # decoder at t = 0: clipped
    return float(gap + (0.5 * (ratio - 1 - ratio.log())).sum())


def gaussian_bound(process: GaussianDiffusion, denoiser, n: int) -> tuple[float, float]:
    """Mean and standard error over n data points of the full T-term bound."""
    x0 = M + S_DATA * torch.randn(n, 1, generator=gen(7), dtype=F64)
    total = process.bound_terms(denoiser, x0, None, None, gen(8)).sum(1)
    return total.mean().item(), total.std().item() / math.sqrt(n)


ENTROPY = 0.5 * math.log(2 * math.pi * math.e * S_DATA**2)  # -E log N(x; m, s^2), the true NLL


@pytest.mark.parametrize("schedule,T,n", [("linear", 10, 20_000), ("linear", 100, 10_000), ("linear", 1000, 2_000),
                                          ("cosine", 100, 10_000)])
def test_bound_on_gaussian_data_with_optimal_mean(schedule, T, n):
    """With the Bayes-optimal eps and variance beta-tilde, bound - H equals KL(q(x_{0:T}) || p(x_{0:T})): it shrinks
    with T (linear: 4.3, 1.3, 0.57 nats at T = 10, 100, 1000) but not to 0 (0.44 nats at T = 1e5): near t = 0,
    Var[x_0 | x_t] ~ 1 - alpha_bar_t keeps KL(q(x_{t-1} | x_t) || p) of order 1 / t^2 whatever T (~0.3 nats over the
    first steps), and the decoder's clipped variance beta-tilde_2 is about half Var[x_0 | x_1] (~0.15 nats)."""
    process = GaussianDiffusion(schedule, T, "eps", "small")
    bound, se = gaussian_bound(process, optimal_eps(process), n)
    gap = gaussian_reverse_gap(process, "small")
    assert bound - ENTROPY > -4 * se
    assert abs(bound - ENTROPY - gap) < 4 * se, (bound - ENTROPY, gap, se)
    if schedule == "linear":
        assert gap < {10: 4.5, 100: 1.5, 1000: 0.6}[T]


@pytest.mark.parametrize("schedule,T,n", [("linear", 10, 20_000), ("cosine", 100, 10_000), ("linear", 1000, 2_000)])
def test_bound_is_tight_for_the_true_reverse_process(schedule, T, n):
    """With the learned variance set to the true Var[x_{t-1} | x_t] (and Var[x_0 | x_1] at the decoder), every reverse
    KL vanishes: the bound equals H + KL(q(x_T) || N(0, 1)) (~1e-5 nats) at any T."""
    process = GaussianDiffusion(schedule, T, "eps", "learned")
    alpha_bar = torch.from_numpy(reference_alpha_bar(schedule, T))
    prev = torch.cat([torch.ones(1, dtype=F64), alpha_bar[:-1]])
    beta = 1 - alpha_bar / prev
    tilde = beta * (1 - prev) / (1 - alpha_bar)
    coef = beta * prev.sqrt() / (1 - alpha_bar)
    eps = optimal_eps(process)

    def denoiser(xt: Tensor, t: Tensor, y) -> Tensor:
        _, _, _, v = gaussian_posterior(process, t, xt)
        true_log_variance = torch.where(t[:, None] == 0, v, tilde[t, None] + coef[t, None] ** 2 * v).log()
        small, large = process.posterior_log_variance[t, None], process.betas[t, None].log()
        frac = (true_log_variance - small) / (large - small)  # N&D eq. 15 solved for v
        return torch.cat([eps(xt, t, y), 2 * frac - 1], 1)

    bound, se = gaussian_bound(process, denoiser, n)
    assert abs(bound - ENTROPY - gaussian_reverse_gap(process, "true")) < 4 * se, (bound - ENTROPY, se)
    assert gaussian_reverse_gap(process, "true") < 1e-4


# --- the discretised Gaussian decoder ---------------------------------------------------------------------------
MEANS_SCALES = [(m, ls) for m in (-3.0, 0.0, 0.37, 1.0, 4.0) for ls in (-9.0, -4.0, -1.0, 0.0, 2.0)]


@pytest.mark.parametrize("K", [2, 17, 256])
def test_discretized_gaussian_masses_sum_to_one(K):
    """The K masses (the end bins extended to +-infinity) sum to 1, for means inside and far outside [0, 1] and scales
    from e^-9 to e^2."""
    levels = torch.arange(K, dtype=F64) / (K - 1)
    for mean, log_scale in MEANS_SCALES:
        log_mass = discretized_gaussian_log_mass(levels, torch.tensor(mean, dtype=F64),
                                                 torch.tensor(log_scale, dtype=F64), 0.5 / (K - 1))
        assert math.isclose(log_mass.exp().sum().item(), 1.0, abs_tol=1e-9), (K, mean, log_scale)


@pytest.mark.parametrize("K", [17, 256])
def test_discretized_gaussian_is_phi_difference(K):
    """A middle bin's mass is Phi((x + h - mu) / sigma) - Phi((x - h - mu) / sigma) (scipy, float64), in log space
    wherever it is at least 1e-250; the end bins are Phi and 1 - Phi."""
    levels = np.arange(K) / (K - 1)
    h = 0.5 / (K - 1)
    for mean, log_scale in MEANS_SCALES:
        sigma = math.exp(log_scale)
        upper, lower = (levels + h - mean) / sigma, (levels - h - mean) / sigma
        # the difference on the side of the mean where it does not cancel: survival functions right of it
        mass = np.where(upper + lower < 0, norm.cdf(upper) - norm.cdf(lower), norm.sf(lower) - norm.sf(upper))
        mass[0], mass[-1] = norm.cdf(upper[0]), norm.sf(lower[-1])
        ours = discretized_gaussian_log_mass(torch.from_numpy(levels), torch.tensor(mean, dtype=F64),
                                             torch.tensor(log_scale, dtype=F64), h).numpy()
        seen = mass > 1e-250
        # rtol 1e-6: a bin narrower than 1e-3 sigma is density x width, off by (width / sigma)^2 / 24 < 1e-7
        np.testing.assert_allclose(ours[seen], np.log(mass[seen]), rtol=1e-6, atol=1e-9,
                                   err_msg=f"K={K} mean={mean} log_scale={log_scale}")


@pytest.mark.parametrize("K", [2, 17])
def test_bound_decoder_is_ho_eq13(K):
    """The bound's term at t = 1 on K-level data is -log of N(mean, sigma^2)'s mass over [x - 1/(K-1), x + 1/(K-1)]
    in [-1, 1], the end bins extended to +-infinity (Ho et al. eq. 13), summed over the pixels."""
    process = GaussianDiffusion("linear", 10)
    g = gen(K)
    x0 = (torch.randint(0, K, (3, 1, 2, 2), generator=g) / (K - 1) * 2 - 1).to(F64)
    mean = 0.3 * torch.randn(3, 1, 2, 2, generator=g, dtype=F64)
    log_variance = torch.log(torch.tensor([[0.01], [0.3], [2.0]], dtype=F64)).reshape(3, 1, 1, 1)
    ours = process.vb_term(mean, log_variance, x0, x0, full(3, 0), K)
    x, mu, sigma = x0.numpy(), mean.numpy(), np.exp(0.5 * log_variance.numpy())
    upper = np.where(x > 1 - 1e-9, np.inf, (x + 1 / (K - 1) - mu) / sigma)
    lower = np.where(x < -1 + 1e-9, -np.inf, (x - 1 / (K - 1) - mu) / sigma)
    mass = np.where(upper + lower < 0, norm.cdf(upper) - norm.cdf(lower), norm.sf(lower) - norm.sf(upper))
    expected = -np.log(mass).reshape(3, -1).sum(1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-9)


def test_prior_kl_closed_form():
    """The prior term is KL(N(sqrt(alpha_bar_T) x_0, 1 - alpha_bar_T) || N(0, I)), summed over dimensions."""
    process = GaussianDiffusion("linear", 1000)
    x0 = torch.tensor([[0.0, 50.0], [-300.0, 1.0]], dtype=F64)
    alpha_bar = reference_alpha_bar("linear", 1000)[-1]
    expected = 0.5 * (alpha_bar * x0**2 + (1 - alpha_bar) - 1 - math.log(1 - alpha_bar)).sum(1)
    assert expected[1] > 1  # far from 0, so that a wrong alpha_bar_T shows
    assert torch.allclose(process.prior_kl(x0), expected, rtol=1e-10, atol=0)


# --- precision ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("info,config", [(VECTORS, {}), (DIGITS, {"variance": "learned", "loss": "hybrid"})],
                         ids=["vectors", "images-hybrid"])
def test_bf16_autocast_loss(info, config):
    """Under bf16 autocast only the denoiser runs in bf16: the loss terms are fp32, the process stays float64, and the
    loss is the fp32 one up to bf16's rounding (8 significant bits, 2^-9 ~ 2e-3 per operation; a few layers: ~1e-2)."""
    model = ddpm(info, **config)
    x = torch.randint(0, 17, (8, *info.shape), generator=gen(0)) / 16 if info.kind == "image" else \
        torch.randn(8, *info.shape, generator=gen(0))
    torch.manual_seed(5)
    fp32 = model.loss(x)
    torch.manual_seed(5)  # the same t, noise (and label dropout)
    with torch.autocast("cpu", torch.bfloat16):
        bf16 = model.loss(x)
        assert model.net(x[:2], torch.zeros(2, dtype=torch.long)).dtype == torch.bfloat16  # autocast is on
    assert set(bf16) == set(fp32) and all(v.dtype == torch.float32 for v in bf16.values())
    for key in fp32:
        assert torch.allclose(bf16[key].mean(), fp32[key].mean(), rtol=5e-2, atol=0), (key, bf16[key], fp32[key])
    assert model.process.betas.dtype == model.process.alpha_bar.dtype == F64


def test_gather_in_fp32_at_least():
    """gather returns the schedule in fp32 for bf16 inputs, in float64 for float64 ones, broadcastable (B, 1, ...)."""
    process = GaussianDiffusion("cosine", 10)
    t = torch.tensor([0, 9])
    assert process.gather(process.alpha_bar, t, torch.zeros(2, 1, 3, 3, dtype=torch.bfloat16)).dtype == torch.float32
    out = process.gather(process.alpha_bar, t, torch.zeros(2, 1, 3, 3, dtype=F64))
    assert out.shape == (2, 1, 1, 1) and torch.equal(out.flatten(), process.alpha_bar[t])


# --- the learned variance -------------------------------------------------------------------------------------------
def test_learned_variance_endpoints():
    """N&D eq. 15: frac 0 gives log beta-tilde_t (clipped at t = 1), frac 1 gives log beta_t, frac 1/2 their mean."""
    T = 30
    process = GaussianDiffusion("cosine", T, "eps", "learned")
    alpha_bar = torch.from_numpy(reference_alpha_bar("cosine", T))
    prev = torch.cat([torch.ones(1, dtype=F64), alpha_bar[:-1]])
    beta = 1 - alpha_bar / prev
    tilde = beta * (1 - prev) / (1 - alpha_bar)
    tilde[0] = tilde[1]  # beta-tilde_1 = 0: clipped
    like, t = torch.zeros(T, 2, dtype=F64), torch.arange(T)
    lv = lambda f: process.p_log_variance(torch.full((T, 2), f, dtype=F64), t, like)[:, 0]
    assert torch.allclose(lv(0.0), tilde.log(), rtol=1e-10, atol=0)
    assert torch.allclose(lv(1.0), beta.log(), rtol=1e-10, atol=0)
    assert torch.allclose(lv(0.5), 0.5 * (tilde.log() + beta.log()), rtol=1e-10, atol=0)


def hybrid_gradient(loss: str, vlb_weight: float) -> tuple[Tensor, Tensor]:
    """Gradients of the summed loss w.r.t. the mean and the variance halves of a denoiser's output (B, 2 D)."""
    process = GaussianDiffusion("cosine", 20, "eps", "learned")
    g = gen(0)
    x0, noise = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    output = torch.randn(6, 6, generator=g, dtype=F64).requires_grad_()
    terms = process.training_losses(lambda *_: output, x0, torch.arange(6) * 3, None, noise, loss,
                                    vlb_weight=vlb_weight)
    terms["loss"].sum().backward()
    return output.grad[:, :3], output.grad[:, 3:]


def test_hybrid_vb_trains_only_the_variance():
    """L_hybrid = L_simple + lambda L_vlb with the mean detached in L_vlb: the mean's gradient is L_simple's whatever
    lambda, the variance's is proportional to lambda; L_vlb alone does reach the mean."""
    mean_a, var_a = hybrid_gradient("hybrid", 1e-3)
    mean_b, var_b = hybrid_gradient("hybrid", 10.0)
    mean_simple, _ = hybrid_gradient("simple", 1e-3)
    assert torch.equal(mean_a, mean_b) and torch.allclose(mean_a, mean_simple, rtol=1e-12, atol=0)
    assert var_a.abs().min() > 0 and torch.allclose(var_b, 1e4 * var_a, rtol=1e-9, atol=0)
    mean_vlb, _ = hybrid_gradient("vlb", 1.0)
    assert not torch.allclose(mean_vlb, torch.zeros_like(mean_vlb))


@pytest.mark.parametrize("offset", [0.008, 0.001])
def test_bound_weights_are_the_kl_per_unit_of_squared_v_error(offset):
    """With sigma_t^2 = beta-tilde_t and the exact posterior mean the term at t >= 2 is 0; a v error delta makes it
    w_t |delta|^2 exactly (N1), and the proposal's half on w_t draws the small t most often."""
    process = GaussianDiffusion("cosine", 50, "v", "small", cosine_offset=offset)
    g = gen(3)
    x0, noise, delta = (torch.randn(5, 4, generator=g, dtype=F64) for _ in range(3))
    weights = process.bound_weights()
    for index in (1, 7, 30, 49):
        t = full(5, index)
        xt = process.q_sample(x0, t, noise)
        target = process.target(x0, noise, t)
        terms = [process.vb_term(*process.p_mean_variance(lambda *_, out=out: out, xt, t)[:2], x0, xt, t, None)
                 for out in (target, target + delta)]
        torch.testing.assert_close(terms[0], torch.zeros(5, dtype=F64), rtol=0, atol=1e-9)
        torch.testing.assert_close(terms[1], weights[index] * delta.square().sum(1), rtol=1e-9, atol=1e-12)
    proposal = process.timestep_proposal()
    assert proposal.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (1 / (50 * proposal)).max() <= 2 and proposal[1] > 5 * proposal[25]


def test_importance_sampled_timesteps_keep_the_bounds_expectation():
    """loss=vlb with t ~ p_t, reweighted by 1 / (T p_t), estimates the same mean over t as uniform t, while the
    unweighted draws would not."""
    x = torch.randn(8, 2, generator=gen(4)).repeat(2500, 1)  # 20,000 examples of 8 points
    models = {how: ddpm(VECTORS, loss="vlb", timestep_sampling=how) for how in ("uniform", "importance")}
    estimates = {}
    with torch.no_grad():
        for how, model in models.items():
            torch.manual_seed(5)
            vb = model.loss(x)["vb"].double()  # (B,)
            estimates[how] = (vb.mean(), vb.std() / math.sqrt(len(vb)))
        model = models["uniform"]
        per_t = torch.stack([model.process.training_losses(model.denoise, x[:2000], full(2000, t), None,
                                                           torch.randn(2000, 2, generator=gen(6 + t)),
                                                           "vlb")["vb"].double().mean() for t in range(20)])
    (uniform, se_u), (importance, se_i) = estimates["uniform"], estimates["importance"]
    assert abs(uniform - importance) < 4 * math.hypot(se_u, se_i)
    unweighted = (model.process.timestep_proposal() * per_t).sum()  # what dropping the weights would estimate
    assert abs(unweighted - per_t.mean()) > 10 * math.hypot(se_u, se_i)


# --- the model --------------------------------------------------------------------------------------------------------
def test_tiny_image_config_is_valid():
    """The tiny U-Net config (width 8: GroupNorm's 8 groups of one channel; one level; T = 20) passes validation."""
    model = ddpm(DIGITS)
    assert model.config.channels == 8 and model.config.channel_mult == (1,) and model.config.timesteps == 20


@pytest.mark.parametrize("sampler", ["repaint", "replacement"])
def test_complete_keeps_observed_pixels(sampler):
    """Inpainting returns the observed pixels bit for bit and fills the others with values on the level grid."""
    model = ddpm(DIGITS, seed=1)
    x = torch.randint(0, 17, (3, 1, 8, 8), generator=gen(0)) / 16
    observed = torch.zeros(8, 8, dtype=torch.bool)
    observed[:, :4] = True
    out = model.complete(x, observed, generator=gen(1), sampler=sampler)
    assert torch.equal(out[..., :4], x[..., :4])
    filled = out[..., 4:] * 16
    assert torch.equal(filled, filled.round()) and not torch.equal(out[..., 4:], x[..., 4:])
    with pytest.raises(ValueError, match="repaint or replacement"):
        model.complete(x, observed, sampler="ddim")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm-solver"])
def test_samples_on_the_level_grid(sampler):
    """Image samples lie on the data's grid {k / (K - 1)}, K = 17, and in [0, 1]."""
    model = ddpm(DIGITS, seed=2)
    samples = model.generate(6, generator=gen(0), sampler=sampler, steps=10)
    levels = samples * 16
    assert samples.min() >= 0 and samples.max() <= 1 and torch.equal(levels, levels.round())
    assert len(levels.unique()) > 1


def conditional_model():
    return ddpm(DIGITS, seed=3, class_conditional=True, prediction="v")


def test_guidance_zero_is_conditional_sampling():
    """Guidance w = 0 is plain conditional sampling: the same samples from the same generator."""
    model, labels = conditional_model(), torch.tensor([0, 3, 9])
    plain = model.sample(3, labels, gen(0), "ddim", steps=5)
    assert torch.equal(model.sample(3, labels, gen(0), "ddim", steps=5, guidance=0.0), plain)
    assert not torch.equal(model.sample(3, labels, gen(0), "ddim", steps=5, guidance=3.0), plain)


def test_guidance_combines_outputs():
    """Ho & Salimans eq. 6 on the network's output (affine in eps for every target): (1 + w) out(x, y) - w out(x)."""
    model, labels = conditional_model(), torch.tensor([1, 4])
    xt, t, w = torch.randn(2, 1, 8, 8, generator=gen(0)), torch.tensor([3, 17]), 2.5
    guided = model.predictor(labels, w)(xt, t)
    with torch.no_grad():
        conditional, unconditional = model.denoise(xt, t, labels), model.denoise(xt, t, torch.full_like(labels, 10))
        expected = model.process.split((1 + w) * conditional - w * unconditional, xt, t, clip=True)
    assert torch.allclose(guided.eps, expected.eps, atol=1e-5) and torch.allclose(guided.x0, expected.x0, atol=1e-5)


def test_sampling_errors():
    """Guidance on an unconditional model, labels out of range, --steps above T, an unknown sampler: ValueError."""
    unconditional, conditional = ddpm(DIGITS), conditional_model()
    with pytest.raises(ValueError, match="class_conditional"):
        unconditional.sample(2, guidance=1.0)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        conditional.sample(2, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"--steps 21 must lie in 1\.\.20"):
        unconditional.sample(2, steps=21)
    with pytest.raises(ValueError, match="ddim, dpm-solver, ddpm"):
        unconditional.generate(2, sampler="nope")


def test_steps_zero_is_refused():
    """--steps 0 is out of 1..T and must fail, not silently become the sampler's default (DDIM: 50 steps)."""
    model = ddpm(VECTORS, timesteps=1000)
    with pytest.raises(ValueError, match=r"--steps 0 must lie in 1\.\.1000"):
        model.sample(2, generator=gen(0), sampler="ddim", steps=0)


@pytest.mark.parametrize("field", ["schedule", "prediction", "variance", "loss", "spacing", "timestep_sampling"])
def test_unknown_config_values_name_the_field(field):
    """An unknown schedule, prediction, variance, loss or spacing fails with the field's name."""
    with pytest.raises(ValueError, match=rf"DDPMConfig\.{field}='nope' is not one of"):
        build_model("ddpm", VECTORS, {field: "nope"})


def test_learned_variance_needs_the_bound():
    """variance=learned with loss=simple would never train the variance: refused, naming the fix."""
    with pytest.raises(ValueError, match="variance=learned.*loss=hybrid"):
        build_model("ddpm", VECTORS, {"variance": "learned", "loss": "simple"})


# --- EMA ----------------------------------------------------------------------------------------------------------------
def test_ema_decay_warmup():
    """The decay after n updates is min(decay, (1 + n) / (10 + n)); without warm-up, the decay itself."""
    for n in (0, 1, 5, 100, 8990, 8991, 10**6):
        assert ema_decay_at(0.999, n) == min(0.999, (1 + n) / (10 + n))
        assert ema_decay_at(0.999, n, warmup=False) == 0.999
    # (1 + n) / (10 + n) reaches 0.999 at n = 8991
    assert ema_decay_at(0, 0) == 0 and ema_decay_at(0.999, 0) == 0.1 and ema_decay_at(0.999, 8989) < 0.999


def test_ema_model_holds_the_recursive_average():
    """After updates with weights w_1..w_k: ema = w_1, then ema <- d_n ema + (1 - d_n) w_{n+1}, d_n = decay after n."""
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2).double()
    ema = ema_model(module, 0.9)
    expected = None
    for n in range(6):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen(n), dtype=F64))
        ema.update_parameters(module)
        weights = torch.cat([p.flatten() for p in module.parameters()])
        d = ema_decay_at(0.9, n)
        expected = weights.clone() if n == 0 else d * expected + (1 - d) * weights  # the first update copies
        assert torch.allclose(torch.cat([p.flatten() for p in ema.module.parameters()]), expected, rtol=1e-12, atol=0)


def test_ema_model_with_integer_buffers():
    """Float buffers (BatchNorm's running statistics) are averaged like weights; integer ones (num_batches_tracked)
    cannot be interpolated and must be copied, not crash the second update."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    ema = ema_model(module, 0.999)
    ema.update_parameters(module)
    first = module[1].running_mean.clone()
    module(torch.randn(16, 2))  # running statistics move; num_batches_tracked = 1
    ema.update_parameters(module)
    d = ema_decay_at(0.999, 1)
    assert torch.allclose(ema.module[1].running_mean, d * first + (1 - d) * module[1].running_mean)
    assert ema.module[1].num_batches_tracked.item() == 1
