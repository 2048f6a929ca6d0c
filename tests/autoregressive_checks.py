"""Checks of the autoregressive property shared by the tests of every autoregressive model."""

from __future__ import annotations

import torch

from genzoo.models.autoregressive.base import AutoregressiveModel


def input_gradients(model: AutoregressiveModel, x: torch.Tensor, y: torch.Tensor | None, d: int,
                    component: int = 0) -> torch.Tensor:
    """|d params_d / d x| summed over the batch and parameters: (D,), one entry per input dimension.

    x is continuous here (the network is a function of real inputs), so the gradient shows exactly
    which inputs the conditional of dimension d reads.
    """
    x = x.clone().requires_grad_(True)
    params = model.conditionals(x, y, component).flatten(1, -2)[:, d]  # (B, P), for images and vectors alike
    (grad,) = torch.autograd.grad(params.float().sum(), x, allow_unused=True)
    if grad is None:
        return torch.zeros(x[0].numel())
    return grad.abs().sum(0).reshape(-1)


def check_autoregressive(model: AutoregressiveModel, y: torch.Tensor | None = None, batch: int = 2,
                         component: int = 0, seed: int = 0) -> list[int]:
    """Assert, for every dimension in order ``component``, that its conditional has zero gradient
    with respect to itself and every later dimension and a non-zero one for some earlier dimension
    (when there is one). Returns the number of earlier dimensions each one reads (its receptive field).
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *model.info.shape, generator=generator)
    order = model.orders()[component].tolist()
    seen = []
    for position, d in enumerate(order):
        grad = input_gradients(model, x, y, d, component)
        later = order[position:]
        assert grad[later].max() == 0, f"dimension {d} (step {position}) reads dimension(s) " \
                                       f"{[j for j in later if grad[j] > 0]} at or after it"
        earlier = order[:position]
        reads = int((grad[earlier] > 0).sum()) if earlier else 0
        assert position == 0 or reads > 0, f"dimension {d} (step {position}) reads no earlier dimension"
        seen.append(reads)
    return seen
