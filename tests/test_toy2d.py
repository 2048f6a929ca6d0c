"""The 2-D arena densities: each integrates to 1, its sampler draws from it, its entropy is right,
and its log-density agrees with an independent computation (scipy, direct quadrature)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from genzoo.data.toy2d import GAUSSIANS_RADIUS, GAUSSIANS_STD, get_toy2d, log_prob_two_moons, MOONS_SHIFT, RINGS_NOISE, RINGS_RADII, sample_checkerboard, sample_two_moons, SPLIT_SIZES, splits, TOY2D
from genzoo.evaluate.arena import density_grid, grid_mass

NAMES = sorted(TOY2D)


def _generator(seed: int = 1234) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- registry and splits -------------------------------------------------------------------------
def test_registry_names_and_unknown_name():
    assert NAMES == ["checkerboard", "eight-gaussians", "rings", "two-moons"]
    assert all(spec.name == name and spec.description for name, spec in TOY2D.items())
    valid = "checkerboard, eight-gaussians, rings, two-moons"
    with pytest.raises(ValueError, match=f"unknown 2-D density 'moons'; choose one of: {valid}$"):
        splits("moons")


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_fixed_distinct_and_float32(name):
    first, second = splits(name), splits(name)
    assert {split: tuple(x.shape) for split, x in first.items()} == {s: (n, 2) for s, n in SPLIT_SIZES.items()}
    assert all(x.dtype == torch.float32 for x in first.values())
    assert all(torch.equal(first[s], second[s]) for s in SPLIT_SIZES)  # the same points on every call
    # each split has its own seed: the first test points are not the first training points
    assert not torch.equal(first["train"][:10_000], first["test"])
    assert not torch.equal(first["valid"], first["test"])


# --- normalisation and goodness of fit -----------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one_on_its_extent(name):
    spec = get_toy2d(name)
    log_density, _, _ = density_grid(spec.log_prob, spec.extent, resolution=360, dtype=torch.float64)
    if name == "checkerboard":
        # 360 cells over [-4, 4]: 45 per 2x2 square side, no cell centre on an edge, so the midpoint rule is exact
        assert grid_mass(log_density, spec.extent) == pytest.approx(1.0, abs=1e-12)
    else:
        # the extent holds all but < 1e-6 of the mass; the midpoint rule is far more accurate than that
        assert grid_mass(log_density, spec.extent) == pytest.approx(1.0, abs=1e-5)


def _chi_square_pvalue(name: str, sample, n: int = 20_000, coarse: int = 12, fine: int = 24) -> float:
    """p-value of Pearson's chi-square test of n draws of ``sample`` against density ``name``.

    The extent is cut into coarse x coarse cells; a cell's expected count is n times its mass, the
    midpoint rule on fine x fine sub-cells. Cells expecting fewer than 5 points are pooled with the
    outside of the box into one more cell.
    """
    spec = get_toy2d(name)
    lo, hi = spec.extent
    log_density, _, _ = density_grid(spec.log_prob, spec.extent, resolution=coarse * fine, dtype=torch.float64)
    sub_cell_area = ((hi - lo) / (coarse * fine)) ** 2
    mass = (log_density.exp().reshape(coarse, fine, coarse, fine).sum(dim=(1, 3)) * sub_cell_area).numpy()  # [iy, ix]
    x = sample(n, _generator()).double().numpy()
    edges = np.linspace(lo, hi, coarse + 1)
    counts, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=[edges, edges])  # [iy, ix]; points outside are dropped
    expected, observed = n * mass.ravel(), counts.ravel()
    kept = expected >= 5
    expected, observed = expected[kept], observed[kept]
    pooled_expected, pooled_observed = n - expected.sum(), n - observed.sum()
    if pooled_expected >= 5:
        expected, observed = np.append(expected, pooled_expected), np.append(observed, pooled_observed)
    else:  # too little mass left to stand alone (checkerboard: none): merge it into the last cell
        expected[-1] += pooled_expected
        observed[-1] += pooled_observed
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize("name", NAMES)
def test_samples_follow_the_density(name):
    assert _chi_square_pvalue(name, get_toy2d(name).sample) > 1e-3


def _rings_with_equal_ring_probabilities(n, generator):
    radius = torch.randint(1, 5, (n, 1), generator=generator).double()  # uniform, not proportional to R
    angle = 2 * math.pi * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    circle = radius * torch.cat([angle.cos(), angle.sin()], dim=1)
    return circle + RINGS_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(
    "name, wrong_sampler",
    [
        ("rings", _rings_with_equal_ring_probabilities),
        ("two-moons", lambda n, g: sample_two_moons(n, g) - torch.tensor(MOONS_SHIFT)),  # the shift forgotten
        ("checkerboard", lambda n, g: (sample_checkerboard(n, g) + torch.tensor([6.0, 0.0])) % 8 - 4),  # light squares
    ],
)
def test_goodness_of_fit_rejects_a_wrong_sampler(name, wrong_sampler):
    assert _chi_square_pvalue(name, wrong_sampler) < 1e-10


# --- entropy -------------------------------------------------------------------------------------
def test_entropy_constants_match_quadrature():
    # the documented recipe: -integral p log p by the midpoint rule, 240 x 240 cells over [-6, 6]^2
    for name in ["eight-gaussians", "two-moons", "rings"]:
        spec = get_toy2d(name)
        log_density, _, _ = density_grid(spec.log_prob, (-6.0, 6.0), resolution=240, dtype=torch.float64)
        entropy = -(log_density.exp() * log_density).sum().item() * 0.05**2
        assert spec.entropy == pytest.approx(entropy, abs=1e-9), name
    assert get_toy2d("checkerboard").entropy == math.log(32)


@pytest.mark.parametrize("name", NAMES)
def test_entropy_is_minus_expected_log_density(name):
    spec = get_toy2d(name)
    neg_log_p = -spec.log_prob(spec.sample(20_000, _generator()))
    std_err = neg_log_p.std().item() / math.sqrt(len(neg_log_p))
    if name == "checkerboard":  # uniform: -log p is ln 32 at every sample
        assert torch.all(neg_log_p == spec.entropy)
    else:
        assert abs(neg_log_p.mean().item() - spec.entropy) < 4 * std_err


# --- log-densities against independent computations ----------------------------------------------
def test_eight_gaussians_matches_scipy_mixture():
    x = torch.randn(200, 2, generator=_generator(), dtype=torch.float64) * 3
    angles = np.arange(8) * np.pi / 4
    means = GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    components = [stats.multivariate_normal(m, GAUSSIANS_STD**2 * np.eye(2)).logpdf(x.numpy()) for m in means]
    expected = special.logsumexp(np.stack(components), axis=0) - np.log(8)
    np.testing.assert_allclose(get_toy2d("eight-gaussians").log_prob(x).numpy(), expected, rtol=0, atol=1e-10)


def test_checkerboard_parity_is_ffjords():
    # FFJORD's recipe: x1 ~ U[-2, 2); x2 ~ U[0, 1) minus 0 or 2; x2 += floor(x1) mod 2; scale by 2
    g = _generator()
    x1 = 4 * torch.rand(10_000, generator=g, dtype=torch.float64) - 2
    x2 = torch.rand(10_000, generator=g, dtype=torch.float64) - 2 * torch.randint(0, 2, (10_000,), generator=g)
    x2 = x2 + torch.floor(x1).remainder(2)
    ffjord = 2 * torch.stack([x1, x2], dim=1)
    log_p = get_toy2d("checkerboard").log_prob(ffjord)
    assert torch.all(log_p == -math.log(32))
    # and the light squares, outside the box, and the half-open upper edge have zero density
    outside = torch.tensor([[1.0, 3.0], [-3.0, -1.0], [4.5, 0.5], [4.0, 0.5], [0.5, 4.0], [-4.0, -4.0]])
    assert get_toy2d("checkerboard").log_prob(outside).tolist() == [-math.inf] * 5 + [-math.log(32)]


def test_two_moons_quadrature_is_converged():
    # 128 Gauss-Legendre nodes against 512 on a grid that reaches beyond the extent
    centres = torch.linspace(-6, 6, 97, dtype=torch.float64)
    x = torch.cartesian_prod(centres, centres)
    reference = log_prob_two_moons(x, nodes=512)
    assert (log_prob_two_moons(x) - reference).abs().max().item() < 1e-9
    # 64 nodes are visibly worse, so the comparison can tell a coarse rule from a converged one
    assert (log_prob_two_moons(x, nodes=64) - reference).abs().max().item() > 1e-7


def _moon_log_gaussian(theta: float, u: np.ndarray, moon: int) -> float:
    """log of exp(-|u - m(theta)|^2 / (2 0.1^2)) for the upper (0) or lower (1) moon's centre line m."""
    c, s = np.cos(theta), np.sin(theta)
    centre = np.array([c, s]) if moon == 0 else np.array([1 - c, 0.5 - s])
    return -np.sum((u - centre) ** 2) / (2 * 0.01)


