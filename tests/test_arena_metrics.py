"""The arena's metrics against closed forms and direct computations: Gaussian KL, sliced W2 of a
translation, the population MMD of two Gaussians, hand-counted histograms, grid integrals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from genzoo.data.toy2d import get_toy2d, splits
from genzoo.evaluate.arena import arena_bandwidth, ARENA_METRICS, arena_sample_metrics, density_grid, grid_mass, histogram2d, histogram_kl, kl_divergence, median_bandwidth, mmd2, projection_directions, sliced_wasserstein


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- kl_divergence -------------------------------------------------------------------------------
def _gaussian_kl(m1, s1, m2, s2) -> float:
    """KL(N(m1, S1) || N(m2, S2)) = (tr(S2^-1 S1) + d^T S2^-1 d - k + ln det S2 / det S1) / 2, d = m2 - m1."""
    s2_inv = np.linalg.inv(s2)
    d = m2 - m1
    return 0.5 * (np.trace(s2_inv @ s1) + d @ s2_inv @ d - len(m1) + np.log(np.linalg.det(s2) / np.linalg.det(s1)))


def test_kl_divergence_matches_gaussian_closed_form_and_its_standard_error_is_calibrated():
    m1, s1 = np.array([0.0, 1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    m2, s2 = np.array([0.5, 0.0]), np.array([[2.0, -0.4], [-0.4, 1.0]])
    p = torch.distributions.MultivariateNormal(torch.tensor(m1), torch.tensor(s1))
    q = torch.distributions.MultivariateNormal(torch.tensor(m2), torch.tensor(s2))
    z = torch.randn(40_000, 2, generator=_generator(), dtype=torch.float64)
    x = torch.tensor(m1) + z @ torch.linalg.cholesky(torch.tensor(s1)).T  # (N, 2) ~ N(m1, S1)
    kl, std_err = kl_divergence(p.log_prob(x), q.log_prob(x))
    assert abs(kl - _gaussian_kl(m1, s1, m2, s2)) < 4 * std_err
    # the standard error predicts the spread of independent estimates: 400 estimates from 100 points each
    estimates, std_errs = zip(*(kl_divergence(p.log_prob(b), q.log_prob(b)) for b in x.split(100)))
    assert np.std(estimates, ddof=1) == pytest.approx(np.mean(std_errs), rel=0.15)


def test_kl_divergence_of_the_true_density_is_exactly_zero():
    spec = get_toy2d("two-moons")
    log_p = spec.log_prob(spec.sample(1000, _generator()))
    assert kl_divergence(log_p, log_p.clone()) == (0.0, 0.0)
    # a model that gives a test point zero density is infinitely far
    assert kl_divergence(log_p, log_p.clone().index_fill(0, torch.tensor([3]), -math.inf)) == (math.inf, math.inf)


# --- sliced_wasserstein --------------------------------------------------------------------------
def test_sliced_wasserstein_of_identical_sets_is_zero_and_the_directions_are_fixed():
    a = torch.randn(500, 2, generator=_generator())
    assert sliced_wasserstein(a, a.clone()) == 0.0
    assert sliced_wasserstein(a, a[torch.randperm(500, generator=_generator(1))]) == 0.0  # order is irrelevant
    directions = projection_directions(64, 3, seed=5)
    assert torch.equal(directions, projection_directions(64, 3, seed=5))
    assert torch.allclose(directions.norm(dim=1), torch.ones(64, dtype=torch.float64))
    b = torch.randn(400, 2, generator=_generator(2))
    assert sliced_wasserstein(a, b, seed=3) == sliced_wasserstein(a, b, seed=3) != sliced_wasserstein(a, b, seed=4)


@pytest.mark.parametrize("dim", [2, 3])
def test_sliced_wasserstein_of_a_translation(dim):
    a = torch.randn(50, dim, generator=_generator(), dtype=torch.float64)
    v = torch.tensor([1.5, -0.5, 2.0][:dim], dtype=torch.float64)
    # projection keeps the order, so each 1-D W2^2 is (theta . v)^2 exactly
    theta = projection_directions(256, dim, seed=0)
    assert sliced_wasserstein(a, a + v) ** 2 == pytest.approx((theta @ v).pow(2).mean().item(), rel=1e-12)
    # and over uniform directions E (theta . v)^2 = |v|^2 / D; the MC error with 20,000 directions is < 1%
    assert sliced_wasserstein(a, a + v, num_projections=20_000) ** 2 == pytest.approx(v.dot(v).item() / dim, rel=0.02)


def test_sliced_wasserstein_of_two_point_masses_with_unequal_counts():
    p, q = torch.tensor([1.0, 2.0]), torch.tensor([-2.0, 0.0])
    a, b = p.expand(7, 2), q.expand(5, 2)
    expected = math.sqrt((p - q).pow(2).sum().item() / 2)
    assert sliced_wasserstein(a, b, num_projections=20_000) == pytest.approx(expected, rel=0.01)


def test_sliced_wasserstein_with_unequal_counts_is_exact_and_symmetric():
    a = torch.randn(40, 2, generator=_generator(1))
    b = torch.randn(30, 2, generator=_generator(2)) + 0.5
    assert sliced_wasserstein(a, b) == sliced_wasserstein(b, a)
    # a repeated twice is the same empirical distribution, so the distance must not change: with
    # unequal counts on both sides (80 vs 30 and 40 vs 30), and from equal counts (40 vs 40,
    # sorted pairs) to unequal ones (80 vs 40, the common grid of quantile levels)
    assert sliced_wasserstein(torch.cat([a, a]), b) == pytest.approx(sliced_wasserstein(a, b), rel=1e-12)
    c = torch.randn(40, 2, generator=_generator(3))
    assert sliced_wasserstein(torch.cat([a, a]), c) == pytest.approx(sliced_wasserstein(a, c), rel=1e-12)
    # in 1-D the only directions are +-1: SW2 is W2, integrated here on a grid of quantile levels
    # fine enough (multiples of 1 / (7 * 5 * 8)) that the empirical quantile functions are exact on it
    x, y = np.random.default_rng(0).normal(size=7), np.random.default_rng(1).normal(size=5) * 2
    t = (np.arange(280) + 0.5) / 280
    w2 = np.sqrt(np.mean((np.quantile(x, t, method="inverted_cdf") - np.quantile(y, t, method="inverted_cdf")) ** 2))
    assert sliced_wasserstein(torch.tensor(x)[:, None], torch.tensor(y)[:, None]) == pytest.approx(w2, rel=1e-12)


# --- mmd2 ----------------------------------------------------------------------------------------
def _mmd2_direct(a: np.ndarray, b: np.ndarray, bandwidth: float, unbiased: bool = True) -> float:
    """MMD^2 from the full kernel matrices; unbiased drops the diagonals k(x_i, x_i) = 1 (else the V-statistic)."""
    k_aa, k_bb, k_ab = (np.exp(-cdist(x, y, "sqeuclidean") / (2 * bandwidth**2)) for x, y in [(a, a), (b, b), (a, b)])
    if not unbiased:
        return k_aa.mean() + k_bb.mean() - 2 * k_ab.mean()
    n, m = len(a), len(b)
    k_aa_off, k_bb_off = (k_aa.sum() - n) / (n * (n - 1)), (k_bb.sum() - m) / (m * (m - 1))  # k(x, x) = 1
    return k_aa_off + k_bb_off - 2 * k_ab.mean()


def test_mmd2_matches_a_direct_computation_and_blocking_changes_nothing():
    a = torch.randn(60, 3, generator=_generator(1), dtype=torch.float64)
    b = torch.randn(45, 3, generator=_generator(2), dtype=torch.float64) * 1.3 + 0.2
    direct = _mmd2_direct(a.numpy(), b.numpy(), 1.7)
    assert mmd2(a, b, 1.7) == pytest.approx(direct, rel=1e-10)
    assert mmd2(a, b, 1.7, block_size=7) == pytest.approx(mmd2(a, b, 1.7, block_size=1000), rel=1e-12)
    assert mmd2(a, b, 1.7) == pytest.approx(mmd2(b, a, 1.7), rel=1e-12)


def _population_mmd2(shift: float, std: float, bandwidth: float, dim: int) -> float:
    """MMD^2 between N(0, std^2 I) and N(shift e_1, std^2 I) for the RBF kernel, in closed form.

    E k(x, y) for x - y ~ N(mu, 2 std^2 I) is (h^2 / (h^2 + 2 std^2))^(D/2) exp(-|mu|^2 / (2 (h^2 + 2 std^2))).
    """
    h2, s2 = bandwidth**2, 2 * std**2
    return 2 * (h2 / (h2 + s2)) ** (dim / 2) * (1 - math.exp(-(shift**2) / (2 * (h2 + s2))))


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_mmd2_is_unbiased_for_the_population_value(shift):
    # 100 independent estimates from 100 vs 100 points; their mean is the population MMD^2
    estimates, v_statistics = [], []
    for seed in range(100):
        a = torch.randn(100, 2, generator=_generator(2 * seed), dtype=torch.float64)
        b = torch.randn(100, 2, generator=_generator(2 * seed + 1), dtype=torch.float64) + torch.tensor([shift, 0.0])
        estimates.append(mmd2(a, b, bandwidth=1.0))
        v_statistics.append(_mmd2_direct(a.numpy(), b.numpy(), 1.0, unbiased=False))
    mean, std_err = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(len(estimates))
    population = _population_mmd2(shift, 1.0, 1.0, 2)
    assert abs(mean - population) < 4 * std_err
    # the check has power: the biased V-statistic, about (2 - E k_aa - E k_bb) / N = 0.015 too large, fails it
    assert abs(np.mean(v_statistics) - population) > 5 * std_err
    if shift:
        assert mean > 10 * std_err  # a shift of half a std is clearly detected


def test_median_bandwidth():
    x = torch.randn(301, 2, generator=_generator(), dtype=torch.float64)
    assert median_bandwidth(x) == pytest.approx(float(np.median(pdist(x.numpy()))), rel=1e-12)
    # beyond max_points, the median over a fixed random subset
    subset = x[torch.randperm(301, generator=_generator(7))[:100]]
    expected = float(np.median(pdist(subset.numpy())))
    assert median_bandwidth(x, max_points=100, seed=7) == pytest.approx(expected, rel=1e-12)


def test_arena_bandwidth_is_the_median_heuristic_on_the_training_split():
    train = splits("two-moons")["train"]
    assert arena_bandwidth("two-moons") == median_bandwidth(train, max_points=2000, seed=0)
    assert arena_bandwidth("two-moons") == arena_bandwidth("two-moons")


# --- histograms ----------------------------------------------------------------------------------
def test_histogram_counts_outside_points_in_the_edge_cells():
    points = torch.tensor([[0.5, 0.5], [1.5, 0.5], [1.5, 0.2], [5.0, 5.0], [-3.0, 1.9], [2.0, 0.0]])
    # extent (0, 2), 2 x 2 cells, indexed [ix, iy]; (5, 5) and the edge point (2, 0) are clamped
    expected = torch.tensor([[1.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    assert torch.equal(histogram2d(points, (0.0, 2.0), bins=2), expected)
    with pytest.raises(ValueError, match="NaN"):
        histogram2d(torch.tensor([[0.5, math.nan]]), (0.0, 2.0), bins=2)


def test_histogram_kl():
    reference = torch.tensor([[0.5, 0.5]] * 3 + [[1.5, 1.5]])  # cells (0, 0): 3, (1, 1): 1
    samples = torch.tensor([[0.5, 0.5]] * 2)  # (0, 0): 2; it misses (1, 1)
    assert histogram_kl(reference, reference.clone(), (0.0, 2.0), bins=2) == 0.0
    # by hand with pseudo-count 0.5: P = (3.5, .5, .5, 1.5) / 6, Q = (2.5, .5, .5, .5) / 4
    p = np.array([3.5, 0.5, 0.5, 1.5]) / 6
    q = np.array([2.5, 0.5, 0.5, 0.5]) / 4
    kl = histogram_kl(reference, samples, (0.0, 2.0), bins=2, pseudo_count=0.5)
    assert kl == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)
    assert 0 < kl < math.inf
    # no smoothing would make a missed cell infinitely costly: refused
    with pytest.raises(ValueError, match="pseudo_count must be positive"):
        histogram_kl(reference, samples, (0.0, 2.0), bins=2, pseudo_count=0.0)


# --- density grids -------------------------------------------------------------------------------
def test_density_grid_orientation_and_cell_centres():
    log_density, xs, ys = density_grid(lambda x: x[:, 0] + 10 * x[:, 1], (-1.0, 1.0), resolution=4)
    assert torch.allclose(xs, torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    assert torch.equal(xs, ys)
    # log_density[i, j] is at (xs[j], ys[i])
    assert torch.allclose(log_density, xs[None, :] + 10 * ys[:, None])


def test_grid_mass_integrates_a_gaussian_and_a_uniform_density():
    def standard_normal(x):
        return -x.double().pow(2).sum(1) / 2 - math.log(2 * math.pi)

    log_density, _, _ = density_grid(standard_normal, (-8.0, 8.0), resolution=160, dtype=torch.float64)
    assert grid_mass(log_density, (-8.0, 8.0)) == pytest.approx(1.0, abs=1e-12)
    # the grid must cover the mass: on [-1, 1]^2 the standard normal has (erf(1 / sqrt 2))^2 of it
    log_density, _, _ = density_grid(standard_normal, (-1.0, 1.0), resolution=200, dtype=torch.float64)
    assert grid_mass(log_density, (-1.0, 1.0)) == pytest.approx(math.erf(1 / math.sqrt(2)) ** 2, rel=1e-5)
    uniform = torch.full((7, 7), -math.log(9.0), dtype=torch.float64)
    assert grid_mass(uniform, (0.0, 3.0)) == pytest.approx(1.0, rel=1e-12)


# --- the arena -----------------------------------------------------------------------------------
def test_arena_sample_metrics_report_their_settings_and_punish_a_missed_mode():
    test = splits("eight-gaussians")["test"][:4000]
    spec = get_toy2d("eight-gaussians")
    good = spec.sample(4000, _generator(1))
    # a model that never visits the Gaussian at angle 0 (points within pi/8 of it): its mass goes to the others
    seven = spec.sample(8000, _generator(2))
    seven = seven[torch.atan2(seven[:, 1], seven[:, 0]).abs() > math.pi / 8][:4000]
    scores = {name: arena_sample_metrics("eight-gaussians", x, test) for name, x in [("good", good), ("seven", seven)]}
    settings = {"num_projections", "bandwidth", "bins", "pseudo_count", "num_samples", "num_test"}
    assert set(scores["good"]) == {*ARENA_METRICS, *settings}
    assert scores["good"]["bandwidth"] == arena_bandwidth("eight-gaussians")
    assert (scores["good"]["num_samples"], scores["good"]["num_test"]) == (4000, 4000)
    assert scores["seven"]["sliced_wasserstein"] > 3 * scores["good"]["sliced_wasserstein"]
    assert scores["seven"]["mmd2"] > 3 * abs(scores["good"]["mmd2"])
    # asked for one metric, the arena computes that one (MMD^2 is the slow one) with its own setting
    alone = arena_sample_metrics("eight-gaussians", good, test, ("sliced_wasserstein",))
    assert alone == {"sliced_wasserstein": scores["good"]["sliced_wasserstein"], "num_projections":
                     scores["good"]["num_projections"], "num_samples": 4000, "num_test": 4000}
    with pytest.raises(ValueError, match="unknown arena metric.* fid: choose from sliced_wasserstein"):
        arena_sample_metrics("eight-gaussians", good, test, ("fid",))
    # the histogram KL of a perfect sampler is far from 0 at 4,000 points (about 0.35 nats, +-0.04
    # between seeds); the missed eighth of the mass adds about 0.3
    assert scores["seven"]["histogram_kl_nats"] > scores["good"]["histogram_kl_nats"] + 0.15
