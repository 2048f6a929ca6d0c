"""The mathematics of the VAE family, checked against independent computations.

- closed-form Gaussian KL == its Monte Carlo estimate;
- ELBO <= IWAE_k <= log p(x), IWAE_k rising with k, with log p(x) by quadrature over a 1-D latent;
- reparameterised gradients == analytic, score-function (REINFORCE) and finite-difference ones;
- the IWAE surrogate: value -L_k, gradient sum_i w~_i grad log w_i with the weights detached;
- the per-dimension likelihoods are normalised and equal their textbook formulas, and the
  decoder's (P*C, H, W) layout is read as it always was;
- the CVAE's learned prior enters its KL; beta and the KL warm-up weight only the training loss;
- the VampPrior is a normalised mixture density, sampled from correctly, and the bounds above
  hold under it (the 1-D checks run for both priors).

Monte Carlo checks compare within a few standard errors (fixed seeds, so they are deterministic);
exact identities are checked in float64 to ~1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Normal

from genzoo.data.core import DataInfo
from genzoo.distributions.gaussian import gaussian_kl, gaussian_log_prob, reparameterize
from genzoo.distributions.likelihoods import (
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    params_to_last,
    sum_data_dims,
)
from genzoo.distributions.mixture import gaussian_mixture_log_prob
from genzoo.distributions.numerics import log_mean_exp
from genzoo.models.registry import build_model

F64 = torch.float64
TOY = DataInfo("toy", (1, 4, 4), 0, "binary", 2)
DIGITS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
Z_SCORE = 5.0  # Monte Carlo tolerance, in standard errors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal(mean: Tensor, logvar: Tensor) -> Normal:
    """The diagonal Gaussian as torch.distributions builds it (an implementation independent of genzoo)."""
    return Normal(mean, torch.exp(0.5 * logvar))


def mc_mean(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard error over dimension 0."""
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


def assert_within_se(estimate: Tensor, se: Tensor, target: Tensor, slack: float = 0.0) -> None:
    err = (estimate - target).abs()
    assert torch.all(err <= Z_SCORE * se + slack), f"|estimate - target| = {err} exceeds {Z_SCORE} se = {Z_SCORE * se}"


# --- 1. closed-form Gaussian KL ------------------------------------------------------------------
def _random_gaussians(seed: int, batch: int = 4, dim: int = 3) -> tuple[Tensor, ...]:
    g = gen(seed)
    mean_q = torch.randn(batch, dim, generator=g, dtype=F64)
    logvar_q = torch.randn(batch, dim, generator=g, dtype=F64).clamp(-1.5, 1.5)
    mean_p = torch.randn(batch, dim, generator=g, dtype=F64)
    logvar_p = torch.randn(batch, dim, generator=g, dtype=F64).clamp(-1.0, 1.5)
    return mean_q, logvar_q, mean_p, logvar_p


def _mc_kl(mean_q, logvar_q, mean_p, logvar_p, n: int = 50_000, seed: int = 1) -> tuple[Tensor, Tensor]:
    q, p = normal(mean_q, logvar_q), normal(mean_p, logvar_p)
    z = q.mean + q.stddev * torch.randn(n, *mean_q.shape, generator=gen(seed), dtype=F64)  # (n, B, d)
    return mc_mean((q.log_prob(z) - p.log_prob(z)).sum(-1))  # E_q[log q - log p], (B,)


def test_gaussian_kl_against_standard_normal_equals_monte_carlo():
    mean_q, logvar_q, _, _ = _random_gaussians(0)
    zeros = torch.zeros_like(mean_q)
    kl = gaussian_kl(mean_q, logvar_q)
    estimate, se = _mc_kl(mean_q, logvar_q, zeros, zeros)
    assert kl.shape == (4,)
    assert_within_se(estimate, se, kl)
    # p = None is the same as an explicit N(0, I)
    torch.testing.assert_close(kl, gaussian_kl(mean_q, logvar_q, zeros, zeros), rtol=0, atol=1e-12)


def test_gaussian_kl_against_general_diagonal_gaussian_equals_monte_carlo():
    mean_q, logvar_q, mean_p, logvar_p = _random_gaussians(2)
    kl = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p)
    estimate, se = _mc_kl(mean_q, logvar_q, mean_p, logvar_p)
    assert_within_se(estimate, se, kl)
    # and equals torch.distributions' closed form
    reference = torch.distributions.kl_divergence(normal(mean_q, logvar_q), normal(mean_p, logvar_p)).sum(-1)
    torch.testing.assert_close(kl, reference, rtol=1e-12, atol=1e-12)