def test_two_moons_matches_adaptive_quadrature():
    # p(x) = (1/4) integral_0^pi (1/pi) (1/2) sum over moons N(u; m(theta), 0.1^2 I) dtheta, u = (x - shift) / 2
    points = np.array([[0.0, 0.0], [-2.0, 1.0], [2.5, -1.2], [0.3, 1.8], [-3.5, -3.5], [3.9, 3.0]])
    for x in points:
        u = (x - np.array(MOONS_SHIFT)) / 2
        # integrate exp(log-integrand - its maximum), so that far points do not underflow
        peak = max(_moon_log_gaussian(t, u, moon) for moon in (0, 1) for t in np.linspace(0, np.pi, 2001))
        total = sum(
            integrate.quad(
                lambda t, moon: np.exp(_moon_log_gaussian(t, u, moon) - peak),  # noqa: B023 (called at once)
                0, np.pi, args=(moon,), epsabs=0, epsrel=1e-12, limit=200,
            )[0]
            for moon in (0, 1)
        )
        expected = peak + np.log(total) - np.log(np.pi) - np.log(2) - np.log(2 * np.pi * 0.01) - np.log(4)
        assert log_prob_two_moons(torch.tensor(x)[None]).item() == pytest.approx(expected, abs=1e-8), x


def test_rings_match_scipy_bessel():
    # moderate arguments, where scipy's unscaled I0 (r R / s^2 <= 680) does not overflow
    r = np.linspace(0.0, 1.7, 50)
    s2 = RINGS_NOISE**2
    terms = [
        R / 10 * np.exp(-(r**2 + R**2) / (2 * s2)) * special.i0(r * R / s2) / (2 * np.pi * s2) for R in RINGS_RADII
    ]
    x = torch.tensor(np.stack([r * np.cos(0.3), r * np.sin(0.3)], axis=1))
    np.testing.assert_allclose(get_toy2d("rings").log_prob(x).numpy(), np.log(sum(terms)), rtol=0, atol=1e-10)


def test_rings_match_numerical_convolution():
    # p(x) = sum_k w_k (1/2pi) integral_0^2pi N(x; R_k (cos phi, sin phi), s^2 I) dphi; the trapezoid
    # rule on 4,096 angles is exact to rounding for this smooth periodic integrand
    x = torch.randn(300, 2, generator=_generator(), dtype=torch.float64) * 2.5
    phi = torch.arange(4096, dtype=torch.float64) * (2 * math.pi / 4096)
    log_terms = []
    for radius in RINGS_RADII:
        centres = radius * torch.stack([phi.cos(), phi.sin()], dim=1)  # (4096, 2)
        sq_dist = (x[:, None, :] - centres).pow(2).sum(-1)  # (300, 4096)
        log_normal = -sq_dist / (2 * RINGS_NOISE**2) - math.log(2 * math.pi * RINGS_NOISE**2)
        log_terms.append(torch.logsumexp(log_normal, dim=1) - math.log(4096) + math.log(radius / 10))
    expected = torch.logsumexp(torch.stack(log_terms), dim=0)
    assert torch.allclose(get_toy2d("rings").log_prob(x), expected, rtol=0, atol=1e-9)
