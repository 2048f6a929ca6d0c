"""The mixture of factor analysers: its Woodbury density against the dense Gaussian, EM's ascent, its
K = 1 fixed point against scikit-learn's factor analysis, additive statistics, sample moments."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from sklearn.decomposition import FactorAnalysis
from torch.distributions import MultivariateNormal

from genzoo.data.core import DataInfo
from genzoo.distributions.mixture import (
    SingularCovariance,
    factor_analyser_posterior,
    low_rank_gaussian_log_densities,
)
from genzoo.models.mixtures.mfa import MFA, MFAConfig, probabilistic_pca

VECTORS = DataInfo("toy", (6,), 0, "continuous", None)
IMAGES = DataInfo("tiny-images", (1, 2, 3), 0, "discrete", 256)


def random_mfa(info: DataInfo, components: int, rank: int, seed: int, **config) -> MFA:
    """An MFA with random parameters: well-separated means, unit-scale loadings, noise variances in [0.2, 1]."""
    g = torch.Generator().manual_seed(seed)
    d = info.dim
    model = MFA(MFAConfig(components=components, rank=rank, **config), info)
    weights = torch.softmax(torch.randn(components, generator=g, dtype=torch.float64), 0)
    model.set_parameters(weights, 3 * torch.randn(components, d, generator=g, dtype=torch.float64),
                         torch.randn(components, d, rank, generator=g, dtype=torch.float64),
                         0.2 + 0.8 * torch.rand(components, d, generator=g, dtype=torch.float64))
    return model


def dense_covariances(model: MFA) -> torch.Tensor:
    """W_k W_k^T + diag(Psi_k) (K, D, D)."""
    return model.loadings @ model.loadings.mT + torch.diag_embed(model.noise_variances)


def dense_log_densities(model: MFA, x: torch.Tensor) -> torch.Tensor:
    """log N(x_n; mu_k, C_k) (N, K) by torch's dense multivariate normal."""
    x = x.reshape(len(x), -1).double()
    return torch.stack([MultivariateNormal(mu, c).log_prob(x) for mu, c in zip(model.means, dense_covariances(model))], -1)


def fit(model: MFA, x: torch.Tensor, iterations: int, seed: int = 0, tol: float = 0.0) -> list[float]:
    """initialize_fit, then EM; the objective before each update."""
    model.initialize_fit(x, torch.Generator().manual_seed(seed))
    objectives = []
    for _ in range(iterations):
        totals = model.statistics(x)
        objectives.append(model.objective(totals, len(x)))
        model.update(totals)
        if len(objectives) > 1 and abs(objectives[-1] - objectives[-2]) <= tol:
            break
    return objectives


