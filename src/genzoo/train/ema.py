"""An exponential moving average of the weights (and buffers), for sampling and evaluation.

The first update copies the weights; with warm-up, the update after n earlier ones uses the decay
min(decay, (1 + n) / (10 + n)) (the ``num_updates`` rule
of TensorFlow's ExponentialMovingAverage, used by Ho et al.'s DDPM code): the average forgets its first
networks within about 10 / (1 - decay) updates. Without it a decay of 0.999 over a 1,400-step run
still weighs the early, untrained networks (README: it collapses a DCGAN's samples).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(decay: float, updates: int, warmup: bool = True) -> float:
    """The decay of the update after ``updates`` earlier ones."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def ema_model(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """A copy of ``model`` whose weights follow w_ema <- d w_ema + (1 - d) w after each ``update_parameters``,
    d = ``ema_decay_at(decay, n, warmup)`` after n updates."""
    @torch.no_grad()
    def average(ema_params: list, params: list, num_averaged) -> None:  # one dtype per call
        if not ema_params[0].is_floating_point():  # counters such as BatchNorm's num_batches_tracked
            torch._foreach_copy_(ema_params, params)
            return
        d = ema_decay_at(decay, int(num_averaged), warmup)
        torch._foreach_lerp_(ema_params, params, 1 - d)

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)
