"""What the mixtures share: flat float64 inputs, the components check, the likelihood's kind."""

from __future__ import annotations

from torch import Tensor

from genzoo.models.base import ClosedFormModel, LogLikelihood


def flat(x: Tensor) -> Tensor:
    """Inputs (N, *shape) -> (N, D) float64: EM's sums of squares need its precision."""
    return x.reshape(len(x), -1).double()


def check_components(model: ClosedFormModel, n: int) -> None:
    """More components than examples leaves some with none to fit them."""
    k = model.config.components
    if k > n:
        raise ValueError(f"{model.name}: components={k} exceeds the {n:,} training examples; "
                         f"use at most {n} (--set components=N)")


def continuous_likelihood(model: ClosedFormModel, log_p: Tensor, method: str) -> LogLikelihood:
    """log p (B,) of a density on real inputs: exact on real vectors, a bound on dequantised levels."""
    if model.info.value_type == "continuous":
        return LogLikelihood(log_p, "exact", method, log_p.new_zeros(log_p.shape))
    return LogLikelihood(log_p, "lower_bound", f"{method}, on uniformly dequantised inputs; "
                         "log P(x) >= log p(v) - D log K (Jensen)", None)


def as_data(model: ClosedFormModel, samples: Tensor) -> Tensor:
    """Samples (n, D) float64 -> (n, *shape) float32 like the data; images clamped into the dequantised
    pixels' [0, 1], which a Gaussian's tails leave (the density itself is not truncated)."""
    samples = samples.float().reshape(len(samples), *model.info.shape)
    return samples.clamp(0, 1) if model.info.kind == "image" else samples
