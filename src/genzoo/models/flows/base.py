"""What every normalizing flow shares: the change of variables, dequantisation, sampling.

A flow is an invertible map f from data x to noise z = f(x) of the same size, composed of
``transforms``, and a standard normal base density. By the change of variables

    log p(x) = log N(f(x); 0, I) + log|det df/dx|                                        (1)

exactly, in one pass (Dinh et al. 2014, eq. 1), and x = f^{-1}(z), z ~ N(0, I), samples it.

Discrete data (Theis et al. 2016, "A note on the evaluation of generative models", section 3.1;
Ho et al. 2019, "Flow++", section 3.1). A density on [0, 1]^D bounds the probability of K-level
images: with v = (x + u) / K and any noise density q(u | x) on [0, 1)^D,

    log P(x) >= E_q[log p(v) - log q(u | x)] - D log K                                  (2)

- uniform dequantisation (q = 1): the model sees v (``input_kind`` "continuous") and evaluation adds
  the D log K; the reported number is a bound (``lower_bound``).
- variational dequantisation (Flow++): q(u | x) is a conditional flow, u = sigmoid(g(e; x)), e ~ N(0, I),
  trained with the model on (2). The model sees the levels (``input_kind`` "discrete") and returns the
  whole of (2), D log K included; evaluation takes K importance draws (Burda et al. 2016, eq. 8),

    log P(x) >= E[log (1/K) sum_k p(v_k) / q(u_k | x)] - D log K,                        (3)

  a tighter bound than (2) as K grows (``dequantization_draws``, ``eval_defaults.draws``).
- real-valued vectors (the 2-D arena) need none, and (1) is exact.

Images start with the ``Logit`` transform, whose log-det depends on x, so it is part of f. Sampling
takes a temperature T: z ~ N(0, T^2 I) (Glow's reduced-temperature samples, T < 1); sample
metrics always use T = 1, the model itself. A class-conditional flow passes the label's one-hot
to every conditioner as context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.distributions.gaussian import standard_normal_log_prob
from genzoo.distributions.numerics import (
    at_least_fp32,
    draw,
    importance_weighted_log_mean,
)
from genzoo.models.base import (
    EvalDefaults,
    GenerativeModel,
    LogLikelihood,
    SamplerSpec,
    check_choice,
    check_labelled,
    check_positive,
)
from genzoo.models.flows.transforms import (
    Compose,
    Coupling,
    Logit,
    Transform,
    checkerboard_mask,
    data_dependent_init,
)

DEQUANTIZATIONS = ("auto", "uniform", "variational", "none")


@dataclass
class FlowConfig:
    """Fields every flow has (mixed into each model's config dataclass)."""

    dequantization: str = "auto"  # auto (uniform on discrete data, none on real vectors) | uniform | variational | none
    dequantization_draws: int = 16  # K importance draws of the variational dequantiser per image at evaluation (eq. 3)
    dequantizer_couplings: int = 4  # affine couplings of the variational dequantiser q(u | x)
    dequantizer_hidden: int = 32  # channels of their conditioners
    logit_alpha: float = 0.05  # images: x -> logit(alpha + (1 - 2 alpha) x), RealNVP's 0.05
    class_conditional: bool = False  # condition every transform on the class label (needs a labelled dataset)

    def resolved_dequantization(self, info: DataInfo) -> str:
        if self.dequantization != "auto":
            return self.dequantization
        return "none" if info.value_type == "continuous" else "uniform"

    def validate_flow(self, info: DataInfo, model_name: str) -> None:
        name = type(self).__name__
        check_choice(self, "dequantization", DEQUANTIZATIONS)
        check_positive(self, "dequantization_draws", "dequantizer_couplings", "dequantizer_hidden")
        chosen = self.resolved_dequantization(info)
        if info.value_type != "continuous" and chosen == "none":
            raise ValueError(f"{name}.dequantization=none: {model_name} is a density on real values and "
                             f"{info.name} has {info.num_levels} levels; use --set dequantization=uniform or variational")
        if info.value_type == "continuous" and chosen != "none":
            raise ValueError(f"{name}.dequantization={chosen}: {info.name} is real-valued and needs none; "
                             "use --set dequantization=none (or auto)")
        if chosen == "variational" and info.kind != "image":
            raise ValueError(f"{name}.dequantization=variational needs images; {info.name} holds vectors")
        if not 0 <= self.logit_alpha < 0.5:
            raise ValueError(f"{name}.logit_alpha={self.logit_alpha!r} must lie in [0, 0.5)")
        if self.class_conditional:
            check_labelled(info, model_name)


class VariationalDequantizer(nn.Module):
    """q(u | x) on [0, 1)^D for images x (B, C, H, W): u = sigmoid(g(e; x)), e ~ N(0, I), g a stack of
    checkerboard affine couplings whose conditioners also read x (Flow++, section 3.1).

    log q(u | x) = log N(e) - log|det dg/de| - sum log sigmoid'(g(e)).
    """

    def __init__(self, shape: tuple[int, int, int], couplings: int, hidden: int):
        super().__init__()
        c = shape[0]
        self.flow = Compose([Coupling(checkerboard_mask(shape, i % 2), "affine", hidden, 1, context_channels=c)
                             for i in range(couplings)])

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) in [0, 1] -> (u (B, C, H, W), log q(u | x) (B,))."""
        e = draw(torch.randn, tuple(x.shape), generator, x.device, x.dtype)
        h, log_det = self.flow(e, 2 * x - 1)  # the context map, centred
        log_normal = standard_normal_log_prob(e.flatten(1))
        log_sigmoid_grad = (F.logsigmoid(h) + F.logsigmoid(-h)).flatten(1).sum(1)  # log sigmoid'(h)
        return torch.sigmoid(h), log_normal - log_det - log_sigmoid_grad


class Flow(GenerativeModel):
    """Base of the flow family: subclasses build ``transforms()``, the map from (logit) data to noise."""

    family = "flows"
    capabilities = frozenset({"invert", "initialize"})
    samplers = (SamplerSpec("ancestral", ("temperature",), "z ~ N(0, T^2 I), x = f^-1(z); T = 1 samples the model"),)
    estimators = ("change_of_variables",)

    def __init__(self, config, info: DataInfo):
        super().__init__(config, info)
        self.dequantization = config.resolved_dequantization(info)
        self.context_dim = info.num_classes if config.class_conditional else 0
        first = [Logit(config.logit_alpha)] if info.kind == "image" else []
        self.flow = Compose(first + list(self.transforms()))
        self.dequantizer = None
        if self.dequantization == "variational":
            self.dequantizer = VariationalDequantizer(info.shape, config.dequantizer_couplings, config.dequantizer_hidden)

    def transforms(self) -> list[Transform]:
        """The map from (logit) data to flat codes z (B, D): vector flows are flat, image flows end in
        ``Flatten`` or ``MultiScale``."""
        raise NotImplementedError

    # --- what the model consumes ----------------------------------------------------------------
    @property
    def input_kind(self) -> str:
        return "discrete" if self.dequantization == "variational" else "continuous"

    @property
    def conditional(self) -> bool:
        return self.config.class_conditional

    @property
    def eval_defaults(self) -> EvalDefaults:
        draws = self.config.dequantization_draws if self.dequantization == "variational" else 1
        return EvalDefaults(draws=draws)

    def context(self, y: Tensor | None) -> Tensor | None:
        """The conditioners' context: the label's one-hot (B, K), or None for an unconditional flow."""
        if not self.context_dim or y is None:
            return None
        return F.one_hot(y, self.context_dim).to(torch.promote_types(self.dtype, torch.float32))

    # --- the change of variables ----------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """z = f(x) (B, D), flat; discrete inputs are placed at the centre of their cell, (level + 1/2) / K."""
        self.check_input(x)
        v = self._cell_centres(x) if self.input_kind == "discrete" else x
        z, _ = self.flow(v, self.context(self.check_labels(y, len(x))))
        return z

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x = f^-1(z) for z (B, D), in the model's input representation."""
        if z.dim() != 2 or z.shape[1] != self.info.dim:
            raise ValueError(f"{self.name} decodes codes z of shape (B, {self.info.dim}), got {tuple(z.shape)}")
        x = self.flow.inverse(z, self.context(self.check_labels(y, len(z))))
        if self.info.value_type == "continuous":
            return x
        x = x.clamp(0, 1)
        if self.input_kind == "discrete":  # the level whose cell v falls in
            k = self.info.num_levels
            return (x * k).floor().clamp(max=k - 1) / (k - 1)
        return x

    def log_density(self, v: Tensor, y: Tensor | None) -> Tensor:
        """log p(v) (B,) by eq. (1), in fp32."""
        z, log_det = self.flow(v, self.context(y))
        return standard_normal_log_prob(at_least_fp32(z)) + log_det

    def _cell_centres(self, x: Tensor) -> Tensor:
        k = self.info.num_levels
        return (self._levels(x) + 0.5) / k

    def _levels(self, x: Tensor) -> Tensor:
        return torch.round(x * (self.info.num_levels - 1))

    def _variational_terms(self, x: Tensor, y: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """log p(v) - log q(u | x) - D log K (B,) for one draw of u ~ q(u | x): one term of eq. (3)."""
        k = self.info.num_levels
        u, log_q = self.dequantizer(x, generator)
        return self.log_density((self._levels(x) + u) / k, y) - log_q - self.info.dim * math.log(k)

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        """-log p(x) on the model's input (eq. 1; with a variational dequantiser, minus eq. 2)."""
        self.check_input(x)
        y = self.check_labels(y, len(x))
        if self.dequantizer is not None:
            nll = -self._variational_terms(x, y, None)
        else:
            nll = -self.log_density(x, y)
        return {"loss": nll, "nll": nll}

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        self.check_input(x)
        y = self.check_labels(y, len(x))
        if self.dequantizer is None:
            value = self.log_density(x, y)
            if self.dequantization == "none":
                return LogLikelihood(value, "exact", "change of variables (eq. 1), one pass", torch.zeros_like(value))
            return LogLikelihood(value, "lower_bound", "change of variables on uniformly dequantised inputs; "
                                 "log P(x) >= log p(v) - D log K (Jensen)", None)
        log_w = torch.stack([self._variational_terms(x, y, generator) for _ in range(num_samples)])  # (S, B)
        value, variance = importance_weighted_log_mean(torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0),
                                                       num_samples)
        return LogLikelihood(value, "lower_bound", f"variational dequantisation, {num_samples} importance draws "
                             "of q(u | x) (Flow++), D log K included", variance)

    # --- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """x = f^-1(z), z ~ N(0, T^2 I): (n, *shape) in the model's input representation."""
        if not temperature > 0:
            raise ValueError(f"--temperature must be > 0 (the scale of z ~ N(0, T^2 I)), got {temperature}")
        if labels is not None and not self.conditional:
            raise ValueError(f"{self.name} is unconditional and takes no labels; train it with "
                             "--set class_conditional=true to sample a class")
        labels = self.check_labels(labels, n)
        z = temperature * draw(torch.randn, (n, self.info.dim), generator, self.device, self.dtype)
        return self.decode(z, labels)

    def initialize(self, x: Tensor, y: Tensor | None = None) -> None:
        """ActNorm's data-dependent initialisation from one batch: an explicit step, before training."""
        with torch.no_grad(), data_dependent_init(self):
            self.loss(x, y)

    def locate_nonfinite(self, x: Tensor, y: Tensor | None = None) -> str:
        """The first transform whose output or log-det is not finite on this batch ('' if none)."""
        found: list[str] = []
        names = {module: name for name, module in self.named_modules()}

        def check(module, inputs, output):
            finite = all(torch.isfinite(t).all() for t in output if isinstance(t, Tensor))
            if not found and not finite:
                found.append(f"{names[module]} ({type(module).__name__})")

        hooks = [m.register_forward_hook(check) for m in self.modules() if isinstance(m, Transform)]
        try:
            with torch.no_grad():
                self.loss(x, y)
        finally:
            for hook in hooks:
                hook.remove()
        return found[0] if found else ""