# --- the density -----------------------------------------------------------------------------------
def test_woodbury_log_density_and_latent_posterior_equal_the_dense_gaussian():
    model = random_mfa(VECTORS, components=3, rank=2, seed=0)
    x = 2 * torch.randn(7, VECTORS.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    low_rank = low_rank_gaussian_log_densities(x, model.means, model.loadings, model.noise_variances)
    torch.testing.assert_close(low_rank, dense_log_densities(model, x), rtol=0, atol=1e-10)
    # E[z | x] = W^T C^-1 (x - mu), Cov[z | x] = I - W^T C^-1 W (Gaussian conditioning on the joint of z and x)
    _, z_mean, z_cov = factor_analyser_posterior(x, model.means, model.loadings, model.noise_variances)
    c_inv_w = torch.linalg.solve(dense_covariances(model), model.loadings)  # (K, D, R)
    expected_mean = torch.einsum("kdr,nkd->nkr", c_inv_w, x.unsqueeze(1) - model.means)
    torch.testing.assert_close(z_mean, expected_mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(z_cov, torch.eye(2, dtype=torch.float64) - model.loadings.mT @ c_inv_w, rtol=0, atol=1e-10)


@pytest.mark.parametrize("info, kind", [(VECTORS, "exact"), (IMAGES, "lower_bound")])
def test_log_likelihood_is_the_log_sum_exp_of_weighted_components(info, kind):
    model = random_mfa(info, components=4, rank=2, seed=2)
    x = torch.rand(9, *info.shape, generator=torch.Generator().manual_seed(3))
    result = model.log_likelihood(x)
    expected = torch.logsumexp(dense_log_densities(model, x) + model.weights.log(), -1)
    torch.testing.assert_close(result.value, expected, rtol=0, atol=1e-10)
    assert result.kind == kind
    assert (result.variance == 0).all() if kind == "exact" else result.variance is None


# --- EM --------------------------------------------------------------------------------------------
def test_em_never_decreases_the_log_likelihood():
    truth = random_mfa(VECTORS, components=3, rank=2, seed=4)
    x = truth.sample(400, generator=torch.Generator().manual_seed(5))
    objectives = fit(MFA(MFAConfig(components=3, rank=2), VECTORS), x, iterations=30)
    for before, after in itertools.pairwise(objectives):
        assert after >= before - 1e-10 * abs(before), (before, after)
    assert objectives[-1] > objectives[0] + 1e-3  # it moved


def expected_complete_log_likelihood(totals: dict, logits, augmented, log_noise_variances) -> torch.Tensor:
    """Q = sum_n sum_k r_nk E_z[log pi_k + log N(x_n; W~_k z~, Psi_k)] from the E-step's sums, with
    E[(x - W~ z~)_d^2] = x_d^2 - 2 W~_d E[z~] x_d + W~_d E[z~ z~^T] W~_d^T."""
    count, sum_x_z, sum_z_z, sum_xx = totals["count"], totals["sum_x_z"], totals["sum_z_z"], totals["sum_xx"]
    squares = sum_xx - 2 * (augmented * sum_x_z).sum(-1) + torch.einsum("kdi,kij,kdj->kd", augmented, sum_z_z, augmented)
    gaussian = -0.5 * (count.unsqueeze(-1) * (log_noise_variances + math.log(2 * math.pi)) + squares
                       / log_noise_variances.exp())
    return (count * torch.log_softmax(logits, 0)).sum() + gaussian.sum()


def test_the_m_step_maximises_the_expected_complete_log_likelihood():
    """update(totals) is the argmax of EM's Q: its gradient there is zero and any small step lowers it."""
    model = random_mfa(VECTORS, components=3, rank=2, seed=19, reg_covar=0.0)
    x = random_mfa(VECTORS, components=3, rank=2, seed=20).sample(200, generator=torch.Generator().manual_seed(21))
    totals = model.statistics(x)
    model.update(totals)
    point = [model.weights.log(), torch.cat([model.loadings, model.means.unsqueeze(-1)], -1), model.noise_variances.log()]
    point = [p.clone().requires_grad_() for p in point]
    q = expected_complete_log_likelihood(totals, *point)
    for gradient in torch.autograd.grad(q, point):
        assert gradient.abs().max() < 1e-8 * len(x), gradient
    g = torch.Generator().manual_seed(22)
    for _ in range(5):
        moved = [p.detach() + 1e-3 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in point]
        assert expected_complete_log_likelihood(totals, *moved) < q


def test_one_component_converges_to_scikit_learns_maximum_likelihood_factor_analysis():
    g = torch.Generator().manual_seed(6)
    truth = random_mfa(VECTORS, components=1, rank=2, seed=7)
    x = truth.sample(500, generator=g).double()
    model = MFA(MFAConfig(components=1, rank=2, reg_covar=0.0), VECTORS)
    fit(model, x, iterations=5000, tol=1e-13)
    ours = model.log_likelihood(x).value.mean().item()
    fa = FactorAnalysis(n_components=2, tol=1e-10, max_iter=5000, svd_method="lapack").fit(x.numpy())
    theirs = fa.score(x.numpy())
    assert ours == pytest.approx(theirs, rel=1e-4)
    torch.testing.assert_close(dense_covariances(model)[0], torch.from_numpy(fa.get_covariance()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.means[0], x.mean(0), rtol=0, atol=1e-8)  # the ML mean is the sample mean
    assert model.weights.item() == pytest.approx(1.0)


def test_statistics_add_over_halves_so_two_processes_fit_as_one():
    model = random_mfa(VECTORS, components=3, rank=2, seed=8)
    x = random_mfa(VECTORS, components=3, rank=2, seed=9).sample(101, generator=torch.Generator().manual_seed(10))
    whole, first, second = model.statistics(x), model.statistics(x[:40]), model.statistics(x[40:])
    assert whole.keys() == {"count", "sum_x_z", "sum_z_z", "sum_xx", "log_likelihood"}
    for key, value in whole.items():
        assert value.dtype == torch.float64
        torch.testing.assert_close(first[key] + second[key], value, rtol=1e-12, atol=1e-12)
    split = random_mfa(VECTORS, components=3, rank=2, seed=8)
    model.update(whole)
    split.update({key: first[key] + second[key] for key in whole})
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(dict(split.named_buffers())[name], buffer, rtol=1e-10, atol=1e-12)


def test_one_cluster_starts_as_the_probabilistic_pca_of_the_data():
    """Tipping & Bishop: W W^T has eigenvalues lambda_j - sigma^2 (sigma^2 the mean discarded one) and
    W W^T + Psi has the sample variances on its diagonal; the mean is the sample mean."""
    x = random_mfa(VECTORS, components=1, rank=3, seed=11).sample(300, generator=torch.Generator().manual_seed(12)).double()
    model = MFA(MFAConfig(components=1, rank=2, reg_covar=1e-3), VECTORS)
    model.initialize_fit(x, torch.Generator().manual_seed(0))
    covariance = torch.cov(x.T, correction=0)
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0)  # descending
    sigma2 = eigenvalues[2:].mean()
    ww = model.loadings[0] @ model.loadings[0].T
    torch.testing.assert_close(torch.linalg.eigvalsh(ww).flip(0)[:2], eigenvalues[:2] - sigma2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ww.diagonal() + model.noise_variances[0], covariance.diagonal() + 1e-3,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.means[0], x.mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, d", [(40, 6), (5, 12)], ids=["covariance", "gram"])
def test_probabilistic_pca_from_either_side_of_the_data_matrix(n, d):
    """Fewer examples than dimensions goes through the N x N Gram matrix: the same W W^T and residuals."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(23), dtype=torch.float64) * torch.linspace(0.5, 3, d)
    mean, loadings, residual = probabilistic_pca(x, 2)
    covariance = torch.cov(x.T, correction=0)
    eigenvalues, v = torch.linalg.eigh(covariance)  # ascending
    sigma2 = eigenvalues[:-2].mean()
    expected = v[:, -2:] @ torch.diag(eigenvalues[-2:] - sigma2) @ v[:, -2:].T  # W W^T = U_R (Lambda_R - sigma^2) U_R^T
    torch.testing.assert_close(loadings @ loadings.T, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(residual, covariance.diagonal() - expected.diagonal(), rtol=0, atol=1e-10)
    torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=1e-12)


def test_a_cluster_of_r_examples_or_fewer_takes_the_whole_datas_pca_and_the_start_is_deterministic():
    g = torch.Generator().manual_seed(13)
    outlier = torch.full((1, VECTORS.dim), 100.0, dtype=torch.float64)
    x = torch.cat([torch.randn(60, VECTORS.dim, generator=g, dtype=torch.float64), outlier])
    model, again, single = (MFA(MFAConfig(components=k, rank=2), VECTORS) for k in (2, 2, 1))
    model.initialize_fit(x, torch.Generator().manual_seed(0))
    again.initialize_fit(x, torch.Generator().manual_seed(0))
    single.initialize_fit(x, torch.Generator().manual_seed(0))
    alone = int((model.means - outlier).norm(dim=-1).argmin())
    torch.testing.assert_close(model.means[alone], outlier[0])
    torch.testing.assert_close(model.loadings[alone] @ model.loadings[alone].T, single.loadings[0] @ single.loadings[0].T)
    torch.testing.assert_close(model.noise_variances[alone], single.noise_variances[0])
    for (_, a), (_, b) in zip(model.named_buffers(), again.named_buffers()):
        assert torch.equal(a, b)


# --- sampling --------------------------------------------------------------------------------------
def test_samples_have_the_mixtures_mean_and_covariance():
    info = DataInfo("toy3", (3,), 0, "continuous", None)
    model = random_mfa(info, components=3, rank=1, seed=14)
    n = 200_000
    x = model.sample(n, generator=torch.Generator().manual_seed(15))
    assert x.shape == (n, 3) and x.dtype == torch.float32
    x = x.double()
    w, mu = model.weights, model.means
    mean = w @ mu  # sum pi_k mu_k
    covariance = torch.einsum("k,kij->ij", w, dense_covariances(model) + mu.unsqueeze(-1) * mu.unsqueeze(-2)) \
        - torch.outer(mean, mean)  # sum pi_k (C_k + mu_k mu_k^T) - m m^T
    assert ((x.mean(0) - mean).abs() <= 5 * (covariance.diagonal() / n).sqrt()).all()
    centred = x - x.mean(0)
    products = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (n, D, D)
    standard_errors = products.std(0) / n**0.5
    assert ((products.mean(0) - covariance).abs() <= 5 * standard_errors).all()


def test_image_samples_have_the_image_shape_and_repeat_with_the_generator():
    model = random_mfa(IMAGES, components=2, rank=2, seed=16)
    first = model.sample(5, generator=torch.Generator().manual_seed(17))
    assert first.shape == (5, 1, 2, 3) and first.dtype == torch.float32
    assert torch.equal(first, model.sample(5, generator=torch.Generator().manual_seed(17)))


# --- bad configs and inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    ({"rank": 6}, "MFAConfig.rank=6 must be below the data's dimension 6"),
    ({"rank": 0}, "MFAConfig.rank=0 must be > 0"),
    ({"components": 0}, "MFAConfig.components=0 must be > 0"),
    ({"reg_covar": -1.0}, "MFAConfig.reg_covar=-1.0 must be >= 0"),
])
def test_bad_configs_name_the_field(config, message):
    with pytest.raises(ValueError, match=message):
        MFA(MFAConfig(**config), VECTORS)


def test_more_components_than_examples_is_refused_at_the_start():
    model = MFA(MFAConfig(components=10, rank=2), VECTORS)
    with pytest.raises(ValueError, match="components=10 exceeds the 5 training examples"):
        model.initialize_fit(torch.randn(5, VECTORS.dim), torch.Generator().manual_seed(0))


def test_a_constant_dimension_without_reg_covar_is_a_singular_covariance():
    x = torch.randn(50, VECTORS.dim, generator=torch.Generator().manual_seed(18))
    x[:, 0] = 0.5
    model = MFA(MFAConfig(components=1, rank=2, reg_covar=0.0), VECTORS)
    with pytest.raises(SingularCovariance, match="raise reg_covar"):
        model.initialize_fit(x, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("x, message", [
    (torch.zeros(3, 5), r"mfa was built for vectors of shape \(B, 6\)"),
    (torch.full((3, 6), float("nan")), "NaN or infinite"),
])
def test_bad_inputs_are_refused_in_one_line(x, message):
    with pytest.raises(ValueError, match=message):
        MFA(MFAConfig(components=2, rank=2), VECTORS).log_likelihood(x)
