"""What every autoregressive model shares: the chain rule, its conditionals, sampling and completion.

An autoregressive model orders the D dimensions of its data (D = C*H*W for an image, or a vector's
D) and factorises

    log p(x) = sum_{i=1}^{D} log p(x_{o(i)} | x_{o(1)}, ..., x_{o(i-1)})        (chain rule)

with one network that outputs the parameters of every conditional in a single pass over the
whole input (teacher forcing), so the log-likelihood is exact and costs one forward pass.

Ordering. Images are generated in raster order, pixel by pixel, and within a pixel channel by
channel (the sub-pixel order R, G, B of van den Oord et al. 2016); vectors in the order of their
coordinates. Flat models (NADE, MADE) may use other orderings and say so through ``orders()``.

Conditionals. ``conditionals(x, y)`` returns (B, *shape, P): P parameters of the distribution
of each dimension, computed only from the dimensions before it. Four per-dimension
distributions (``genzoo.distributions.likelihoods``) cover the data: Bernoulli for binary pixels,
a K-way softmax for K-level pixels (256 for 8-bit, van den Oord et al. 2016), a mixture of
discretised logistics (Salimans et al. 2017), and for real values a mixture of Gaussians (RNADE,
Uria et al. 2013).

Sampling. Generation draws the dimensions one at a time in order. A ``Stepper`` returns the
parameters of the next dimension's conditional from the image filled so far; the naive stepper
runs the whole network each time, cached steppers (``samplers``) recompute only what the new
value changes. All the noise is drawn before the first step, so every sampler turns one
generator state into the same image.

Completion (inpainting). ``complete(x, observed)`` keeps the observed pixels and draws the others
in order. A hidden pixel whose successors in the ordering are all hidden is drawn from its exact
conditional given the observed pixels; one that precedes an observed pixel is drawn ignoring that
(later) observed pixel, which an autoregressive model cannot condition on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.distributions.likelihoods import build_likelihood
from genzoo.distributions.numerics import at_least_fp32, draw
from genzoo.models.base import (
    EvalDefaults,
    GenerativeModel,
    LogLikelihood,
    SamplerSpec,
    check_choice,
    check_labelled,
    check_positive,
)
from genzoo.nn.mode import eval_mode

AR_LIKELIHOODS = ("bernoulli", "categorical", "logistic_mixture", "gaussian_mixture")


# --- config --------------------------------------------------------------------------------------
@dataclass
class AutoregressiveConfig:
    """Fields every autoregressive model has (mixed into each model's config dataclass)."""

    likelihood: str = "auto"  # "auto" (bernoulli for binary data, categorical for levels, gaussian_mixture for real values) | "bernoulli" | "categorical" | "logistic_mixture" | "gaussian_mixture"
    mixture_components: int = 5  # M, components of the logistic_mixture and gaussian_mixture likelihoods
    class_conditional: bool = False  # condition on class labels (needs a labelled dataset)

    def resolved_likelihood(self, info: DataInfo) -> str:
        if self.likelihood != "auto":
            return self.likelihood
        return {"binary": "bernoulli", "discrete": "categorical", "continuous": "gaussian_mixture"}[info.value_type]

    def validate_likelihood(self, info: DataInfo, model_name: str, supported: tuple[str, ...]) -> None:
        check_choice(self, "likelihood", ("auto", *supported))
        check_positive(self, "mixture_components")
        chosen = self.resolved_likelihood(info)
        if info.value_type == "continuous" and chosen != "gaussian_mixture":
            raise ValueError(f"{model_name} with likelihood {chosen!r} needs discrete data, and {info.name} is "
                             "continuous; use --set likelihood=gaussian_mixture (or auto)")
        if chosen == "bernoulli" and info.value_type != "binary":
            raise ValueError(
                f"{model_name} with likelihood 'bernoulli' needs binary pixels, and {info.name} has "
                f"{info.num_levels} levels; use binarized_mnist, or --set likelihood=categorical"
                + (" (or logistic_mixture)" if "logistic_mixture" in supported else ""))
        if self.class_conditional:
            check_labelled(info, model_name)


# --- the model ---
NAIVE = SamplerSpec("naive", (), "the whole network once per dimension (D passes)")
CACHED = SamplerSpec("cached", (), "per dimension, only what the new value changes (Ramachandran et al. 2017)")

# -----------------------------------------------------------------------------------
Stepper = Callable[[int], Tensor]  # flat dimension index d (into (C, H, W) or (D,)) -> parameters (B, P) of p(x_d | x_<d)


def raster_order(shape: tuple[int, ...]) -> Tensor:
    """(D,) flat indices in generation order: for (C, H, W), pixels in raster order, channels within;
    for a vector (D,), its coordinates in turn."""
    if len(shape) == 1:
        return torch.arange(shape[0])
    c, h, w = shape
    return torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)


