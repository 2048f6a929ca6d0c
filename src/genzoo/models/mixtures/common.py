"""What the mixtures share: the weights, the E-step and the likelihood over components, flat float64
inputs, the components check, and samples shaped as data."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from genzoo.distributions.mixture import mixture_posterior
from genzoo.models.base import ClosedFormModel, EvalDefaults, LogLikelihood


def flat(x: Tensor) -> Tensor:
    """Inputs (N, *shape) -> (N, D) float64: EM's sums of squares need its precision."""
    return x.reshape(len(x), -1).double()


class Mixture(ClosedFormModel):
    """p(x) = sum_k pi_k p(x | k): a buffer ``weights`` pi (K,) and ``component_log_densities`` log p(x | k)
    (N, K) (densities of real inputs, or masses of binary ones), combined by ``mixture_posterior``."""

    family = "mixtures"
    estimators = ("closed_form",)
    eval_defaults = EvalDefaults(samples=1000)
    likelihood_method: ClassVar[str]  # how log p(x | k) is computed, for the likelihood's reason

    def component_log_densities(self, x: Tensor) -> Tensor:
        """log p(x_n | k) (N, K) of inputs (N, *shape)."""
        raise NotImplementedError

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log p(x) (N,), responsibilities p(k | x) (N, K)): the E-step."""
        return mixture_posterior(self.component_log_densities(x), self.weights.log())

    def check_components(self, n: int) -> None:
        """More components than examples leaves some with none to fit them."""
        k = self.config.components
        if k > n:
            raise ValueError(f"{self.name}: components={k} exceeds the {n:,} training examples; "
                             f"use at most {n} (--set components=N)")

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """Exact on the data as stored (real vectors, binary images); on dequantised levels a bound."""
        self.check_input(x)
        log_p, _ = self.posterior(x)
        method = f"{self.likelihood_method}, log-sum-exp over components"
        if self.input_kind == "continuous" and self.info.value_type != "continuous":
            return LogLikelihood(log_p, "lower_bound", f"{method}, on uniformly dequantised inputs; "
                                 "log P(x) >= log p(v) - D log K (Jensen)", None)
        return LogLikelihood(log_p, "exact", method, torch.zeros_like(log_p))

    def as_data(self, samples: Tensor) -> Tensor:
        """Samples (n, D) float64 -> (n, *shape) float32 like the data; images clamped into the dequantised
        pixels' [0, 1], which a Gaussian's tails leave (the density itself is not truncated)."""
        samples = samples.float().reshape(len(samples), *self.info.shape)
        return samples.clamp(0, 1) if self.info.kind == "image" else samples
