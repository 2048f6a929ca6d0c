"""An exponential moving average of the weights (and buffers), for sampling and evaluation."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of ``model`` whose weights follow w_ema <- decay w_ema + (1 - decay) w after each ``update_parameters``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
