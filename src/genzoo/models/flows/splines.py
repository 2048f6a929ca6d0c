"""Monotone rational-quadratic (RQ) splines: the elementwise transform of Neural Spline Flows.

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019 (arXiv:1906.04032),
section 3.1 and appendix A. K bins between K + 1 knots {(x^(k), y^(k))}, x^(0) = y^(0) = -B and
x^(K) = y^(K) = B, with positive derivatives delta^(k) at the knots. In bin k, with
s_k = (y^(k+1) - y^(k)) / (x^(k+1) - x^(k)) and xi = (x - x^(k)) / (x^(k+1) - x^(k)) in [0, 1]:

    g(x) = y^(k) + (y^(k+1) - y^(k)) [s_k xi^2 + delta^(k) xi (1 - xi)]
                   / [s_k + (delta^(k+1) + delta^(k) - 2 s_k) xi (1 - xi)]                         (eq. 4)
    g'(x) = s_k^2 [delta^(k+1) xi^2 + 2 s_k xi (1 - xi) + delta^(k) (1 - xi)^2]
                   / [s_k + (delta^(k+1) + delta^(k) - 2 s_k) xi (1 - xi)]^2                       (eq. 5)

The inverse (appendix A) solves a xi^2 + b xi + c = 0 for xi, with t = y - y^(k), e = delta^(k+1) + delta^(k) - 2 s_k:
a = (y^(k+1) - y^(k)) (s_k - delta^(k)) + t e,  b = (y^(k+1) - y^(k)) delta^(k) - t e,  c = -s_k t,
taking the root xi = 2c / (-b - sqrt(b^2 - 4ac)) (free of cancellation: c <= 0 < b + sqrt(.) in a bin).

Choices:
- bin widths (heights alike): min_bin + (1 - min_bin K) softmax(u), scaled to 2B; knots are their cumulative sums
  from -B, the last set to exactly +B, the widths then re-read as knot differences so they sum exactly.
- interior derivatives: min_derivative + softplus(u); the two boundary derivatives are exactly 1, so the identity
  tails outside [-B, B] (log-det 0) join with a continuous derivative. u = IDENTITY_DERIVATIVE gives delta = 1.
- bin search: count the interior knots <= x, which is robust at the knots (x on knot k lands in bin k, x = B in
  bin K - 1) and needs no eps on the last knot.
- the discriminant b^2 - 4ac is clamped at 0: mathematically >= 0 in a bin (it equals (h delta^(k))^2 at the bin's
  bottom and (h delta^(k+1))^2 at its top), it can round negative when a knot derivative is tiny (nflows issue #87).
- computed in at least float32 (bf16/fp16 are promoted; float64 stays float64), returned in that dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MIN_DERIVATIVE = 1e-3
# softplus^{-1}(1 - min_derivative): the unnormalised derivative for which min_derivative + softplus(u) == 1.
IDENTITY_DERIVATIVE = math.log(math.expm1(1.0 - DEFAULT_MIN_DERIVATIVE))


def identity_derivative(min_derivative: float = DEFAULT_MIN_DERIVATIVE) -> float:
    """The unnormalised derivative u with min_derivative + softplus(u) == 1."""
    return math.log(math.expm1(1.0 - min_derivative))


def split_spline_params(params: Tensor, num_bins: int,
                        min_derivative: float = DEFAULT_MIN_DERIVATIVE) -> tuple[Tensor, Tensor, Tensor]:
    """(..., 3K - 1) network outputs -> widths (..., K), heights (..., K), derivatives (..., K - 1), the derivatives
    shifted by identity_derivative so that all-zero outputs give the identity spline (equal bins, slopes 1)."""
    w, h, d = params.split([num_bins, num_bins, num_bins - 1], dim=-1)
    return w, h, d + identity_derivative(min_derivative)


def _knots(u: Tensor, bound: float, min_bin: float) -> Tensor:
    """(..., K) unnormalised sizes -> (..., K + 1) knots from -bound to exactly +bound."""
    k = u.shape[-1]
    sizes = min_bin + (1 - min_bin * k) * torch.softmax(u, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0)) * (2 * bound) - bound
    knots[..., 0], knots[..., -1] = -bound, bound
    return knots


def rational_quadratic_spline(x: Tensor, unnormalized_widths: Tensor, unnormalized_heights: Tensor,
                              unnormalized_derivatives: Tensor, inverse: bool = False, tail_bound: float = 3.0,
                              min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                              min_derivative: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Elementwise monotone RQ spline on [-B, B] (B = tail_bound), identity (linear tails) outside.

    x (...,); widths, heights (..., K); derivatives (..., K - 1) (the interior knots; the two boundary derivatives
    are 1 so the tails join smoothly); leading dims broadcast. Returns (y (...), log|dy/dx| (...)) for the forward
    map, or (x, log|dx/dy|) = the inverse and ITS log-det (minus the forward log-det at the result) when inverse=True.
    """
    num_bins = unnormalized_widths.shape[-1]
    if min_bin_width * num_bins > 1 or min_bin_height * num_bins > 1:
        raise ValueError(f"min_bin_width/height too large for {num_bins} bins")
    tensors = (x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives)
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    x, uw, uh, ud = (t.to(dtype) for t in tensors)
    batch = torch.broadcast_shapes(x.shape, uw.shape[:-1], uh.shape[:-1], ud.shape[:-1])
    x = x.expand(batch)
    bound = float(tail_bound)

    xk = _knots(uw.expand(*batch, num_bins), bound, min_bin_width)  # (..., K + 1)
    yk = _knots(uh.expand(*batch, num_bins), bound, min_bin_height)  # (..., K + 1)
    one = torch.ones(*batch, 1, dtype=dtype, device=x.device)
    deriv = torch.cat([one, min_derivative + F.softplus(ud.expand(*batch, num_bins - 1)), one], dim=-1)  # (..., K + 1)

    inside = (x >= -bound) & (x <= bound)  # (...,)
    z = x.clamp(-bound, bound)  # keeps the spline branch finite (and its gradients) for tail points
    knots = yk if inverse else xk
    idx = (z[..., None] >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)  # (..., 1) bin index in [0, K - 1]

    def at(t: Tensor, offset: int = 0) -> Tensor:  # (..., K + 1) -> (...,) value at knot idx + offset
        return t.gather(-1, idx + offset).squeeze(-1)

    x0, y0, d0, d1 = at(xk), at(yk), at(deriv), at(deriv, 1)
    w, h = at(xk, 1) - x0, at(yk, 1) - y0  # (...,) bin width and height
    s = h / w
    e = d0 + d1 - 2 * s

    if inverse:
        t = z - y0
        a = h * (s - d0) + t * e
        b = h * d0 - t * e
        c = -s * t
        # >= 0 in exact arithmetic, rounding can make it slightly negative; clamped at 0 (at the smallest normal
        # number, so that sqrt's gradient stays finite: a negative or zero discriminant then passes no gradient)
        disc = (b * b - 4 * a * c).clamp_min(torch.finfo(dtype).tiny)
        xi = 2 * c / (-b - disc.sqrt())
        xi = xi + (xi.clamp(0, 1) - xi).detach()  # rounding can leave [0, 1]: clamp the value, keep the gradient
        out = x0 + xi * w
    else:
        xi = (z - x0) / w
    xi1 = xi * (1 - xi)
    den = s + e * xi1
    dnum = s * s * (d1 * xi * xi + 2 * s * xi1 + d0 * (1 - xi) ** 2)
    logdet = torch.log(dnum) - 2 * torch.log(den)  # log g'(x) (eq. 5)
    if inverse:
        return torch.where(inside, out, x), torch.where(inside, -logdet, torch.zeros_like(logdet))
    y = y0 + h * (s * xi * xi + d0 * xi1) / den  # eq. 4
    return torch.where(inside, y, x), torch.where(inside, logdet, torch.zeros_like(logdet))
