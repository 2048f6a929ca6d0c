"""Glow: steps of ActNorm, an invertible 1x1 convolution and an affine coupling, at several scales.

Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018
(arXiv:1807.03039). Each of L levels squeezes (C, H, W) -> (4C, H/2, W/2), applies K steps of
flow (section 3, table 1: actnorm, an LU-decomposed invertible 1x1 convolution, an affine coupling
on half the channels) and, except at the last level, factors out half the channels under a learned
prior N(mu(h), sigma(h)^2) given the kept half h. At 28x28 there are at most 2 levels (28 -> 14 -> 7)
and no padding. On vectors, the steps act on the coordinates (a D x D invertible linear map).

Deviations: the coupling's scale is exp of a soft-clamped log-scale (the paper: sigmoid(h + 2));
no learned top prior (the unconditional top level is N(0, I); a class-conditional Glow conditions
every coupling and prior on the label instead of the paper's class-conditional top prior).
"""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.core import DataInfo
from genzoo.models.base import ModelConfig, check_positive
from genzoo.models.flows.base import Flow, FlowConfig
from genzoo.models.flows.nice import check_coupling_dim
from genzoo.models.flows.realnvp import check_squeezes
from genzoo.models.flows.transforms import (
    ActNorm,
    Compose,
    Coupling,
    FactorPrior,
    InvertibleLinear,
    MultiScale,
    Squeeze,
    Transform,
    alternating_mask,
    channel_mask,
)


def flow_step(shape: tuple[int, ...], kind: str, hidden: int, blocks: int, context_dim: int, seed: int,
              **coupling_options) -> list[Transform]:
    """One step of flow on data of ``shape`` (C, H, W) or (D,): actnorm, 1x1 conv, coupling of kind ``kind``."""
    image = len(shape) == 3
    mask = channel_mask(shape, 0) if image else alternating_mask(shape[0], 0)
    coupling = Coupling(mask, kind, hidden, blocks, context_dim, **coupling_options)
    return [ActNorm(shape[0], image), InvertibleLinear(shape[0], image, seed), coupling]


def glow_transforms(info: DataInfo, kind: str, levels: int, steps: int, hidden: int, blocks: int, context_dim: int,
                    **coupling_options) -> list[Transform]:
    """Glow's architecture with couplings of ``kind``: ``levels`` levels of ``steps`` steps on images,
    ``steps`` steps on vectors. ``coupling_options`` go to every ``Coupling`` (scale_bound, bins, tail_bound)."""
    def step(shape, seed):
        return flow_step(shape, kind, hidden, blocks, context_dim, seed, **coupling_options)

    if info.kind != "image":
        return [t for k in range(steps) for t in step(info.shape, k)]
    shape, stack, priors = info.shape, [], []
    for level in range(levels):
        shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
        stack.append(Compose([Squeeze(), *(t for k in range(steps) for t in step(shape, 1000 * level + k))]))
        if level < levels - 1:
            kept = shape[0] - shape[0] // 2
            priors.append(FactorPrior(kept, shape[0] // 2, hidden, context_dim))
            shape = (kept, *shape[1:])
    return [MultiScale(info.shape, stack, priors, context_dim)]


@dataclass
class GlowConfig(ModelConfig, FlowConfig):
    levels: int = 2  # images: L levels, each squeezing once (at most 2 at 28x28)
    steps: int = 8  # K steps of flow per level (the paper: 32)
    hidden: int = 128  # channels (images) or units (vectors) of each conditioner (the paper: 512)
    blocks: int = 1  # 1x1 conv layers in a conditioner (images) or hidden layers (vectors)
    scale_bound: float = 2.0  # |log-scale| < bound per coupling (a soft clamp)

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "levels", "steps", "hidden", "blocks", "scale_bound")
        check_coupling_dim(self, info)
        if info.kind == "image":
            check_squeezes(self, "levels", info, self.levels, 0)
        self.validate_flow(info, "glow")


class Glow(Flow):
    name = "glow"
    description = "Glow (Kingma & Dhariwal 2018): actnorm, invertible 1x1 conv, affine coupling; L levels of K steps"
    Config = GlowConfig

    def transforms(self) -> list[Transform]:
        c = self.config
        return glow_transforms(self.info, "affine", c.levels, c.steps, c.hidden, c.blocks, self.context_dim,
                               scale_bound=c.scale_bound)