def observed_mask(observed: Tensor, x: Tensor) -> Tensor:
    """A bool mask of x's shape, True where observed: for images (B, C, H, W) from (H, W), (C, H, W)
    or (B, C, H, W); for vectors (B, D) from (D,) or (B, D). Other shapes fail by name."""
    images = x.dim() == 4
    allowed = [tuple(x.shape[i:]) for i in range(3 if images else 2)]  # (B, ...), (...)[, (H, W)]
    if tuple(observed.shape) not in allowed:
        expected = (f"(H, W) = {tuple(x.shape[2:])}, (C, H, W) or (B, C, H, W)" if images
                    else f"(D,) = {tuple(x.shape[1:])} or (B, D)")
        raise ValueError(f"the mask of observed {'pixels' if images else 'dimensions'} has shape "
                         f"{tuple(observed.shape)}; for {'images' if images else 'vectors'} {tuple(x.shape)} "
                         f"it must be {expected}")
    return observed.bool().to(x.device).expand(x.shape)


class AutoregressiveModel(GenerativeModel):
    """Base of the autoregressive family: subclasses implement ``conditionals`` (and cached steppers)."""

    supported_likelihoods: ClassVar[tuple[str, ...]] = AR_LIKELIHOODS
    capabilities = frozenset({"complete"})
    samplers = (NAIVE,)  # the first is the default
    estimators = ("exact",)

    def __init__(self, config, info: DataInfo):
        super().__init__(config, info)
        self.likelihood = build_likelihood(config.resolved_likelihood(info), info.num_levels, config.mixture_components)
        self.register_buffer("order", raster_order(info.shape), persistent=False)

    @property
    def input_kind(self) -> str:
        return self.likelihood.input_kind

    @property
    def conditional(self) -> bool:
        return self.config.class_conditional

    @property
    def params_per_dim(self) -> int:
        return self.likelihood.params_per_dim

    # --- one pass: every conditional -------------------------------------------------------------
    def conditionals(self, x: Tensor, y: Tensor | None = None, component: int = 0) -> Tensor:
        """(B, *shape) inputs -> (B, *shape, P) parameters; entry i depends only on x before i in
        the order ``orders()[component]`` of mixture component ``component`` (most models have one)."""
        raise NotImplementedError

    def check_component(self, component: int) -> int:
        count = len(self.orders())
        if not 0 <= component < count:
            raise ValueError(f"{self.name} has {count} mixture component(s) (orders); component {component} does not exist")
        return component

    def dim_log_probs(self, x: Tensor, y: Tensor | None = None, component: int = 0) -> Tensor:
        """log p_k(x_i | x_<i [, y]) of every dimension under component k: (B, *shape) nats, in fp32
        (fp64 for a fp64 model)."""
        self.check_input(x)
        y = self.check_labels(y, len(x))
        params = at_least_fp32(self.conditionals(x, y, self.check_component(component)))
        return self.likelihood.log_prob(x.to(params.dtype), params)

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        nll = -self.dim_log_probs(x, y).flatten(1).sum(1)  # (B,) nats
        return {"loss": nll, "nll": nll}

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        return LogLikelihood(self.dim_log_probs(x, y).flatten(1).sum(1), "exact",
                             "chain rule: the sum of every dimension's conditional, one network pass")

    # --- one dimension at a time -----------------------------------------------------------------
    def orders(self) -> Tensor:
        """(K, D) generation orders of the model's K mixture components (one for most models)."""
        return self.order[None]

    def stepper(self, sampler: str, x: Tensor, y: Tensor | None, component: int = 0) -> Stepper:
        """A function d -> parameters (B, P) of p(x_d | x before d), reading x as it is filled in.

        The caller writes each drawn value into ``x`` (in place) before asking for the next
        dimension, in the order ``orders()[component]``. "naive" reruns the whole network.
        """
        if sampler != "naive":
            raise ValueError(f"{self.name} has no {sampler!r} sampler; choose one of: {', '.join(s.name for s in self.samplers)}")
        component = self.check_component(component)
        return lambda d: self.conditionals(x, y, component).flatten(1, -2)[:, d]

    def check_sampler(self, sampler: str | None) -> str:
        return self.sampler_spec(sampler).name

    @torch.no_grad()
    def complete(self, x: Tensor, observed: Tensor, labels: Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None) -> Tensor:
        """Fill in the hidden dimensions of x (B, *shape), keeping the observed ones exactly.

        ``observed``: bool, True where x is kept: (H, W), (C, H, W) or (B, C, H, W) for images,
        (D,) or (B, D) for vectors. Hidden
        dimensions are drawn in the model's order from their conditionals (see the module
        docstring for when that is exact conditional sampling).
        """
        sampler = self.check_sampler(sampler)
        self.check_input(x)
        labels = self.check_labels(labels, len(x))
        keep = observed_mask(observed, x)
        x = torch.where(keep, x.to(self.dtype), torch.zeros((), dtype=self.dtype, device=x.device)).contiguous()  # hidden: never read before drawn
        b, d = len(x), self.info.dim
        # all the noise first: the image depends on the generator, not on the sampler
        uniform = draw(torch.rand, (b, d, self.likelihood.noise_per_dim), generator, x.device)
        component = draw(torch.rand, (b,), generator, x.device)
        orders = self.orders()
        which = (component * len(orders)).long().clamp(max=len(orders) - 1)  # a uniform mixture component each
        with eval_mode(self):
            for k in range(len(orders)):
                rows = (which == k).nonzero()[:, 0]
                if len(rows):
                    x[rows] = self._fill(x[rows], keep[rows], None if labels is None else labels[rows],
                                         uniform[rows], sampler, k)
        return x

    def _fill(self, x: Tensor, keep: Tensor, labels: Tensor | None, uniform: Tensor, sampler: str,
              component: int) -> Tensor:
        """Draw the hidden dimensions of x in order ``component``; x (B, *shape) is filled in place."""
        flat, hidden = x.view(len(x), -1), ~keep.reshape(len(x), -1)  # (B, D) views
        step = self.stepper(sampler, x, labels, component)
        every_step = sampler != "naive"  # a cached stepper must see every position to keep its caches
        for d in self.orders()[component].tolist():
            if not (every_step or hidden[:, d].any()):
                continue
            params = at_least_fp32(step(d))  # (B, P)
            value = self.likelihood.sample(params, uniform[:, d])
            flat[:, d] = torch.where(hidden[:, d], value, flat[:, d])
        return x

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               sampler: str | None = None) -> Tensor:
        """n draws (n, *shape) made dimension by dimension; ``sampler`` from ``samplers``."""
        x = torch.zeros(n, *self.info.shape, dtype=self.dtype, device=self.device)
        return self.complete(x, torch.zeros(self.info.shape, dtype=torch.bool), labels, generator, sampler)

    @torch.no_grad()
    def stepwise_log_likelihood(self, x: Tensor, y: Tensor | None = None, sampler: str = "naive",
                                component: int = 0) -> Tensor:
        """log p(x) (B,) as the sum of the D conditionals asked for one dimension at a time, in order.

        Equals ``log_likelihood`` for a correct model (a test of the one-pass network and of
        every cached stepper); D network calls, so only for small images.
        """
        y = self.check_labels(y, len(x))
        x = x.to(self.dtype).contiguous()
        flat = x.view(len(x), -1)
        step = self.stepper(self.check_sampler(sampler), x, y, component)
        total = torch.zeros(len(x), dtype=at_least_fp32(x).dtype, device=x.device)
        with eval_mode(self):
            for d in self.orders()[component].tolist():
                params = at_least_fp32(step(d))
                total += self.likelihood.log_prob(flat[:, d].to(params.dtype), params)
        return total

    @torch.no_grad()
    def conditional_log_likelihood(self, x: Tensor, observed: Tensor, y: Tensor | None = None) -> dict:
        """log p(x_hidden | x_observed) per example (B,), and whether it is exact.

        It is sum_{i hidden} log p(x_i | x_<i): exact when every observed dimension precedes every
        hidden one in the model's order (a bottom half under raster order); otherwise each hidden
        pixel conditions only on the observed pixels before it, and ``exact`` is False.
        """
        keep = observed_mask(observed, x)
        with eval_mode(self):
            log_probs = self.dim_log_probs(x, y)  # (B, *shape)
        value = (log_probs * (~keep)).flatten(1).sum(1)
        exact = all(observed_precede_hidden(keep_b, order) for keep_b in keep for order in self.orders())
        return {"log_likelihood": value, "exact": exact}


