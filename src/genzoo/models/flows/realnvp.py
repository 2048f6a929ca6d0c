"""RealNVP: affine couplings, checkerboard and channel masks, a multi-scale architecture.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (arXiv:1605.08803).
An affine coupling keeps x_A and scales and shifts the rest: y_B = x_B exp(s(x_A)) + t(x_A) (eq. 4-5),
log-det sum s. On images (section 3.6), each level but the last is three couplings with alternating
checkerboard masks, a squeeze (C, H, W) -> (4C, H/2, W/2), three couplings with alternating channel
masks, and the factoring-out of half the channels, which go straight to the base density; the last
level is four checkerboard couplings. On vectors, couplings alternate even and odd coordinates.

Deviations: the log-scale is bounded by a soft clamp, s = b tanh(s'/b) (the paper: a learned scale
times tanh); conditioners are Glow's 3x3-1x1-3x3 conv nets (the paper: ResNets), without batch norm.
"""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.core import DataInfo
from genzoo.models.base import ModelConfig, check_positive
from genzoo.models.flows.base import Flow, FlowConfig
from genzoo.models.flows.nice import check_coupling_dim
from genzoo.models.flows.transforms import (
    Compose,
    Coupling,
    MultiScale,
    Squeeze,
    Transform,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
)


def check_squeezes(config: ModelConfig, field: str, info: DataInfo, squeezes: int, levels_per_squeeze_offset: int,
                   min_pixels: int = 1) -> None:
    """``squeezes`` halvings of the height and width must each meet an even size and leave at least
    ``min_pixels`` pixels; the error names ``field`` and the deepest value that builds (the number of
    squeezes plus ``levels_per_squeeze_offset``)."""
    _, h, w = info.shape
    deepest = 0
    while h % 2 == 0 and w % 2 == 0 and (h // 2) * (w // 2) >= min_pixels:
        h, w, deepest = h // 2, w // 2, deepest + 1
    if squeezes > deepest:
        value = getattr(config, field)
        raise ValueError(f"{type(config).__name__}.{field}={value} is deeper than {info.shape[1]}x{info.shape[2]} images "
                         f"allow ({squeezes} squeezes; at most {deepest} halve the size evenly and leave "
                         f"{min_pixels} pixel{'s' if min_pixels > 1 else ''}): use at most "
                         f"{field}={deepest + levels_per_squeeze_offset}")


@dataclass
class RealNVPConfig(ModelConfig, FlowConfig):
    levels: int = 2  # images: scales; each but the last squeezes and factors out half the channels
    couplings: int = 8  # vectors: affine couplings, alternating even/odd coordinates
    hidden: int = 64  # channels (images) or units (vectors) of each conditioner
    blocks: int = 2  # images: 1x1 conv layers in a conditioner; vectors: hidden layers of its MLP
    scale_bound: float = 2.0  # |log-scale| < bound per coupling (a soft clamp)

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "levels", "couplings", "hidden", "blocks", "scale_bound")
        check_coupling_dim(self, info)
        if info.kind == "image":
            check_squeezes(self, "levels", info, self.levels - 1, 1, min_pixels=2)  # a checkerboard needs 2 pixels
        self.validate_flow(info, "realnvp")


class RealNVP(Flow):
    name = "realnvp"
    description = "RealNVP (Dinh et al. 2017): affine couplings, checkerboard/channel masks, multi-scale"
    Config = RealNVPConfig

    def coupling(self, mask, context_dim: int) -> Coupling:
        c = self.config
        return Coupling(mask, "affine", c.hidden, c.blocks, context_dim, scale_bound=c.scale_bound)

    def transforms(self) -> list[Transform]:
        c, k = self.config, self.context_dim
        if self.info.kind != "image":
            return [self.coupling(alternating_mask(self.info.dim, i % 2), k) for i in range(c.couplings)]
        shape, levels = self.info.shape, []
        for level in range(c.levels):
            if level == c.levels - 1:
                levels.append(Compose([self.coupling(checkerboard_mask(shape, i % 2), k) for i in range(4)]))
                break
            squeezed = (4 * shape[0], shape[1] // 2, shape[2] // 2)
            levels.append(Compose([self.coupling(checkerboard_mask(shape, i % 2), k) for i in range(3)] + [Squeeze()] +
                                  [self.coupling(channel_mask(squeezed, i % 2), k) for i in range(3)]))
            shape = (squeezed[0] - squeezed[0] // 2, *squeezed[1:])  # the kept half
        return [MultiScale(self.info.shape, levels, [None] * (c.levels - 1), k)]
