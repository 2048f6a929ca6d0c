"""MAF: masked autoregressive flow.

Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017
(arXiv:1705.07057). Each layer is an autoregressive affine transform whose parameters come from a
MADE network (genzoo's masked layer, ``genzoo.nn.masked``): u_i = (x_i - mu_i(x_{<i})) exp(-alpha_i(x_{<i}))
(eq. 4), log-det -sum_i alpha_i (eq. 5). Density evaluation is one pass; sampling inverts one
dimension at a time, D passes per layer. The order reverses between layers (section 3.3).

Deviations: ActNorm between the layers instead of batch normalisation (the same role, no batch
statistics at test time); alpha is bounded by a soft clamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genzoo.data.core import DataInfo
from genzoo.models.base import ModelConfig, check_positive
from genzoo.models.flows.base import Flow, FlowConfig
from genzoo.models.flows.transforms import (
    ActNorm,
    Flatten,
    MaskedAutoregressive,
    Permutation,
    Transform,
)


def autoregressive_transforms(info: DataInfo, kind: str, layers: int, hidden: int, blocks: int, actnorm: bool,
                              context_dim: int, **transform_options) -> list[Transform]:
    """``layers`` masked autoregressive transforms of ``kind`` on the flattened data, the order reversed
    between them; ``transform_options`` go to each (scale_bound, bins, tail_bound)."""
    d = info.dim
    transforms: list[Transform] = [Flatten(info.shape)] if info.kind == "image" else []
    for layer in range(layers):
        if actnorm:
            transforms.append(ActNorm(d, image=False))
        transforms.append(MaskedAutoregressive(torch.arange(d), kind, (hidden,) * blocks, context_dim, seed=layer,
                                               **transform_options))
        if layer < layers - 1:
            transforms.append(Permutation(torch.arange(d - 1, -1, -1)))
    return transforms


@dataclass
class MAFConfig(ModelConfig, FlowConfig):
    layers: int = 5  # masked autoregressive transforms (the paper's MAF 5)
    hidden: int = 512  # units of each MADE hidden layer
    blocks: int = 2  # hidden layers of each MADE
    actnorm: bool = True  # an ActNorm before each layer
    scale_bound: float = 3.0  # |alpha| < bound (a soft clamp)

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "layers", "hidden", "blocks", "scale_bound")
        self.validate_flow(info, "maf")


class MAF(Flow):
    name = "maf"
    description = "MAF (Papamakarios et al. 2017): MADE-parameterised affine autoregressive layers, orders reversed"
    Config = MAFConfig

    def transforms(self) -> list[Transform]:
        c = self.config
        return autoregressive_transforms(self.info, "affine", c.layers, c.hidden, c.blocks, c.actnorm,
                                         self.context_dim, scale_bound=c.scale_bound)