def test_gaussian_kl_is_zero_iff_q_equals_p():
    mean_q, logvar_q, mean_p, logvar_p = _random_gaussians(3)
    torch.testing.assert_close(gaussian_kl(mean_q, logvar_q, mean_q, logvar_q), torch.zeros(4, dtype=F64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(gaussian_kl(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64)),
                               torch.zeros(2, dtype=F64), rtol=0, atol=0)
    assert torch.all(gaussian_kl(mean_q, logvar_q, mean_p, logvar_p) > 0)
    assert torch.all(gaussian_kl(mean_q, logvar_q) > 0)
    # only the mean differs, or only the variance differs: still positive
    assert torch.all(gaussian_kl(mean_q + 0.1, logvar_q, mean_q, logvar_q) > 0)
    assert torch.all(gaussian_kl(mean_q, logvar_q + 0.1, mean_q, logvar_q) > 0)


# --- 2. ELBO <= IWAE_k <= log p(x) with log p(x) by quadrature ---------------------------------------
GRID = torch.linspace(-12.0, 12.0, 20_001, dtype=F64)  # z grid for the 1-D latent


@pytest.fixture(scope="module", params=["standard", "vamp"])
def vae_1d(request):
    """An untrained VAE with a 1-D latent whose decoder is made sharp (weights x3), so that the
    posterior is narrow while q(z|x) (an untrained encoder) is close to the prior: far from it.
    Once with p(z) = N(0, 1), once with a VampPrior of 5 pseudo-inputs."""
    torch.manual_seed(0)
    model = build_model("vae", TOY, {"latent_dim": 1, "hidden_dim": 16, "prior": request.param,
                                     "pseudo_inputs": 5}).double()
    with torch.no_grad():
        for layer in model.decoder.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(3.0)
    x = (torch.rand(4, 1, 4, 4, generator=gen(3)) < 0.5).to(F64)  # (B, 1, 4, 4) binary
    return model, x


def log_prior_on_grid(model, grid: Tensor) -> Tensor:
    """log p(z) at each grid point, (G,): N(0, 1) written out, or the VampPrior's mixture summed
    component by component (independently of the model's matmul expansion)."""
    if model.config.prior == "standard":
        return Normal(0.0, 1.0).log_prob(grid)
    means, logvars = model.vamp_components()  # (K, 1) each
    return log_mean_exp(normal(means.T, logvars.T).log_prob(grid.unsqueeze(1)), 1)


def log_joint_on_grid(model, x: Tensor, grid: Tensor) -> Tensor:
    """log p(x | z) + log p(z) at each grid point: (G, B)."""
    z = grid.reshape(-1, 1, 1).expand(-1, x.shape[0], 1)  # (G, B, 1)
    return model.log_px_given_z(x, z) + log_prior_on_grid(model, grid).unsqueeze(1)


def quadrature_log_px(model, x: Tensor, grid: Tensor = GRID) -> Tensor:
    """log p(x) = log int p(x|z) p(z) dz as a Riemann sum: logsumexp + log dz, (B,)."""
    dz = (grid[1] - grid[0]).item()
    return torch.logsumexp(log_joint_on_grid(model, x, grid), 0) + math.log(dz)


def mean_bound(model, x: Tensor, k: int, repeats: int, seed: int) -> tuple[Tensor, Tensor]:
    """Mean and standard error over ``repeats`` independent estimates of the k-sample bound, (B,)."""
    value = model.log_likelihood(x.repeat(repeats, *[1] * (x.dim() - 1)), num_samples=k, generator=gen(seed)).value
    return mc_mean(value.reshape(repeats, x.shape[0]))


@torch.no_grad()
def test_quadrature_is_converged(vae_1d):
    model, x = vae_1d
    coarse = torch.linspace(-12.0, 12.0, 8_001, dtype=F64)
    torch.testing.assert_close(quadrature_log_px(model, x), quadrature_log_px(model, x, coarse), rtol=0, atol=1e-5)
    # the prior mass outside [-12, 12] is negligible and p(x) is a probability of a binary image
    assert torch.all(quadrature_log_px(model, x) < 0)
    dz = (GRID[1] - GRID[0]).item()
    assert torch.logsumexp(log_prior_on_grid(model, GRID), 0).item() + math.log(dz) == pytest.approx(0, abs=1e-6)
    # the model's own log p(z) is that density
    torch.testing.assert_close(model.log_prior(GRID.reshape(-1, 1, 1)).squeeze(1), log_prior_on_grid(model, GRID),
                               rtol=1e-9, atol=1e-9)


@torch.no_grad()
def test_elbo_equals_its_quadrature_value_and_gap_is_kl_to_posterior(vae_1d):
    """ELBO = int q(z) [log p(x, z) - log q(z)] dz; log p(x) - ELBO = KL(q || p(z|x)) > 0."""
    model, x = vae_1d
    log_px = quadrature_log_px(model, x)
    mean, logvar = model.posterior(x)  # (B, 1)
    q = normal(mean.squeeze(-1), logvar.squeeze(-1))
    log_q = q.log_prob(GRID.unsqueeze(1))  # (G, B)
    dz = (GRID[1] - GRID[0]).item()
    exact_elbo = (log_q.exp() * (log_joint_on_grid(model, x, GRID) - log_q)).sum(0) * dz
    estimate, se = mean_bound(model, x, k=1, repeats=4000, seed=11)
    assert_within_se(estimate, se, exact_elbo)
    # the gap is the KL from q to the true posterior, computed on the grid
    log_posterior = log_joint_on_grid(model, x, GRID) - log_px  # (G, B)
    kl_to_posterior = (log_q.exp() * (log_q - log_posterior)).sum(0) * dz
    torch.testing.assert_close(log_px - exact_elbo, kl_to_posterior, rtol=1e-6, atol=1e-6)
    assert torch.all(kl_to_posterior > 0.1)  # q is not the posterior: the bounds below have room


@torch.no_grad()
def test_elbo_below_iwae_k_below_log_px_and_iwae_rises_with_k(vae_1d):
    model, x = vae_1d
    log_px = quadrature_log_px(model, x)
    repeats = {1: 2000, 5: 2000, 50: 1000, 500: 300}
    means, ses = {}, {}
    for i, (k, r) in enumerate(repeats.items()):
        means[k], ses[k] = mean_bound(model, x, k, r, seed=100 + i)
        # E[IWAE_k] <= log p(x) (no significant excess)
        assert torch.all(means[k] <= log_px + Z_SCORE * ses[k]), (k, means[k] - log_px, ses[k])
    # num_samples=1 is the ELBO: strictly below log p(x) for this q
    assert torch.all(means[1] + Z_SCORE * ses[1] < log_px)
    # E[IWAE_k] increases with k: each step up is significant, averaged over the examples
    ks = list(repeats)
    for small, large in zip(ks[:-1], ks[1:]):
        rise = (means[large] - means[small]).mean()
        se = torch.sqrt((ses[large] ** 2 + ses[small] ** 2).sum()) / x.shape[0]
        assert rise > 4 * se, f"E[IWAE_{large}] - E[IWAE_{small}] = {rise:.4f}, se {se:.4f}"
        assert torch.all(means[large] > means[small] - Z_SCORE * torch.sqrt(ses[large] ** 2 + ses[small] ** 2))


@torch.no_grad()
def test_iwae_with_many_samples_approaches_log_px(vae_1d):
    model, x = vae_1d
    log_px = quadrature_log_px(model, x)
    estimate, se = mean_bound(model, x, k=5000, repeats=6, seed=7)
    assert torch.all(se < 0.02)
    assert torch.all((estimate - log_px).abs() < 0.06), estimate - log_px


# --- 3. reparameterised gradients ----------------------------------------------------------------------
MEAN = torch.tensor([0.3, -1.2, 2.0], dtype=F64)
LOGVAR = torch.tensor([-0.5, 0.4, 1.0], dtype=F64)
GROUPS, PER_GROUP = 64, 4096  # gradients estimated on 64 independent groups -> mean and standard error


def grouped_gradients(surrogate, seed: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Estimate d/d(mean, logvar) E[f(z)] on independent groups of samples; mean and se of each (d,).

    ``surrogate(mean, logvar, z)`` returns per-sample values (PER_GROUP, GROUPS, d) whose sample mean
    has the gradient estimate as its gradient; each group has its own copy of (mean, logvar).
    """
    mean = MEAN.repeat(GROUPS, 1).requires_grad_()
    logvar = LOGVAR.repeat(GROUPS, 1).requires_grad_()
    z = reparameterize(mean, logvar, PER_GROUP, gen(seed))  # (PER_GROUP, GROUPS, d)
    grads = torch.autograd.grad(surrogate(mean, logvar, z).mean(0).sum(), [mean, logvar])
    return tuple(mc_mean(g) for g in grads)


def test_reparameterize_draws_from_q():
    z = reparameterize(MEAN, LOGVAR, 200_000, gen(0))
    assert z.shape == (200_000, 3)
    estimate, se = mc_mean(z)
    assert_within_se(estimate, se, MEAN)
    torch.testing.assert_close(z.var(0), LOGVAR.exp(), rtol=0.02, atol=0)
    assert reparameterize(MEAN.expand(5, 3), LOGVAR.expand(5, 3)).shape == (5, 3)


def test_reparameterised_gradient_of_quadratic_equals_analytic():
    """E[sum c z^2] = sum c (mu^2 + sigma^2): d/dmu = 2 c mu, d/dlogvar = c exp(logvar)."""
    c = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    (g_mean, se_mean), (g_logvar, se_logvar) = grouped_gradients(lambda m, lv, z: c * z**2, seed=1)
    assert_within_se(g_mean, se_mean, 2 * c * MEAN)
    assert_within_se(g_logvar, se_logvar, c * LOGVAR.exp())


def test_reparameterised_gradient_equals_score_function_gradient_for_sin():
    """E[sin z] = sin(mu) exp(-s2/2): both estimators agree with each other and with the analytic value."""
    var = LOGVAR.exp()
    analytic_mean = torch.cos(MEAN) * torch.exp(-var / 2)
    analytic_logvar = -0.5 * var * torch.sin(MEAN) * torch.exp(-var / 2)

    def reinforce(mean, logvar, z):  # f(z) * log q(z): gradient E[f(z) grad log q(z)], z not differentiated
        z = z.detach()
        return torch.sin(z).sum(-1, keepdim=True) * normal(mean, logvar).log_prob(z).sum(-1, keepdim=True)

    (r_mean, r_se_mean), (r_logvar, r_se_logvar) = grouped_gradients(lambda m, lv, z: torch.sin(z), seed=2)
    (s_mean, s_se_mean), (s_logvar, s_se_logvar) = grouped_gradients(reinforce, seed=3)
    assert_within_se(r_mean, r_se_mean, analytic_mean)
    assert_within_se(r_logvar, r_se_logvar, analytic_logvar)
    assert_within_se(s_mean, s_se_mean, analytic_mean)
    assert_within_se(s_logvar, s_se_logvar, analytic_logvar)
    assert_within_se(r_mean - s_mean, torch.sqrt(r_se_mean**2 + s_se_mean**2), torch.zeros(3, dtype=F64))
    assert_within_se(r_logvar - s_logvar, torch.sqrt(r_se_logvar**2 + s_se_logvar**2), torch.zeros(3, dtype=F64))


def test_reparameterised_gradient_equals_finite_differences_with_common_random_numbers():
    def f(z):
        return (torch.sin(z) * z + 0.1 * z**3).sum(-1)

    def estimate(mean, logvar):  # same generator seed: the same eps at every (mean, logvar)
        return f(reparameterize(mean, logvar, 1000, gen(4))).mean()

    mean, logvar = MEAN.clone().requires_grad_(), LOGVAR.clone().requires_grad_()
    g_mean, g_logvar = torch.autograd.grad(estimate(mean, logvar), [mean, logvar])
    h = 1e-5
    with torch.no_grad():
        for i in range(3):
            e = torch.zeros(3, dtype=F64)
            e[i] = h
            fd_mean = (estimate(MEAN + e, LOGVAR) - estimate(MEAN - e, LOGVAR)) / (2 * h)
            fd_logvar = (estimate(MEAN, LOGVAR + e) - estimate(MEAN, LOGVAR - e)) / (2 * h)
            torch.testing.assert_close(g_mean[i], fd_mean, rtol=1e-7, atol=1e-8)
            torch.testing.assert_close(g_logvar[i], fd_logvar, rtol=1e-7, atol=1e-8)


# --- 4. the IWAE surrogate -----------------------------------------------------------------------------
def _iwae(k: int):
    torch.manual_seed(0)
    model = build_model("iwae", TOY, {"latent_dim": 2, "hidden_dim": 16, "k": k}).double()
    x = (torch.rand(5, 1, 4, 4, generator=gen(1)) < 0.5).to(F64)
    return model, x


def hand_log_weights(model, x: Tensor, k: int) -> Tensor:
    """log w_i = log p(x|z_i) + log N(z_i; 0, I) - log q(z_i|x), z_i = mu + sigma eps_i: (k, B).

    Draws eps from the global RNG exactly as ``reparameterize`` does, so a seed fixes the same eps."""
    mean, logvar = model.posterior(x)
    eps = torch.randn(k, *mean.shape, dtype=mean.dtype)
    z = mean + torch.exp(0.5 * logvar) * eps
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    return model.log_px_given_z(x, z) + log_prior - normal(mean, logvar).log_prob(z).sum(-1)


def grads_of(value: Tensor, model) -> list[Tensor]:
    return list(torch.autograd.grad(value.sum(), list(model.parameters())))


def assert_grads_close(a: list[Tensor], b: list[Tensor], atol: float = 1e-10) -> None:
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=0, atol=atol)


def test_iwae_log_weights_equal_hand_formula_in_float64():
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) to 1e-10 in a float64 model."""
    k = 7
    model, x = _iwae(k)
    torch.manual_seed(5)
    log_w = model.log_weights(x, None, k)
    torch.manual_seed(5)
    hand = hand_log_weights(model, x, k)  # the same eps
    assert log_w.shape == (k, 5) and log_w.dtype == F64
    torch.testing.assert_close(log_w, hand, rtol=0, atol=1e-10)


def test_iwae_loss_value_is_minus_the_k_sample_bound_and_its_gradient():
    k = 7
    model, x = _iwae(k)
    torch.manual_seed(5)
    out = model.loss(x)
    implementation = grads_of(out["loss"], model)
    torch.manual_seed(5)
    log_w = model.log_weights(x, None, k)  # the same eps
    torch.manual_seed(5)
    torch.testing.assert_close(log_w, hand_log_weights(model, x, k), rtol=0, atol=1e-6)

    bound = torch.logsumexp(log_w, 0) - math.log(k)  # L_k, (B,)
    assert out["loss"].shape == (5,)
    torch.testing.assert_close(out["loss"], -bound, rtol=0, atol=1e-10)
    torch.testing.assert_close(out["neg_iwae"], -bound, rtol=0, atol=1e-10)
    torch.testing.assert_close(out["neg_elbo"], -log_w.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(log_mean_exp(log_w, 0), bound, rtol=0, atol=1e-12)
    assert torch.all(out["neg_elbo"] >= out["neg_iwae"])  # Jensen, per realisation
    # gradient == autograd gradient of -log mean exp(log w)
    assert_grads_close(implementation, grads_of(-bound, model))


def test_iwae_gradient_uses_detached_normalised_weights():
    k = 7
    model, x = _iwae(k)
    torch.manual_seed(6)
    implementation = grads_of(model.loss(x)["loss"], model)

    torch.manual_seed(6)
    log_w = model.log_weights(x, None, k)  # (k, B), the same eps
    w_tilde = torch.softmax(log_w, 0).detach()  # w~_i = w_i / sum_j w_j, not differentiated
    per_sample = [  # - sum_b w~_ib grad log w_ib, for each i
        torch.autograd.grad(-(w_tilde[i] * log_w[i]).sum(), list(model.parameters()), retain_graph=True)
        for i in range(k)
    ]
    by_hand = [sum(g) for g in zip(*per_sample)]  # summed over i
    assert_grads_close(implementation, by_hand)

    # differentiating through the softmax as well would give a different (wrong) gradient
    through_softmax = grads_of(-(torch.softmax(log_w, 0) * log_w).sum(0), model)
    difference = max((a - b).abs().max().item() for a, b in zip(implementation, through_softmax))
    assert difference > 1e-3


def test_iwae_with_one_sample_is_the_single_sample_negative_elbo():
    model, x = _iwae(1)
    torch.manual_seed(8)
    out = model.loss(x)
    torch.manual_seed(8)
    log_w = model.log_weights(x, None, 1)[0]  # (B,)
    torch.manual_seed(8)
    terms = model.elbo_terms(x)  # one reparameterised z: recon = -log p(x|z) at the same eps
    torch.manual_seed(8)
    mean, logvar = model.posterior(x)
    z = reparameterize(mean, logvar)
    mc_kl = normal(mean, logvar).log_prob(z).sum(-1) - Normal(0.0, 1.0).log_prob(z).sum(-1)
    neg_elbo = terms["recon"] + mc_kl  # -[log p(x|z) + log p(z) - log q(z|x)]
    torch.testing.assert_close(out["loss"], -log_w, rtol=0, atol=1e-10)
    torch.testing.assert_close(out["neg_elbo"], -log_w.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["loss"], neg_elbo, rtol=0, atol=1e-6)
    assert_grads_close(grads_of(out["loss"], model), grads_of(neg_elbo, model))


# --- 5. per-dimension likelihoods ------------------------------------------------------------------------
MEAN_LOGITS = torch.tensor([-40.0, -8.0, -2.0, -0.3, 0.0, 0.7, 3.0, 9.0, 40.0])  # mean = sigmoid(logit)
LOG_SCALES = torch.tensor([-30.0, -7.0, -4.0, -1.5, 0.0, 1.0, 3.0, 8.0])  # below -7 is clamped


def _level_grid(num_levels: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Every level x every (mean, log-scale) pair as one dimension each: x (N,), params (N, 2)."""
    m, s = torch.meshgrid(MEAN_LOGITS, LOG_SCALES, indexing="ij")
    m, s = m.reshape(-1), s.reshape(-1)  # (M,)
    levels = torch.arange(num_levels, dtype=dtype) / (num_levels - 1)  # (K,), exact in this precision
    x = levels.repeat(len(m))  # (M*K,): all levels for pair 0, then pair 1, ...
    params = torch.stack([m.repeat_interleave(num_levels), s.repeat_interleave(num_levels)], 1)
    return x, params.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("num_levels", [2, 17, 256])
def test_discretized_logistic_sums_to_one_over_levels(num_levels, dtype):
    x, params = _level_grid(num_levels, dtype)
    log_p = DiscretizedLogistic(num_levels).log_prob(x, params).reshape(-1, num_levels)  # (M, K)
    assert torch.all(torch.isfinite(log_p)) and torch.all(log_p <= 1e-6)
    total = torch.logsumexp(log_p.double(), 1).exp()
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=tol)


@pytest.mark.parametrize("num_levels", [2, 17, 256])
def test_discretized_logistic_equals_cdf_differences(num_levels):
    """p(k) = sigmoid((x + h - mu)/s) - sigmoid((x - h - mu)/s), edges open, computed naively in float64."""
    x, params = _level_grid(num_levels, F64)
    log_p = DiscretizedLogistic(num_levels).log_prob(x, params)
    mean, scale = torch.sigmoid(params[:, 0]), torch.exp(params[:, 1].clamp(min=-7.0))
    h = 0.5 / (num_levels - 1)
    cdf_upper = torch.where(x > 1 - h, 1.0, torch.sigmoid((x + h - mean) / scale))
    cdf_lower = torch.where(x < h, 0.0, torch.sigmoid((x - h - mean) / scale))
    p = cdf_upper - cdf_lower
    reliable = p > 1e-6  # where the naive difference has not lost its digits
    torch.testing.assert_close(log_p[reliable], p[reliable].log(), rtol=0, atol=1e-6)


def test_discretized_logistic_gradient_is_finite_at_extremes():
    x, params = _level_grid(256, torch.float32)
    params.requires_grad_()
    (grad,) = torch.autograd.grad(DiscretizedLogistic(256).log_prob(x, params).sum(), params)
    assert torch.all(torch.isfinite(grad))


def test_bernoulli_log_prob_equals_hand_formula():
    g = gen(0)
    logits = 6 * torch.randn(3, 1, 5, 5, 1, generator=g, dtype=F64)  # (B, C, H, W, P=1)
    x = (torch.rand(3, 1, 5, 5, generator=g) < 0.5).to(F64)
    p = torch.sigmoid(logits[..., 0])
    hand = x * torch.log(p) + (1 - x) * torch.log(1 - p)
    torch.testing.assert_close(Bernoulli().log_prob(x, logits), hand, rtol=1e-10, atol=1e-10)
    # stable for huge logits, where the hand formula overflows
    big = torch.tensor([[-200.0], [200.0]], dtype=F64)  # (2 dimensions, P=1)
    torch.testing.assert_close(Bernoulli().log_prob(torch.tensor([0.0, 1.0], dtype=F64), big),
                               torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(Bernoulli().log_prob(torch.tensor([1.0, 1.0], dtype=F64), big),
                               torch.tensor([-200.0, 0.0], dtype=F64), rtol=1e-12, atol=1e-12)


def test_params_to_last_reads_the_decoder_layout_as_chunking_its_channels_did():
    """A decoder's (..., P*C, H, W): parameter p of channel c is channel p*C + c, i.e. chunk(P, dim=-3)."""
    params = torch.randn(4, 3, 2 * 3, 5, 6, generator=gen(3))  # (S, B, P*C, H, W), P = 2, C = 3
    per_dim = params_to_last(params, (3, 5, 6))  # (S, B, C, H, W, P)
    assert per_dim.shape == (4, 3, 3, 5, 6, 2)
    for p, chunk in enumerate(params.chunk(2, dim=-3)):
        assert torch.equal(per_dim[..., p], chunk)
    vectors = torch.randn(7, 3 * 2, generator=gen(4))  # (B, P*D), P = 3, D = 2
    assert torch.equal(params_to_last(vectors, (2,)), torch.stack(vectors.chunk(3, dim=-1), -1))


def test_gaussian_log_prob_equals_torch_normal():
    g = gen(1)
    params = torch.randn(3, 2, 4, 4, generator=g, dtype=F64)  # (B, 2*C, H, W): mean logits, log-scales
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=F64)
    mean, log_scale = params.chunk(2, dim=1)
    reference = Normal(torch.sigmoid(mean), log_scale.exp()).log_prob(x)
    log_p = Gaussian().log_prob(x, params_to_last(params, (1, 4, 4)))  # (B, C, H, W)
    torch.testing.assert_close(log_p, reference, rtol=1e-12, atol=1e-12)
    # log-scales below the floor are clamped to it
    params[:, 1] = -50.0
    reference = Normal(torch.sigmoid(mean), math.exp(Gaussian.min_log_scale)).log_prob(x)
    torch.testing.assert_close(Gaussian().log_prob(x, params_to_last(params, (1, 4, 4))), reference,
                               rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("likelihood", [Bernoulli(), Gaussian(), DiscretizedLogistic(256)], ids=lambda lik: lik.name)
def test_decoder_likelihood_broadcasts_x_over_leading_sample_dims(likelihood):
    # params (S, B, P*C, H, W) for S samples of z per image; x (B, C, H, W) is shared by all S
    g = gen(2)
    params = params_to_last(torch.randn(4, 3, likelihood.params_per_dim, 5, 5, generator=g, dtype=F64), (1, 5, 5))
    x = (torch.rand(3, 1, 5, 5, generator=g, dtype=F64) * 255).round() / 255
    if likelihood.input_kind == "binary":
        x = (x > 0.5).to(F64)
    per_sample = torch.stack([likelihood.log_prob(x, p) for p in params])  # (S, B, C, H, W)
    torch.testing.assert_close(likelihood.log_prob(x, params), per_sample, rtol=1e-12, atol=1e-12)
    assert sum_data_dims(per_sample, (1, 5, 5)).shape == (4, 3)


# --- 6. CVAE with a learned prior -------------------------------------------------------------------------
def test_cvae_learned_prior_kl_equals_monte_carlo():
    torch.manual_seed(0)
    model = build_model("cvae", DIGITS, {"latent_dim": 3, "hidden_dim": 32, "prior": "learned"})
    with torch.no_grad():  # move p(z|y) well away from N(0, I)
        model.prior_net[-1].bias.copy_(torch.tensor([1.0, -0.8, 0.5, 0.7, -0.6, 0.4]))
    x = torch.randint(0, 17, (6, 1, 8, 8), generator=gen(1)) / 16.0
    y = torch.tensor([0, 3, 3, 5, 9, 1])
    torch.manual_seed(2)
    kl = model.loss(x, y)["kl"].double()  # (B,)
    with torch.no_grad():
        mean_q, logvar_q = (t.double() for t in model.posterior(x, y))
        mean_p, logvar_p = (t.double() for t in model.prior(6, y))
    assert not torch.allclose(mean_p[1], mean_p[5])  # the prior depends on y
    estimate, se = _mc_kl(mean_q, logvar_q, mean_p, logvar_p)
    assert_within_se(estimate, se, kl, slack=1e-4)  # float32 model
    # the learned prior matters: the KL to N(0, I) is far from it
    assert torch.all((gaussian_kl(mean_q, logvar_q) - kl).abs() > 20 * se)


# --- 7. the VampPrior ------------------------------------------------------------------------------------
def test_gaussian_mixture_log_prob_equals_the_mean_of_its_component_densities():
    g = gen(0)
    means, logvars = torch.randn(7, 3, generator=g, dtype=F64), torch.randn(7, 3, generator=g, dtype=F64)
    z = 2 * torch.randn(4, 5, 3, generator=g, dtype=F64)  # (S, B, d)
    per_component = gaussian_log_prob(z.unsqueeze(-2), means, logvars)  # (S, B, K): direct, no expansion
    expected = torch.log(per_component.exp().mean(-1))
    torch.testing.assert_close(gaussian_mixture_log_prob(z, means, logvars), expected, rtol=1e-12, atol=1e-12)
    # float32 inputs under bf16 autocast: computed in float32, not bf16 (posterior-like scales)
    small = (z.float(), means.float(), (logvars - 3).float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = gaussian_mixture_log_prob(*small)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), gaussian_mixture_log_prob(*(t.double() for t in small)),
                               rtol=1e-5, atol=1e-3)


def test_gaussian_mixture_log_prob_with_far_components_is_the_nearest_one_and_stays_normal():
    """Components hundreds of nats away: the value is the nearest component's density / K, and no
    weight or gradient is a subnormal float (the slow path of this CPU's arithmetic)."""
    means = torch.tensor([[0.0, 0.0], [30.0, 0.0], [0.0, -40.0]], dtype=torch.float32)
    logvars = torch.full((3, 2), -1.0)
    z = torch.tensor([[0.3, -0.2], [0.1, 0.5]], requires_grad=True)  # (B, d), beside component 0
    value = gaussian_mixture_log_prob(z, means, logvars)
    nearest = gaussian_log_prob(z, means[0], logvars[0]) - math.log(3)
    torch.testing.assert_close(value, nearest, rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad(value.sum(), z)
    torch.testing.assert_close(grad, -(z - means[0]) * math.exp(1.0), rtol=1e-6, atol=1e-6)  # nearest's score
    tiny = torch.finfo(torch.float32).tiny
    assert not torch.any((grad != 0) & (grad.abs() < tiny))


def test_vampprior_samples_have_the_mixture_moments():
    """sample_prior picks a pseudo-input uniformly, then z ~ q(z | u_k): mean and second moment of
    the mixture, E z = mean_k m_k and E z^2 = mean_k (m_k^2 + v_k)."""
    torch.manual_seed(0)
    model = build_model("vae", TOY, {"latent_dim": 2, "hidden_dim": 16, "prior": "vamp", "pseudo_inputs": 4}).double()
    with torch.no_grad():
        model.encoder.head[-1].bias.copy_(torch.tensor([0.0, 0.0, -1.0, 0.5], dtype=F64))
        model.pseudo_input_logits.copy_(8 * torch.randn(4, *TOY.shape, generator=gen(4), dtype=F64))  # ~binary
        model.encoder.head[-1].weight.mul_(20.0)  # spread the components apart
        means, logvars = model.vamp_components()  # (K, d)
        z = model.sample_prior(200_000, generator=gen(5))  # (N, d)
    assert means.std(0).min() > 0.3  # the components differ
    for moment, target in [(z, means.mean(0)), (z**2, (means**2 + logvars.exp()).mean(0))]:
        estimate, se = mc_mean(moment)
        assert_within_se(estimate, se, target)


# --- 8. beta and the KL warm-up ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vae", "dvae", "cvae"])
def test_beta_and_kl_warmup_weight_only_the_training_loss(name):
    torch.manual_seed(0)
    beta, warmup = 2.5, 100
    model = build_model(name, DIGITS, {"latent_dim": 2, "hidden_dim": 16, "beta": beta, "kl_warmup_steps": warmup})
    x = torch.randint(0, 17, (4, 1, 8, 8), generator=gen(1)) / 16.0
    y = torch.tensor([0, 1, 2, 3]) if model.conditional else None
    for step, weight in [(0, 0.0), (10, 0.25), (50, 1.25), (100, beta), (250, beta), (None, beta)]:
        out = model.loss(x, y, step=step)
        assert weight == pytest.approx(beta * min(1.0, step / warmup) if step is not None else beta)
        torch.testing.assert_close(out["loss"], out["recon"] + weight * out["kl"], rtol=1e-6, atol=1e-5)
        bound = out["neg_dvae_bound"] if name == "dvae" else out["neg_elbo"]
        torch.testing.assert_close(bound, out["recon"] + out["kl"], rtol=0, atol=0)
    # without warm-up the weight is beta from the first step
    torch.manual_seed(0)
    model = build_model(name, DIGITS, {"latent_dim": 2, "hidden_dim": 16, "beta": 0.5})
    out = model.loss(x, y, step=0)
    torch.testing.assert_close(out["loss"], out["recon"] + 0.5 * out["kl"], rtol=1e-6, atol=1e-5)


# --- the one Gaussian mixture: its sampler against its moments and its density ------------------------
def test_the_mixture_sampler_has_the_mixture_moments_for_diagonal_and_full_components():
    from genzoo.distributions.mixture import (
        gaussian_mixture_log_prob,
        sample_gaussian_mixture,
    )

    g = torch.Generator().manual_seed(0)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    means = torch.tensor([[-3.0, 0.0], [0.0, 2.0], [4.0, -1.0]], dtype=torch.float64)
    stds = torch.tensor([[0.5, 1.0], [1.0, 0.3], [0.7, 0.7]], dtype=torch.float64)
    full = torch.diag_embed(stds)  # the same components as Cholesky factors
    n = 200_000
    for scales in (stds, full):
        z = sample_gaussian_mixture(n, weights, means, scales, torch.Generator().manual_seed(1))
        mean = (weights[:, None] * means).sum(0)
        second = (weights[:, None, None] * (torch.diag_embed(stds**2) + means[:, :, None] * means[:, None, :])).sum(0)
        torch.testing.assert_close(z.mean(0), mean, atol=0.02, rtol=0)
        torch.testing.assert_close(z.T @ z / n, second, atol=0.08, rtol=0)
    # given components, each draw comes from its own component: the same eps, shifted
    picked = sample_gaussian_mixture(4, weights, means, stds, torch.Generator().manual_seed(2),
                                     components=torch.tensor([2, 2, 0, 1]))
    eps = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(picked, means[[2, 2, 0, 1]] + stds[[2, 2, 0, 1]] * eps)
    # equal weights: the sampler's draws have the density's mean log-probability (its negative entropy)
    equal = torch.full((3,), 1 / 3, dtype=torch.float64)
    z = sample_gaussian_mixture(n, equal, means, stds, g)
    log_p = gaussian_mixture_log_prob(z, means, 2 * stds.log())
    reference = torch.logsumexp(torch.stack([torch.distributions.Normal(means[k], stds[k]).log_prob(z).sum(-1)
                                             for k in range(3)]), 0) - math.log(3)
    torch.testing.assert_close(log_p, reference)
