"""Four 2-D densities with exact log-densities: the arena where a model's samples and likelihoods
can be compared with the truth.

Each ``Toy2D`` has a sampler driven by an explicit ``torch.Generator``, an exact ``log_prob`` in
nats (float64), its differential entropy and a square ``extent`` that holds essentially all of its
mass (used for density grids, histograms and figures).

- ``eight-gaussians`` The 8-Gaussians toy of FFJORD (Grathwohl et al., "FFJORD: Free-form
  Continuous Dynamics for Scalable Reversible Generative Models", 2019, arXiv:1810.01367): an equal
  mixture of 8 isotropic Gaussians with means at radius 4/sqrt(2), angles k pi/4 (k = 0..7), and
  std 0.5/sqrt(2). FFJORD divides by the literal 1.414; we use math.sqrt(2) exactly.
- ``checkerboard``    The checkerboard toy of FFJORD: uniform on the 8 squares [2i, 2i+2) x [2j, 2j+2),
  i, j in {-2, -1, 0, 1}, with i + j even, i.e. the cells where floor(x/2) + floor(y/2) is even. This
  is the parity FFJORD's sampler gives: x1 ~ U[-2, 2), x2 in [0, 1) or [-2, -1), shifted by
  floor(x1) mod 2, then both scaled by 2. Density 1/32 on those squares, 0 (log -inf) elsewhere;
  the support is half-open, [-4, 4)^2.
- ``two-moons``       The two interleaving half circles of scikit-learn's ``make_moons``: theta ~
  U(0, pi); with probability 1/2 the point (cos theta, sin theta), else (1 - cos theta,
  1/2 - sin theta); plus N(0, 0.1^2 I); then x -> 2x + (-1, -0.2), which centres it.
- ``rings``           Circles of radius 1, 2, 3, 4 chosen with probability proportional to the radius
  (so the density along every ring is the same), uniform in angle, plus N(0, 0.1^2 I).

Log-densities.
A ring of radius R (uniform angle) blurred by N(0, s^2 I) has the closed form
p(x) = exp(-(r^2 + R^2) / (2 s^2)) I0(r R / s^2) / (2 pi s^2), r = |x|, evaluated as
log p = -(r - R)^2 / (2 s^2) + log i0e(r R / s^2) - log(2 pi s^2) with the exponentially scaled
Bessel function ``torch.special.i0e`` (i0e(a) = exp(-a) I0(a)), so nothing overflows. A moon is a
half circle, for which the angular integral has no closed form: ``two-moons`` integrates over theta
by Gauss-Legendre quadrature with ``MOONS_QUADRATURE_NODES`` nodes, in log space (logsumexp over the
nodes). Near a point at distance rho from a moon's centre the integrand is a bump of width about
0.1 / sqrt(rho) in theta (rho <= 3.5 on the extent), which 128 nodes resolve: on [-6, 6]^2 the
rule agrees with a 1,024-node one to 1e-12 in log-density, while 64 nodes are off by 4e-6
(``tests/test_toy2d.py`` checks the 128-node rule to 1e-9). The Jacobian of x -> 2x
divides the density by 4.

Entropies.
``checkerboard``: ln 32 exactly. The other three are -integral p log p computed once by the
midpoint rule on a 240 x 240 grid over [-6, 6]^2 and stored as constants (12 digits). The spacing,
0.05, is half the smallest noise std (0.1); for integrands this smooth the midpoint rule converges
faster than any power of the spacing, and a 720 x 720 grid changes the values by less than 1e-9.
The mass outside [-6, 6]^2 is below 1e-12. ``tests/test_toy2d.py`` recomputes them and checks them
against the Monte Carlo estimate -mean log p(x), x ~ p. (``eight-gaussians`` is 0.0063 nats below
ln 8 + ln(2 pi e std^2) = 2.837877: the components overlap a little.)

Splits. ``splits(name)`` draws train / valid / test of 50,000 / 10,000 / 10,000 points (float32,
(N, 2)) from ``torch.Generator().manual_seed(seed)`` with the seeds in ``SPLIT_SEEDS`` (train 1,
valid 2, test 3): the same points on every call and every machine with the same torch version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
SPLIT_SEEDS = {"train": 1, "valid": 2, "test": 3}

# eight-gaussians: FFJORD's scale 4 and std 0.5, both divided by sqrt(2) (FFJORD writes 1.414)
GAUSSIANS_RADIUS = 4 / math.sqrt(2)
GAUSSIANS_STD = 0.5 / math.sqrt(2)
# two-moons: noise std before the map x -> MOONS_SCALE x + MOONS_SHIFT
MOONS_NOISE = 0.1
MOONS_SCALE = 2.0
MOONS_SHIFT = (-1.0, -0.2)
MOONS_QUADRATURE_NODES = 128
# rings: radii, picked with probability proportional to the radius, and the noise std
RINGS_RADII = (1.0, 2.0, 3.0, 4.0)
RINGS_NOISE = 0.1

_CHUNK = 8192  # points per block in the moons' quadrature: (8192, 256) float64 blocks, 16 MiB each


@dataclass(frozen=True)
class Toy2D:
    """A 2-D density with an exact log-density: what it is, how to sample it, its entropy."""

    name: str
    description: str  # one line
    extent: tuple[float, float]  # the square box extent x extent, holding essentially all the mass
    entropy: float  # differential entropy, nats
    sample: Callable[[int, torch.Generator], Tensor]  # (n, generator) -> (n, 2) float32
    log_prob: Callable[[Tensor], Tensor]  # (N, 2) -> (N,) float64, nats


def _points(x: Tensor) -> Tensor:
    """Validate a batch of 2-D points and return it as float64."""
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2), got {tuple(x.shape)}")
    return x.to(torch.float64)


# --- eight-gaussians ---------------------------------------------------------------------------
def _gaussian_means() -> Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return GAUSSIANS_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)  # (8, 2)


def sample_eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 2) float32: a uniformly chosen mean plus N(0, std^2 I)."""
    component = torch.randint(0, 8, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (_gaussian_means()[component] + GAUSSIANS_STD * noise).float()


def log_prob_eight_gaussians(x: Tensor) -> Tensor:
    """log (1/8) sum_k N(x; mean_k, std^2 I), (N,) float64."""
    x = _points(x)
    sq_dist = (x[:, None, :] - _gaussian_means()).pow(2).sum(-1)  # (N, 8)
    log_normal = -sq_dist / (2 * GAUSSIANS_STD**2) - math.log(2 * math.pi * GAUSSIANS_STD**2)
    return torch.logsumexp(log_normal, dim=1) - math.log(8)


# --- checkerboard ------------------------------------------------------------------------------
def sample_checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 2) float32: a uniformly chosen dark square, then a uniform point in it."""
    # a column i in {-2, -1, 0, 1}, then one of its two dark rows j with i + j even: j = 2k - 2 + (i mod 2)
    i = torch.randint(-2, 2, (n,), generator=generator)
    j = 2 * torch.randint(0, 2, (n,), generator=generator) - 2 + i.remainder(2)
    corner = 2 * torch.stack([i, j], dim=1).to(torch.float64)  # (n, 2) lower-left corners
    return (corner + 2 * torch.rand(n, 2, generator=generator, dtype=torch.float64)).float()


def log_prob_checkerboard(x: Tensor) -> Tensor:
    """log(1/32) on the dark squares of [-4, 4)^2, -inf elsewhere, (N,) float64."""
    x = _points(x)
    cell = torch.floor(x / 2)  # (N, 2) square indices (i, j)
    inside = ((x >= -4) & (x < 4)).all(dim=1)
    dark = (cell.sum(dim=1).remainder(2) == 0) & inside
    log_density = torch.full(dark.shape, -math.inf, dtype=torch.float64)
    return log_density.masked_fill(dark, -math.log(32))


# --- two-moons ---------------------------------------------------------------------------------
def gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on [-1, 1], float64, by Golub & Welsch (1969).

    The nodes are the eigenvalues of the symmetric tridiagonal Jacobi matrix of the Legendre
    polynomials (off-diagonal k / sqrt(4k^2 - 1)); the weights are 2 v_0^2 for each unit
    eigenvector v. About 1 ms for 128 nodes, so it is not cached.
    """
    k = torch.arange(1, n, dtype=torch.float64)
    off_diagonal = k / torch.sqrt(4 * k**2 - 1)
    jacobi = torch.diag(off_diagonal, 1) + torch.diag(off_diagonal, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    return nodes, 2 * vectors[0].pow(2)


def _moon_arcs(nodes: int) -> tuple[Tensor, Tensor]:
    """Both moons' centre lines at the quadrature angles, (2 nodes, 2), and their log weights (2 nodes,).

    The log weights include the density 1/pi of theta and the mixture weight 1/2.
    """
    t, w = gauss_legendre(nodes)
    theta = (t + 1) * (math.pi / 2)  # [-1, 1] -> [0, pi]
    log_weight = torch.log(w * (math.pi / 2)) - math.log(math.pi) - math.log(2)
    upper = torch.stack([theta.cos(), theta.sin()], dim=1)
    lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], dim=1)
    return torch.cat([upper, lower]), log_weight.repeat(2)


