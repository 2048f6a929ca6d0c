"""The mathematics of the rational-quadratic spline (Neural Spline Flows, Durkan et al. 2019).

- inverse(forward(x)) == x and forward(inverse(y)) == y in float64, inside, on knots, at +-B and in the tails;
- the log-det equals log dy/dx by autograd, and the inverse's log-det is minus the forward's;
- monotone, [-B, B] onto [-B, B], knots where the cumulative widths/heights put them, derivative 1 at +-B and
  min_derivative + softplus(u) at the interior knots;
- the identity for equal bins and unit derivatives;
- a finite, round-tripping inverse where the quadratic's discriminant is below float32 resolution (nflows #87);
- bf16 in, float32 out; agreement with nflows (when it is installed).

Knots are computed here from the documented parametrisation, independently of the module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.models.flows.splines import (
    IDENTITY_DERIVATIVE,
    identity_derivative,
    rational_quadratic_spline,
    split_spline_params,
)

F64 = torch.float64
K, B, MIN = 8, 3.0, 1e-3


def ref_knots(u: Tensor, bound: float = B, min_bin: float = MIN) -> Tensor:
    """(..., K) -> (..., K + 1): -B + 2B * cumsum(min_bin + (1 - min_bin K) softmax(u)), from -B to B."""
    sizes = min_bin + (1 - min_bin * u.shape[-1]) * torch.softmax(u, dim=-1)
    return F.pad(sizes.cumsum(-1), (1, 0)) * 2 * bound - bound


def params(n: int, scale: float = 1.5, dtype: torch.dtype = F64, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random, far-from-identity parameters for n points: widths, heights (n, K), derivatives (n, K - 1)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(n, k, generator=g, dtype=dtype) for k in (K, K, K - 1))


def sample_points(knots: Tensor, seed: int = 1) -> Tensor:
    """(n, K + 1) knots -> (n,): random points inside, exactly on knots, at +-B, and in both tails."""
    n = knots.shape[0]
    g = torch.Generator().manual_seed(seed)
    pts = (2 * torch.rand(n, generator=g, dtype=knots.dtype) - 1) * B
    j = torch.arange(n) % 5
    pts[j == 1] = knots[j == 1, (torch.arange(n)[j == 1] // 5) % (K + 1)]  # every knot, +-B among them
    pts[j == 2] = torch.tensor([-B, B, -B - 1e-9, B + 1e-9, -50.0, 50.0], dtype=knots.dtype).repeat(n)[: (j == 2).sum()]
    return pts


def test_inverse_round_trips_in_float64():
    w, h, d = params(500)
    x = sample_points(ref_knots(w))
    y, _ = rational_quadratic_spline(x, w, h, d, tail_bound=B)
    x_back, _ = rational_quadratic_spline(y, w, h, d, inverse=True, tail_bound=B)
    assert x_back.dtype == F64
    torch.testing.assert_close(x_back, x, atol=1e-6, rtol=0)
    y0 = sample_points(ref_knots(h), seed=2)  # now points on the y knots
    x0, _ = rational_quadratic_spline(y0, w, h, d, inverse=True, tail_bound=B)
    y_back, _ = rational_quadratic_spline(x0, w, h, d, tail_bound=B)
    torch.testing.assert_close(y_back, y0, atol=1e-6, rtol=0)
    tails = x.abs() > B
    assert tails.any() and torch.equal(y[tails], x[tails])


def test_log_det_is_log_of_autograd_derivative():
    w, h, d = params(500)
    x = sample_points(ref_knots(w)).requires_grad_()
    y, logdet = rational_quadratic_spline(x, w, h, d, tail_bound=B)
    (dydx,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the gradient of the sum is dy/dx
    torch.testing.assert_close(logdet, dydx.log(), atol=1e-6, rtol=0)
    inside = x.detach().abs() < B
    assert logdet[inside].abs().mean() > 0.5  # far from the identity, so the check has teeth
    assert torch.all(logdet[x.detach().abs() > B] == 0)

    y0 = y.detach().requires_grad_()
    x0, logdet_inv = rational_quadratic_spline(y0, w, h, d, inverse=True, tail_bound=B)
    torch.testing.assert_close(logdet_inv, -logdet.detach(), atol=1e-6, rtol=0)
    (dxdy,) = torch.autograd.grad(x0.sum(), y0)
    torch.testing.assert_close(logdet_inv, dxdy.log(), atol=1e-6, rtol=0)


def test_monotone_onto_and_knots():
    w, h, d = params(1, scale=2.0)
    grid = torch.linspace(-B - 1, B + 1, 20001, dtype=F64)
    y, _ = rational_quadratic_spline(grid, w, h, d, tail_bound=B)
    assert torch.all(y.diff() > 0)
    xk, yk = ref_knots(w)[0], ref_knots(h)[0]
    y_at_knots, logdet = rational_quadratic_spline(xk, w, h, d, tail_bound=B)
    torch.testing.assert_close(y_at_knots, yk, atol=1e-12, rtol=0)
    inside = y[(grid >= -B) & (grid <= B)]  # onto [-B, B], the ends to rounding (y^(K-1) + h need not be B exactly)
    assert inside.min() == pytest.approx(-B, abs=1e-12) and inside.max() == pytest.approx(B, abs=1e-12)
    # knot derivatives: 1 at +-B (joining the identity tails), min_derivative + softplus(u) inside
    delta = torch.cat([torch.ones(1, dtype=F64), MIN + F.softplus(d[0]), torch.ones(1, dtype=F64)])
    torch.testing.assert_close(logdet.exp(), delta, atol=1e-9, rtol=0)
    for eps in (-1e-10, 1e-10):  # one-sided derivatives by autograd, just left and right of each knot
        xs = (xk + eps).requires_grad_()
        (g,) = torch.autograd.grad(rational_quadratic_spline(xs, w, h, d, tail_bound=B)[0].sum(), xs)
        torch.testing.assert_close(g, delta, atol=1e-4, rtol=1e-4)  # g" * 1e-10 off


def test_identity_for_equal_bins_and_unit_derivatives():
    assert identity_derivative() == IDENTITY_DERIVATIVE
    assert MIN + F.softplus(torch.tensor(IDENTITY_DERIVATIVE, dtype=F64)) == pytest.approx(1.0, abs=1e-15)
    x = torch.linspace(-5, 5, 1001, dtype=F64)
    w, h, d = split_spline_params(torch.zeros(1001, 3 * K - 1, dtype=F64), K)
    for inverse in (False, True):
        y, logdet = rational_quadratic_spline(x, w, h, d, inverse=inverse, tail_bound=B)
        torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
        torch.testing.assert_close(logdet, torch.zeros_like(x), atol=1e-12, rtol=0)


def test_inverse_where_the_discriminant_vanishes_float32():
    """Tiny knot derivatives (1e-3) and y just below a knot: b^2 - 4ac = (h delta)^2 there, below float32
    resolution of b^2, so its computed value can be negative (nflows issue #87 raised an assertion)."""
    n = 4096
    g = torch.Generator().manual_seed(3)
    w, h = torch.randn(n, K, generator=g), torch.randn(n, K, generator=g)
    d = 2 * torch.randn(n, K - 1, generator=g) - 20  # delta = 1e-3 + softplus(d) ~ 1e-3
    j = torch.randint(1, K, (n,), generator=g)  # an interior knot
    yk, xk = ref_knots(h).gather(-1, j[:, None])[:, 0], ref_knots(w)
    below = torch.nextafter(yk, torch.full_like(yk, -B))  # the top of bin j - 1
    y = torch.cat([below, yk, torch.nextafter(yk, torch.full_like(yk, B))])
    w, h, d, j = w.repeat(3, 1), h.repeat(3, 1), d.repeat(3, 1), j.repeat(3)
    # the regime: at the top of bin j - 1, b^2 - 4ac = (h delta)^2 and b = h (2 s - delta), so the discriminant is
    # below float32 resolution of b^2 where (delta / (2 s - delta))^2 < eps: for about 40% of these points
    s = (h.softmax(-1) * (1 - MIN * K) + MIN).gather(-1, j[:, None] - 1) / (
        (w.softmax(-1) * (1 - MIN * K) + MIN).gather(-1, j[:, None] - 1))
    delta = MIN + F.softplus(d.gather(-1, j[:, None] - 1))
    assert ((delta / (2 * s - delta)) ** 2 < torch.finfo(torch.float32).eps)[:n].float().mean() > 0.3

    y.requires_grad_()
    x, logdet = rational_quadratic_spline(y, w, h, d, inverse=True, tail_bound=B)
    assert x.dtype == torch.float32 and x.isfinite().all() and logdet.isfinite().all()
    (grad,) = torch.autograd.grad(x.sum() + logdet.sum(), y)
    assert grad.isfinite().all()
    y = y.detach()
    xk = xk.repeat(3, 1).gather(-1, torch.stack([j - 1, j + 1], -1).clamp(max=K))
    assert torch.all((x >= xk[:, 0] - 1e-5) & (x <= xk[:, 1] + 1e-5))  # in one of the bins next to the knot
    y_back, _ = rational_quadratic_spline(x, w, h, d, tail_bound=B)
    torch.testing.assert_close(y_back, y, atol=1e-5, rtol=0)


def test_bf16_inputs_compute_in_float32():
    w, h, d = (t.bfloat16() for t in params(200, dtype=torch.float32))
    x = (torch.randn(200) * 2).bfloat16()
    for inverse in (False, True):
        y, logdet = rational_quadratic_spline(x, w, h, d, inverse=inverse, tail_bound=B)
        assert y.dtype == logdet.dtype == torch.float32
        ref = rational_quadratic_spline(x.float(), w.float(), h.float(), d.float(), inverse=inverse, tail_bound=B)
        assert torch.equal(y, ref[0]) and torch.equal(logdet, ref[1]) and y.isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_agrees_with_nflows(dtype):
    splines = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    w, h, d = params(1000, dtype=dtype, seed=5)
    x = 1.5 * B * torch.randn(1000, generator=torch.Generator().manual_seed(6), dtype=dtype)
    for inverse in (False, True):
        ours = rational_quadratic_spline(x, w, h, d, inverse=inverse, tail_bound=B)
        theirs = splines.unconstrained_rational_quadratic_spline(
            x, w, h, d, inverse=inverse, tails="linear", tail_bound=B)
        torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=0)