def observed_precede_hidden(keep: Tensor, order: Tensor) -> bool:
    """True when, along ``order`` (D,), no observed dimension comes after a hidden one."""
    in_order = keep.reshape(-1)[order.to(keep.device)]
    first_hidden = (~in_order).nonzero()
    return len(first_hidden) == 0 or bool(~in_order[first_hidden[0, 0]:].any())


# --- the output layer of image models --------------------------------------------------------------
class PixelOutputHead(nn.Module):
    """Per-pixel features (B, F, H, W) -> conditional parameters (B, C, H, W, P).

    The features at a pixel see only earlier pixels. Channel c of a pixel may also depend on its
    channels < c (sub-pixel order): a 1x1 link from those values, masked strictly lower-triangular
    over channels, adds to channel c's parameters (the linear channel dependence of PixelCNN++;
    absent for one-channel images).
    """

    def __init__(self, features: int, channels: int, params_per_dim: int):
        super().__init__()
        self.channels, self.params_per_dim = channels, params_per_dim
        self.out = nn.Conv2d(features, channels * params_per_dim, 1)
        self.link = None
        if channels > 1:
            self.link = nn.Conv2d(channels, channels * params_per_dim, 1, bias=False)
            # output channel group c (P rows each) sees input channels < c
            mask = torch.tril(torch.ones(channels, channels), diagonal=-1).repeat_interleave(params_per_dim, 0)
            self.register_buffer("link_mask", mask[:, :, None, None], persistent=False)

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        return self.add_channel_link(self.out(features), x)

    def add_channel_link(self, out: Tensor, x: Tensor) -> Tensor:
        """``self.out(features)`` (B, C*P, H, W) plus the link from x's earlier channels -> (B, C, H, W, P)."""
        if self.link is not None:
            out = out + F.conv2d(x, self.link.weight * self.link_mask)
        b, _, h, w = out.shape
        return out.reshape(b, self.channels, self.params_per_dim, h, w).permute(0, 1, 3, 4, 2)