def sample_two_moons(n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 2) float32: a uniform angle on a uniformly chosen moon, noise, then 2x + shift."""
    theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    upper = torch.rand(n, generator=generator) < 0.5
    arc = torch.where(
        upper[:, None],
        torch.stack([theta.cos(), theta.sin()], dim=1),
        torch.stack([1 - theta.cos(), 0.5 - theta.sin()], dim=1),
    )  # (n, 2)
    u = arc + MOONS_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (MOONS_SCALE * u + torch.tensor(MOONS_SHIFT, dtype=torch.float64)).float()


def log_prob_two_moons(x: Tensor, nodes: int = MOONS_QUADRATURE_NODES) -> Tensor:
    """log p(x) by Gauss-Legendre quadrature over theta with ``nodes`` nodes (see the module docstring)."""
    x = _points(x)
    u = (x - torch.tensor(MOONS_SHIFT, dtype=torch.float64)) / MOONS_SCALE  # (N, 2) before the affine map
    arcs, log_weight = _moon_arcs(nodes)  # (2 nodes, 2), (2 nodes,)
    s2 = MOONS_NOISE**2
    # log N(u; m, s^2 I) = -(|u|^2 - 2 u.m + |m|^2) / 2s^2 - log(2 pi s^2): a matrix product instead
    # of a (N, 2 nodes, 2) difference tensor; in float64 the cancellation costs < 1e-12 in log p
    log_terms_of_m = log_weight - arcs.pow(2).sum(1) / (2 * s2) - math.log(2 * math.pi * s2)
    out = []
    for block in u.split(_CHUNK):
        log_terms = log_terms_of_m + (block @ arcs.T) / s2 - block.pow(2).sum(1, keepdim=True) / (2 * s2)
        out.append(torch.logsumexp(log_terms, dim=1))  # (B,)
    # change of variables x = 2u + shift: p_x(x) = p_u(u) / 2^2
    return torch.cat(out) - 2 * math.log(MOONS_SCALE)


# --- rings -------------------------------------------------------------------------------------
def _ring_log_weights() -> Tensor:
    radii = torch.tensor(RINGS_RADII, dtype=torch.float64)
    return torch.log(radii / radii.sum())


def sample_rings(n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 2) float32: a ring chosen in proportion to its radius, a uniform angle, noise."""
    radii = torch.tensor(RINGS_RADII, dtype=torch.float64)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    circle = radii[ring, None] * torch.stack([angle.cos(), angle.sin()], dim=1)  # (n, 2)
    return (circle + RINGS_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def log_prob_rings(x: Tensor) -> Tensor:
    """log sum_k w_k p_ring(x; R_k) in closed form (see the module docstring), (N,) float64."""
    r = _points(x).norm(dim=1, keepdim=True)  # (N, 1)
    radii = torch.tensor(RINGS_RADII, dtype=torch.float64)  # (4,)
    s2 = RINGS_NOISE**2
    # log of exp(-(r^2 + R^2) / 2s^2) I0(rR / s^2) / (2 pi s^2), with I0(a) = i0e(a) e^a
    log_bessel = torch.log(torch.special.i0e(r * radii / s2))  # log I0(rR / s^2) - rR / s^2
    log_ring = -(r - radii).pow(2) / (2 * s2) + log_bessel - math.log(2 * math.pi * s2)  # (N, 4)
    return torch.logsumexp(log_ring + _ring_log_weights(), dim=1)


# --- the registry ------------------------------------------------------------------------------
TOY2D: dict[str, Toy2D] = {
    spec.name: spec
    for spec in [
        Toy2D(
            "eight-gaussians", "FFJORD's mixture of 8 Gaussians (std 0.35) on a circle of radius 2.83",
            (-4.5, 4.5), 2.831578360526, sample_eight_gaussians, log_prob_eight_gaussians,
        ),
        Toy2D(
            "checkerboard", "FFJORD's uniform density on the 8 dark 2x2 squares of a checkerboard on [-4, 4]^2",
            (-4.0, 4.0), math.log(32), sample_checkerboard, log_prob_checkerboard,
        ),
        Toy2D(
            "two-moons", "two interleaving half circles blurred by Gaussian noise (std 0.2 after scaling)",
            (-4.0, 4.0), 2.393879195962, sample_two_moons, log_prob_two_moons,
        ),
        Toy2D(
            "rings", "circles of radius 1-4 picked in proportion to their radius, blurred by std 0.1",
            (-4.5, 4.5), 3.256289707855, sample_rings, log_prob_rings,
        ),
    ]
}


def get_toy2d(name: str) -> Toy2D:
    """The registered density ``name``; unknown names fail with the list of valid ones."""
    if name not in TOY2D:
        raise ValueError(f"unknown 2-D density {name!r}; choose one of: {', '.join(sorted(TOY2D))}")
    return TOY2D[name]


def splits(name: str) -> dict[str, Tensor]:
    """Train / valid / test points of ``name``, (N, 2) float32, each from its fixed seed (``SPLIT_SEEDS``)."""
    spec = get_toy2d(name)
    return {
        split: spec.sample(size, torch.Generator().manual_seed(SPLIT_SEEDS[split]))
        for split, size in SPLIT_SIZES.items()
    }
