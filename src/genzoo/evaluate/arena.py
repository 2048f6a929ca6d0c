"""The 2-D density arena: pure functions that score a model against a density known exactly.

A model is scored two ways on the ``genzoo.data.toy2d`` densities:

- by its likelihood: ``kl_divergence`` estimates KL(p_data || p_model) = E_data[log p_data - log
  p_model] from the test split, where log p_data is exact, with its paired standard error. Unlike
  a test NLL, which is KL plus the data's entropy, it is 0 for a perfect model.
- by its samples, against the test split (``arena_sample_metrics``):
  ``sliced_wasserstein`` (the sliced 2-Wasserstein distance over fixed random directions),
  ``mmd2`` (unbiased squared MMD with a Gaussian kernel whose bandwidth is fixed per dataset by the
  median heuristic on its training split, ``arena_bandwidth``) and ``histogram_kl`` (KL between
  smoothed 64 x 64 histograms on the dataset's extent).

``density_grid`` and ``grid_mass`` evaluate a log-density on a grid of cell centres, for figures and
to check that a model's density integrates to 1 (midpoint rule).

Every random choice has a fixed seed, so the same samples always get the same scores. Two sample
sets drawn from the same distribution do not score 0 on the sliced Wasserstein distance or the
histogram KL (both are biased upwards at finite size); compare models at the same sample counts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from genzoo.data.toy2d import get_toy2d, splits
from genzoo.distributions.grid import grid_centres, grid_points, log_cell_area

ARENA_METRICS = ("sliced_wasserstein", "mmd2", "histogram_kl_nats")
ARENA_PROJECTIONS = 256
ARENA_PROJECTION_SEED = 0
ARENA_BINS = 64
# added to every cell of both histograms: at 10,000 points and 64 x 64 cells, 4% of the mass. The
# Jeffreys prior's 0.5 (17%) would halve what a missed mode costs; at 0.01 single stray points dominate
ARENA_PSEUDO_COUNT = 0.1
BANDWIDTH_POINTS = 2000  # training points the median heuristic looks at
BANDWIDTH_SEED = 0


# --- likelihood ----------------------------------------------------------------------------------
def kl_divergence(log_p_data: Tensor, log_p_model: Tensor) -> tuple[float, float]:
    """Monte Carlo KL(p_data || p_model) in nats and its standard error, from test points x ~ p_data.

    Both arguments are (N,) log-densities at the same N points. The estimate is the mean of the
    paired differences log p_data(x) - log p_model(x); its standard error is their std (N - 1 in the
    denominator) / sqrt(N). Pairing removes the data's entropy from the noise: a model equal to the
    data density scores exactly (0, 0). A point the model gives zero density makes both infinite.
    """
    if log_p_data.dim() != 1 or log_p_data.shape != log_p_model.shape:
        raise ValueError(f"expected two (N,) tensors, got {tuple(log_p_data.shape)} and {tuple(log_p_model.shape)}")
    if len(log_p_data) < 2:
        raise ValueError("need at least 2 points for a standard error")
    diff = log_p_data.to(torch.float64) - log_p_model.to(torch.float64)  # (N,)
    if not torch.isfinite(diff).all():
        return math.inf, math.inf
    return diff.mean().item(), (diff.std(correction=1) / math.sqrt(len(diff))).item()


# --- sliced Wasserstein --------------------------------------------------------------------------
def projection_directions(num_projections: int, dim: int, seed: int = 0) -> Tensor:
    """(num_projections, dim) float64 unit vectors, uniform on the sphere: normalised N(0, I) draws."""
    g = torch.randn(num_projections, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


def sliced_wasserstein(a: Tensor, b: Tensor, num_projections: int = ARENA_PROJECTIONS, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between point sets a (N, D) and b (M, D).

    SW2(a, b) = sqrt(mean over directions theta of W2^2(theta.a, theta.b)) (Rabin et al., "Wasserstein
    Barycenter and its Application to Texture Mixing", 2011; Bonneel et al., 2015), over
    ``projection_directions(num_projections, D, seed)``: the same directions on every call.
    In 1-D, W2^2 = integral_0^1 (F_a^-1(t) - F_b^-1(t))^2 dt with the empirical quantile functions,
    which are constant between the breakpoints i/N and j/M. We integrate exactly on the common grid
    of all N + M breakpoints, so N != M needs no resampling; for N == M this is mean((sort a - sort b)^2).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected point sets (N, D) and (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.to(torch.float64), b.to(torch.float64)
    n, m = len(a), len(b)
    if n != m:
        # breakpoints 0 = t_0 <= t_1 <= ... <= t_{N+M} = 1 of both quantile functions. On (t_{k-1}, t_k]
        # the empirical quantile of a is its sorted value number floor(t N) (0-based) for any t inside;
        # taking t at the midpoint keeps rounding at the breakpoints from picking a neighbour
        levels = [torch.arange(1, k + 1, dtype=torch.float64) / k for k in (n, m)]
        t = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cat(levels).sort().values])
        width, middle = t.diff(), (t[1:] + t[:-1]) / 2  # (N + M,); repeated breakpoints give width 0
        index_a = (middle * n).floor().long().clamp(max=n - 1)
        index_b = (middle * m).floor().long().clamp(max=m - 1)
    w2_squared = []
    # 32 directions at a time bound the memory: (N + M, 32) float64 per block
    for theta in projection_directions(num_projections, a.shape[1], seed).split(32):  # (P', D)
        proj_a = (a @ theta.T).sort(dim=0).values  # (N, P') the quantiles at levels i/N
        proj_b = (b @ theta.T).sort(dim=0).values  # (M, P')
        if n == m:
            w2_squared.append((proj_a - proj_b).pow(2).mean(dim=0))
        else:
            w2_squared.append((width[:, None] * (proj_a[index_a] - proj_b[index_b]).pow(2)).sum(dim=0))
    return torch.cat(w2_squared).mean().sqrt().item()


# --- maximum mean discrepancy --------------------------------------------------------------------
def _rbf_sum(x: Tensor, y: Tensor, bandwidth: float, block_size: int) -> float:
    """sum_ij exp(-|x_i - y_j|^2 / (2 bandwidth^2)) over blocks of block_size x block_size pairs."""
    total = torch.zeros((), dtype=torch.float64)
    for xb in x.split(block_size):
        for yb in y.split(block_size):
            # |x|^2 + |y|^2 - 2 x.y, clamped: rounding can make it slightly negative for x ~ y
            sq_dist = (xb.pow(2).sum(1, keepdim=True) + yb.pow(2).sum(1) - 2 * xb @ yb.T).clamp(min=0)
            total += torch.exp(-sq_dist / (2 * bandwidth**2)).sum()
    return total.item()


def mmd2(a: Tensor, b: Tensor, bandwidth: float, block_size: int = 1024) -> float:
    """Unbiased squared MMD between a (N, D) and b (M, D) with the kernel exp(-|x - y|^2 / (2 bandwidth^2)).

    The unbiased estimate (a U-statistic) of Gretton et al., "A Kernel Two-Sample Test" (JMLR 2012):
    sum_{i != j} k(a_i, a_j) / (N(N-1)) + sum_{i != j} k(b_i, b_j) / (M(M-1)) - 2 sum_ij k(a_i, b_j) / (NM).
    Its expectation is the population MMD^2, so it is 0 on average (and can be negative) when a and
    b come from the same distribution. Computed in float64 in blocks of block_size^2 kernel values
    (a few 8 MiB matrices at the default), so 10,000 x 10,000 points fit as easily as 1,000 x 1,000.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected point sets (N, D) and (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the unbiased MMD needs at least 2 points in each set")
    a, b = a.to(torch.float64), b.to(torch.float64)
    n, m = len(a), len(b)
    # the diagonal terms k(x_i, x_i) = 1 are subtracted exactly: n of them in the a-a sum, m in the b-b sum
    k_aa = (_rbf_sum(a, a, bandwidth, block_size) - n) / (n * (n - 1))
    k_bb = (_rbf_sum(b, b, bandwidth, block_size) - m) / (m * (m - 1))
    k_ab = _rbf_sum(a, b, bandwidth, block_size) / (n * m)
    return k_aa + k_bb - 2 * k_ab


def median_bandwidth(x: Tensor, max_points: int = BANDWIDTH_POINTS, seed: int = BANDWIDTH_SEED) -> float:
    """The median heuristic: the median distance between distinct points of x (N, D).

    Over a fixed random subset of max_points points (``torch.randperm`` with ``seed``) when N is
    larger; the median of an even number of distances is the mean of the two middle ones.
    """
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]]
    x = x.to(torch.float64)
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    distances = (x[i] - x[j]).norm(dim=1).sort().values  # (N(N-1)/2,)
    k = len(distances)
    return ((distances[(k - 1) // 2] + distances[k // 2]) / 2).item()


@functools.cache
def arena_bandwidth(name: str) -> float:
    """The arena's fixed MMD bandwidth for dataset ``name``: the median heuristic on its training split."""
    return median_bandwidth(splits(name)["train"], BANDWIDTH_POINTS, BANDWIDTH_SEED)


# --- histograms ----------------------------------------------------------------------------------
def histogram2d(points: Tensor, extent: tuple[float, float], bins: int) -> Tensor:
    """Counts of points (N, 2) in a bins x bins grid over extent^2, (bins, bins) float64, [ix, iy].

    A point outside the box is counted in the nearest edge cell, so every point counts and mass
    that a model puts outside the box still takes mass away from the cells inside. NaN has no
    nearest cell: it raises.
    """
    if torch.isnan(points).any():
        raise ValueError("cannot bin NaN points")
    lo, hi = extent
    cell = ((points.to(torch.float64) - lo) * (bins / (hi - lo))).floor().long().clamp(0, bins - 1)  # (N, 2)
    counts = torch.bincount(cell[:, 0] * bins + cell[:, 1], minlength=bins * bins)
    return counts.reshape(bins, bins).to(torch.float64)


def histogram_kl(
    reference: Tensor,
    samples: Tensor,
    extent: tuple[float, float],
    bins: int = ARENA_BINS,
    pseudo_count: float = ARENA_PSEUDO_COUNT,
) -> float:
    """KL(P_reference || P_samples) in nats between the smoothed histograms of two 2-D point sets.

    Both histograms (``histogram2d``: bins x bins cells over extent^2, outside points in the edge
    cells) get ``pseudo_count`` added to every cell before they are normalised, so the KL is finite
    when the samples miss a cell the reference occupies. Identical point sets score exactly 0.
    """
    if pseudo_count <= 0:
        raise ValueError(f"pseudo_count must be positive to keep the KL finite, got {pseudo_count}")
    p = histogram2d(reference, extent, bins) + pseudo_count
    q = histogram2d(samples, extent, bins) + pseudo_count
    p, q = p / p.sum(), q / q.sum()
    return (p * (p.log() - q.log())).sum().item()


# --- density grids -------------------------------------------------------------------------------
def density_grid(
    log_prob: Callable[[Tensor], Tensor],
    extent: tuple[float, float],
    resolution: int = 200,
    batch_size: int = 16384,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """log_prob on the cell centres of a resolution x resolution grid over extent^2.

    Returns (log_density (resolution, resolution) float64, xs (resolution,), ys (resolution,)) with
    log_density[i, j] = log_prob((xs[j], ys[i])): rows follow y, as ``imshow(origin="lower")`` and
    ``contour(xs, ys, log_density)`` expect. log_prob gets points (N, 2) of ``dtype`` (float32, as
    a model expects; float64 for an exact density), in batches of batch_size, without gradients.
    """
    points = grid_points(extent, resolution).to(dtype)  # (res^2, 2), row by row in y
    with torch.no_grad():
        log_density = torch.cat([log_prob(batch).to(torch.float64) for batch in points.split(batch_size)])
    centres = grid_centres(extent, resolution)
    return log_density.reshape(resolution, resolution), centres, centres.clone()


def grid_mass(log_density_grid: Tensor, extent: tuple[float, float]) -> float:
    """The integral of exp(log density) over extent^2 by the midpoint rule: cell area times the sum."""
    rows, columns = log_density_grid.shape
    if rows != columns:
        raise ValueError(f"expected a square grid, got {tuple(log_density_grid.shape)}")
    return torch.logsumexp(log_density_grid.to(torch.float64).flatten() + log_cell_area(extent, rows), dim=0).exp().item()


# --- the arena -----------------------------------------------------------------------------------
def arena_sample_metrics(name: str, samples: Tensor, test: Tensor,
                         metrics: tuple[str, ...] = ARENA_METRICS) -> dict[str, float | int]:
    """The sample ``metrics`` (of ``ARENA_METRICS``) of a model's samples (M, 2) against the test split (N, 2) of ``name``.

    Returns each metric computed, the settings that produced it (the number of projections, the MMD
    bandwidth ``arena_bandwidth(name)``, the histogram bins and pseudo-count on the dataset's extent)
    and both sample counts. Only the metrics asked for are computed: MMD^2 on 10,000 points is the
    slow one. The histogram KL is KL(test || samples): it punishes missed modes.
    """
    unknown = [m for m in metrics if m not in ARENA_METRICS]
    if unknown:
        raise ValueError(f"unknown arena metric(s) {', '.join(unknown)}: choose from {', '.join(ARENA_METRICS)}")
    result: dict[str, float | int] = {}
    if "sliced_wasserstein" in metrics:
        result.update(sliced_wasserstein=sliced_wasserstein(samples, test, ARENA_PROJECTIONS, ARENA_PROJECTION_SEED),
                      num_projections=ARENA_PROJECTIONS)
    if "mmd2" in metrics:
        bandwidth = arena_bandwidth(name)
        result.update(mmd2=mmd2(samples, test, bandwidth), bandwidth=bandwidth)
    if "histogram_kl_nats" in metrics:
        extent = get_toy2d(name).extent
        result.update(histogram_kl_nats=histogram_kl(test, samples, extent, ARENA_BINS, ARENA_PSEUDO_COUNT),
                      bins=ARENA_BINS, pseudo_count=ARENA_PSEUDO_COUNT)
    return {**result, "num_samples": len(samples), "num_test": len(test)}