def label_bias(num_classes: int, features: int) -> nn.Embedding:
    """A learned per-class bias (B,) -> (B, features), zero at initialisation (the unconditional model)."""
    embedding = nn.Embedding(num_classes, features)
    nn.init.zeros_(embedding.weight)
    return embedding



class PixelModel(AutoregressiveModel):
    """An image model: a network of per-pixel features that see only earlier pixels, then the
    ``PixelOutputHead`` (PixelCNN, Gated PixelCNN, PixelRNN).

    Subclasses build ``self.head`` and define ``features`` (the whole image in one pass) and
    ``cached_features`` (one pixel at a time, from caches); the conditionals and both samplers follow.
    """

    samplers = (CACHED, NAIVE)
    # one pixel at a time: 1,000 samples keep the default sample metrics to minutes (PixelRNN: ~6 min here)
    eval_defaults = EvalDefaults(samples=1000)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, F, H, W); the features at a pixel depend only on the pixels before it."""
        raise NotImplementedError

    def cached_features(self, x: Tensor, y: Tensor | None) -> Callable[[int, int], Tensor]:
        """``features_at(row, col)`` -> (B, F), called for every pixel in raster order while x is filled in."""
        raise NotImplementedError

    def conditionals(self, x: Tensor, y: Tensor | None = None, component: int = 0) -> Tensor:
        self.check_component(component)  # one order: component 0
        return self.head(self.features(x, y), x)  # (B, C, H, W, P)

    def stepper(self, sampler: str, x: Tensor, y: Tensor | None, component: int = 0) -> Stepper:
        if sampler != "cached":
            return super().stepper(sampler, x, y, component)
        self.check_component(component)  # one order: component 0
        return pixel_stepper(self.cached_features(x, y), self.head, x, self.info.shape)


def pixel_stepper(features_at: Callable[[int, int], Tensor], head: PixelOutputHead, x: Tensor,
                  shape: tuple[int, int, int]) -> Stepper:
    """A stepper for an image model from ``features_at(row, col)`` -> (B, F), the output features
    at one pixel computed from the pixels before it (cached by the model as it sees fit).

    The features and ``head.out`` are computed once per pixel, at its first channel; each channel's
    parameters then add the link from the pixel's channels filled so far.
    """
    c, h, w = shape
    current: dict[str, Tensor] = {}

    def step(d: int) -> Tensor:
        channel, pixel = divmod(d, h * w)
        row, col = divmod(pixel, w)
        if channel == 0:
            current["out"] = head.out(features_at(row, col)[:, :, None, None])  # (B, C*P, 1, 1)
        # each channel adds the link from the channels of this pixel drawn before it
        return head.add_channel_link(current["out"], x[:, :, row:row + 1, col:col + 1])[:, channel, 0, 0]

    return step
