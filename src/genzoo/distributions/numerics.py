"""Numerical helpers shared by every density: noise from an explicit generator, log-mean-exp, fp32."""

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
