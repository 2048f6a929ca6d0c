"""Numerical helpers shared by every density: noise from an explicit generator, log-mean-exp, fp32,
the importance-weighted estimate and its variance."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def at_least_fp32(t: Tensor) -> Tensor:
    """bf16/fp16 -> fp32 (likelihoods and losses are computed in fp32 at least); fp32 and fp64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(x))) along ``dim``, stably."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def draw(sampler, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
         dtype: torch.dtype = torch.float32) -> Tensor:
    """``torch.randn`` or ``torch.rand`` noise on ``device``, drawn from ``generator`` if given.

    The generator may live on another device than the result (a CPU generator seeds GPU sampling).
    """
    if generator is None:
        return sampler(shape, device=device, dtype=dtype)
    return sampler(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def importance_weighted_log_mean(log_sum: Tensor, log_square_sum: Tensor, k: int) -> tuple[Tensor, Tensor | None]:
    """log (1/K) sum_k w_k and the variance of that estimate, from log sum_k w_k and log sum_k w_k^2 over K draws.

    The variance is the delta method's, Var[log mean w] ~ Var[w] / (K mean(w)^2) = (K sum w^2 / (sum w)^2 - 1)
    / (K - 1) with the unbiased sample variance of the weights; None from a single draw.
    """
    value = log_sum - math.log(k)
    if k == 1:
        return value, None
    ratio = torch.exp(log_square_sum - 2 * log_sum)  # sum w^2 / (sum w)^2
    return value, (k * ratio - 1).clamp_min(0) / (k - 1)
