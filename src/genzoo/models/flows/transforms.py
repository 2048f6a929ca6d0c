"""Invertible transforms with a tractable log-determinant: the parts every flow is composed of.

The contract (the shape of zuko's and nflows' transforms). A ``Transform`` is a bijection f from
data towards noise, the normalising direction:

    forward(x, context) -> (y, log|det df/dx|)     y of x's shape, the log-det (B,) per example
    inverse(y, context) -> x                       f^{-1}, used to sample

``context`` is what the transform is conditioned on: a class label's one-hot (B, E), or for a
variational dequantiser an image (B, C, H, W); None when unconditional. Shapes: images (B, C, H, W)
or vectors (B, D); ``Squeeze``, ``Flatten`` and ``MultiScale`` change the shape and keep the size.

Under bf16 autocast only the conditioners run in bf16: their outputs are cast to fp32 before they
become scales, log-scales and spline knots, the values passed from transform to transform stay in
fp32 (at least), and every log-det is summed in fp32.

Transforms here, each with its paper:
- ``Logit``: x in [0, 1] -> logit(alpha + (1 - 2 alpha) x) (Dinh et al. 2017, section 4.1); its
  log-det depends on x, so it is the flow's first transform, not a preprocessing step.
- ``Coupling``: y_A = x_A, y_B = g(x_B; theta(x_A)) for a binary mask A (checkerboard, channels, or
  alternate coordinates) with g additive (NICE, Dinh et al. 2014, eq. 7), affine with a bounded log-scale
  (RealNVP, Dinh et al. 2017, eq. 4-5), or a rational-quadratic spline (NSF, Durkan et al. 2019).
- ``Scaling``: NICE's diagonal scaling layer y = x exp(s) (section 3.3).
- ``ActNorm``: y = (x - b) exp(-s) per channel with data-dependent initialisation (Glow, Kingma &
  Dhariwal 2018, section 3.1); ``InvertibleLinear``: the LU-parameterised invertible 1x1 convolution
  (section 3.2); ``Permutation``: a fixed reordering.
- ``MaskedAutoregressive``: u_i = g(x_i; theta(x_{<i})) with a MADE conditioner, affine (MAF,
  Papamakarios et al. 2017, eq. 4) or spline (autoregressive NSF); density in one pass, D passes to invert.
- ``Squeeze`` (C, H, W) -> (4C, H/2, W/2) and ``MultiScale``: levels that factor out half the channels
  after each level (Dinh et al. 2017, section 3.6), with Glow's learned prior on the factored half.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.distributions.likelihoods import params_to_last
from genzoo.distributions.numerics import at_least_fp32
from genzoo.models.flows.splines import rational_quadratic_spline, split_spline_params
from genzoo.nn.conditioners import ConvConditioner, MLPConditioner
from genzoo.nn.masked import MaskedMLP

COUPLING_KINDS = ("additive", "affine", "spline")


def per_example(t: Tensor) -> Tensor:
    """(B, ...) -> (B,): the sum over every dimension but the batch, in at least fp32."""
    return at_least_fp32(t).flatten(1).sum(1)


def no_log_det(x: Tensor) -> Tensor:
    """(B,) zeros in at least fp32: the log-det of a volume-preserving transform, and the start of a sum."""
    return x.new_zeros(len(x), dtype=torch.promote_types(x.dtype, torch.float32))


def soft_clamp(raw: Tensor, bound: float) -> Tensor:
    """bound * tanh(raw / bound): the identity near 0, never beyond +-bound (a log-scale that cannot explode)."""
    return bound * torch.tanh(raw / bound)


def split_context(context: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """(vector context (B, E) or None, map context (B, C', H, W) or None)."""
    if context is None or context.dim() == 2:
        return context, None
    return None, context


class Transform(nn.Module):
    """A bijection: ``forward`` (x -> (y, log|det dy/dx|) (B,)) and ``inverse`` (y -> x)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class Compose(Transform):
    """f = f_n o ... o f_1: log-dets add up (the chain rule of Jacobians)."""

    def __init__(self, transforms: Sequence[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = no_log_det(x)
        for transform in self.transforms:
            x, log_det = transform(x, context)
            total = total + log_det
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        for transform in reversed(self.transforms):
            y = transform.inverse(y, context)
        return y


# --- elementwise and structural transforms -------------------------------------------------------
class Logit(Transform):
    """x in [0, 1] -> y = logit(s), s = alpha + (1 - 2 alpha) x, so that y stays finite at x = 0 and 1.

    log|dy/dx| = sum_i log(1 - 2 alpha) - log s_i - log(1 - s_i).
    """

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        return log_s - log_1ms, per_example(math.log(1 - 2 * self.alpha) - log_s - log_1ms)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


class Squeeze(Transform):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of a channel becomes 4 channels (a permutation)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, no_log_det(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        b, c4, h, w = y.shape
        return y.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


class Flatten(Transform):
    """(B, *shape) -> (B, D), so that vector transforms (NICE's, MAF's) apply to images."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.flatten(1), no_log_det(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y.reshape(len(y), *self.shape)


class Permutation(Transform):
    """y = x[:, perm] on vectors (B, D): MAF reverses the order between its layers (log-det 0)."""

    def __init__(self, permutation: Tensor):
        super().__init__()
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.permutation], no_log_det(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y[:, self.inverse_permutation]


def _broadcast_shape(features: int, image: bool) -> tuple[int, ...]:
    return (1, features, 1, 1) if image else (1, features)


class Scaling(Transform):
    """NICE's diagonal scaling layer: y = x exp(s), one learned s per dimension; log-det sum_i s_i."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_scale = at_least_fp32(self.log_scale)
        return x * log_scale.exp(), log_scale.sum().expand(len(x))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y * (-at_least_fp32(self.log_scale)).exp()


class ActNorm(Transform):
    """y = (x - b) exp(-s) per channel (images) or feature (vectors); log-det -(H W) sum_c s_c.

    Data-dependent initialisation (Glow, section 3.1): b and s are set once so that the first batch
    comes out with zero mean and unit variance per channel. It happens only inside
    ``data_dependent_init`` (the flow's explicit ``initialize(batch)``), never on an ordinary forward
    pass; the ``initialized`` buffer is saved with the weights, so a resumed run or another process
    does not initialise again.
    """

    def __init__(self, features: int, image: bool):
        super().__init__()
        self.image = image
        self.loc = nn.Parameter(torch.zeros(_broadcast_shape(features, image)))
        self.log_scale = nn.Parameter(torch.zeros(_broadcast_shape(features, image)))
        self.register_buffer("initialized", torch.tensor(False))
        self.initializing = False  # set only by data_dependent_init

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.initializing:
            with torch.no_grad():
                dims = (0, 2, 3) if self.image else (0,)
                self.loc.copy_(x.mean(dims, keepdim=True))
                self.log_scale.copy_(torch.log(x.std(dims, keepdim=True) + 1e-6))
                self.initialized.fill_(True)
        pixels = x.shape[2] * x.shape[3] if self.image else 1
        log_scale = at_least_fp32(self.log_scale)
        return (x - self.loc) * (-log_scale).exp(), (-pixels * log_scale.sum()).expand(len(x))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y * at_least_fp32(self.log_scale).exp() + self.loc


@contextlib.contextmanager
def data_dependent_init(module: nn.Module) -> Iterator[None]:
    """Inside: every not yet initialised ``ActNorm`` of ``module`` initialises itself from its input."""
    pending = [m for m in module.modules() if isinstance(m, ActNorm) and not m.initialized]
    for m in pending:
        m.initializing = True
    try:
        yield
    finally:
        for m in pending:
            m.initializing = False


class InvertibleLinear(Transform):
    """Glow's invertible 1x1 convolution, LU-parameterised (section 3.2): W = P L (U + diag(sign(s) exp(log|s|))).

    P is a fixed permutation, L unit lower-triangular, U strictly upper-triangular; log|det W| =
    sum log|s|, times H W for a 1x1 convolution over (C, H, W). Starts at a random rotation. On vectors
    (B, D) it is a D x D linear map.
    """

    def __init__(self, features: int, image: bool, seed: int = 0):
        super().__init__()
        self.image = image
        generator = torch.Generator().manual_seed(seed)
        rotation = torch.linalg.qr(torch.randn(features, features, generator=generator, dtype=torch.float64))[0]
        permutation, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(features, features), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_abs_s = nn.Parameter(torch.log(s.abs()).float())

    def weight(self) -> Tensor:
        """W (C, C) in fp32."""
        eye = torch.eye(len(self.sign_s), device=self.sign_s.device, dtype=at_least_fp32(self.lower).dtype)
        lower = at_least_fp32(self.lower) * self.lower_mask + eye
        upper = at_least_fp32(self.upper) * self.lower_mask.T + torch.diag(self.sign_s * at_least_fp32(self.log_abs_s).exp())
        return self.permutation @ lower @ upper

    def _multiply(self, x: Tensor, weight: Tensor) -> Tensor:
        x = at_least_fp32(x)
        weight = weight.to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):  # a C x C product: cheap, and kept in fp32
            return F.conv2d(x, weight[:, :, None, None]) if self.image else x @ weight.T

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pixels = x.shape[2] * x.shape[3] if self.image else 1
        return self._multiply(x, self.weight()), (pixels * at_least_fp32(self.log_abs_s).sum()).expand(len(x))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return self._multiply(y, torch.linalg.inv(self.weight().double()).to(y.dtype))


# --- couplings -------------------------------------------------------------------------------------
def checkerboard_mask(shape: tuple[int, int, int], parity: int) -> Tensor:
    """(C, H, W) 0/1: 1 where (h + w) % 2 == parity (RealNVP's spatial checkerboard)."""
    c, h, w = shape
    board = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == parity
    return board.float().expand(c, h, w).clone()


def channel_mask(shape: tuple[int, int, int], parity: int) -> Tensor:
    """(C, H, W) 0/1: the first half of the channels (parity 0) or the second (parity 1)."""
    c = shape[0]
    mask = torch.zeros(shape)
    half = c // 2
    if parity == 0:
        mask[:half] = 1
    else:
        mask[half:] = 1
    return mask


def alternating_mask(dim: int, parity: int) -> Tensor:
    """(D,) 0/1: 1 at the even (parity 0) or odd (parity 1) coordinates (NICE's partition)."""
    return (torch.arange(dim) % 2 == parity).float()


def params_per_dimension(kind: str, bins: int) -> int:
    """P, the conditioner's outputs per transformed dimension: a shift, a log-scale and a shift, or a spline's
    K widths, K heights and K - 1 interior derivatives."""
    return {"additive": 1, "affine": 2, "spline": 3 * bins - 1}[kind]


def elementwise(kind: str, x: Tensor, theta: Tensor, inverse: bool, scale_bound: float, bins: int,
                tail_bound: float) -> tuple[Tensor, Tensor]:
    """g or g^-1 of every element given its parameters theta (..., P): (value, log|dg/dx| per element), fp32.

    "additive" g = x + t; "affine" g = x exp(s) + t, s = bound tanh(s'/bound); "spline" the rational-quadratic
    spline with ``bins`` bins on [-tail_bound, tail_bound], the identity outside.
    """
    x = at_least_fp32(x)
    if kind == "additive":
        shift = theta[..., 0]
        return (x - shift if inverse else x + shift), torch.zeros_like(x)
    if kind == "affine":
        log_scale, shift = soft_clamp(theta[..., 0], scale_bound), theta[..., 1]
        if inverse:
            return (x - shift) * (-log_scale).exp(), -log_scale
        return x * log_scale.exp() + shift, log_scale
    return rational_quadratic_spline(x, *split_spline_params(theta, bins), inverse=inverse, tail_bound=tail_bound)


class Coupling(Transform):
    """y = m x + (1 - m) g(x; theta(m x)): the part where m = 1 passes unchanged and parameterises the rest.

    ``kind``: "additive" g = x + t (log-det 0), "affine" g = x exp(s) + t with s = bound tanh(s'/bound),
    or "spline" g = the rational-quadratic spline with ``bins`` bins on [-tail_bound, tail_bound]
    (identity outside). ``mask`` has the data's shape, (C, H, W) or (D,); the conditioner is a conv
    net for images, an MLP for vectors, and reads only the unchanged part.
    """

    def __init__(self, mask: Tensor, kind: str, hidden: int, layers: int = 1, context_dim: int = 0,
                 context_channels: int = 0, scale_bound: float = 2.0, bins: int = 8, tail_bound: float = 3.0):
        super().__init__()
        if kind not in COUPLING_KINDS:
            raise ValueError(f"unknown coupling {kind!r}; choose one of: {', '.join(COUPLING_KINDS)}")
        if not (mask.min() == 0 and mask.max() == 1):
            raise ValueError("a coupling mask must keep some dimensions and transform the others")
        self.kind, self.scale_bound, self.bins, self.tail_bound = kind, scale_bound, bins, tail_bound
        self.register_buffer("mask", mask.float())
        self.register_buffer("free", 1 - mask.float(), persistent=False)  # 1 where the coupling transforms
        self.params = params_per_dimension(kind, bins)
        if mask.dim() == 3:
            c = mask.shape[0]
            self.conditioner = ConvConditioner(c, self.params * c, hidden, layers, context_dim, context_channels)
        else:
            d = mask.shape[0]
            self.conditioner = MLPConditioner(d, self.params * d, hidden, layers, context_dim)

    def theta(self, kept: Tensor, context: Tensor | None) -> Tensor:
        """(B, *shape, P) fp32 parameters of g for every dimension (used where m = 0)."""
        vector, image = split_context(context)
        raw = self.conditioner(kept, vector, image) if self.mask.dim() == 3 else self.conditioner(kept, vector)
        return params_to_last(at_least_fp32(raw), tuple(self.mask.shape))

    def _g(self, x: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return elementwise(self.kind, x, theta, inverse, self.scale_bound, self.bins, self.tail_bound)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        theta = self.theta(x * self.mask, context)
        g, log_det = self._g(x, theta, inverse=False)
        return torch.addcmul(self.mask * x, self.free, g), per_example(self.free * log_det)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        theta = self.theta(y * self.mask, context)
        g, _ = self._g(y, theta, inverse=True)
        return torch.addcmul(self.mask * y, self.free, g)


# --- masked autoregressive ------------------------------------------------------------------------
class MaskedAutoregressive(Transform):
    """u_i = g(x_i; theta_i(x_{<i})) on vectors (B, D), with a MADE conditioner (``MaskedMLP``).

    "affine" (MAF, eq. 4 of Papamakarios et al.): u_i = (x_i - mu_i) exp(-alpha_i), log-det -sum_i alpha_i,
    alpha bounded by ``scale_bound``; "spline": the rational-quadratic spline of autoregressive NSF.
    The density direction is one network pass; the inverse fills x in the order, one pass per dimension.
    """

    def __init__(self, order: Tensor, kind: str, hidden_dims: Sequence[int], context_dim: int = 0,
                 scale_bound: float = 2.0, bins: int = 8, tail_bound: float = 3.0, seed: int = 0):
        super().__init__()
        if kind not in ("affine", "spline"):
            raise ValueError(f"unknown autoregressive transform {kind!r}; choose affine or spline")
        self.kind, self.scale_bound, self.bins, self.tail_bound = kind, scale_bound, bins, tail_bound
        self.register_buffer("order", order)
        self.conditioner = MaskedMLP(order, hidden_dims, params_per_dimension(kind, bins), context_dim, seed)

    def conditionals(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """(B, D) -> (B, D, P) fp32: entry d reads only the x before d in ``order``."""
        return at_least_fp32(self.conditioner(x, context))

    def _g(self, x: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # the affine layer is written in the density direction, u = (x - mu) exp(-alpha): the inverse of
        # ``elementwise``'s x exp(s) + t with (s, t) = (alpha, mu); the spline runs forward in both
        flip = self.kind == "affine"
        return elementwise(self.kind, x, theta, inverse != flip, self.scale_bound, self.bins, self.tail_bound)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u, log_det = self._g(x, self.conditionals(x, context), inverse=False)
        return u, per_example(log_det)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        x = torch.zeros_like(at_least_fp32(u))
        for d in self.order.tolist():  # x_d needs every x before d: D passes
            value, _ = self._g(u[:, d], self.conditionals(x, context)[:, d], inverse=True)
            x[:, d] = value
        return x


# --- multi-scale ----------------------------------------------------------------------------------
class FactorPrior(Transform):
    """Glow's learned prior on a factored-out half z given the kept half h: z ~ N(mu(h), exp(s(h))^2),
    written as the transform e = (z - mu(h)) exp(-s(h)) onto a standard normal e (log-det -sum s)."""

    def __init__(self, kept_channels: int, out_channels: int, hidden: int, context_dim: int = 0):
        super().__init__()
        self.conditioner = ConvConditioner(kept_channels, 2 * out_channels, hidden, 0, context_dim)

    def _mean_log_scale(self, kept: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        vector, _ = split_context(context)
        mean, log_scale = at_least_fp32(self.conditioner(kept, vector)).chunk(2, dim=1)
        return mean, soft_clamp(log_scale, 5.0)

    def forward(self, z: Tensor, kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, log_scale = self._mean_log_scale(kept, context)
        return (at_least_fp32(z) - mean) * (-log_scale).exp(), -per_example(log_scale)

    def inverse(self, e: Tensor, kept: Tensor, context: Tensor | None = None) -> Tensor:
        mean, log_scale = self._mean_log_scale(kept, context)
        return at_least_fp32(e) * log_scale.exp() + mean


class MultiScale(Transform):
    """Levels of transforms; after every level but the last, half of the channels leave the flow
    (factored out) and the rest goes on (Dinh et al. 2017, section 3.6). Output: every factored-out
    part and the last level's output, flattened and concatenated, (B, D).

    ``priors[i]`` (or None: a standard normal) is the learned prior of the part factored out after level i;
    ``context_dim`` is the size of the context vector the levels take (0: none).
    """

    def __init__(self, shape: tuple[int, int, int], levels: Sequence[Transform],
                 priors: Sequence[FactorPrior | None], context_dim: int = 0):
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.priors = nn.ModuleList(p if p is not None else nn.Identity() for p in priors)
        self.has_prior = [p is not None for p in priors]
        self.shapes = []  # per level: (kept shape, factored-out shape or None)
        with torch.no_grad():  # a dry run on one example records the shapes
            h, context = torch.full((1, *shape), 0.5), torch.zeros(1, context_dim) if context_dim else None
            for i, level in enumerate(self.levels):
                h, _ = level(h, context)
                if i < len(self.levels) - 1:
                    h, z = self._split(h)
                    self.shapes.append((tuple(h.shape[1:]), tuple(z.shape[1:])))
                else:
                    self.shapes.append((tuple(h.shape[1:]), None))

    @staticmethod
    def _split(h: Tensor) -> tuple[Tensor, Tensor]:
        keep = h.shape[1] - h.shape[1] // 2
        return h[:, :keep], h[:, keep:]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        parts, total = [], no_log_det(x)
        h = x
        for i, level in enumerate(self.levels):
            h, log_det = level(h, context)
            total = total + log_det
            if i < len(self.levels) - 1:
                h, z = self._split(h)
                if self.has_prior[i]:
                    z, log_det = self.priors[i](z, h, context)
                    total = total + log_det
                parts.append(z.flatten(1))
        parts.append(h.flatten(1))
        return torch.cat(parts, dim=1), total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        sizes = [math.prod(z) for _, z in self.shapes[:-1]] + [math.prod(self.shapes[-1][0])]
        parts = list(y.split(sizes, dim=1))
        h = parts[-1].reshape(len(y), *self.shapes[-1][0])
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                z = parts[i].reshape(len(y), *self.shapes[i][1])
                if self.has_prior[i]:
                    z = self.priors[i].inverse(z, h, context)
                h = torch.cat([h, z], dim=1)
            h = self.levels[i].inverse(h, context)
        return h
