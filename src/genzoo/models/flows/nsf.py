"""Neural spline flows: monotone rational-quadratic splines in couplings or autoregressive layers.

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019 (arXiv:1906.04032).
Each transformed coordinate passes through a monotone rational-quadratic spline of ``bins`` bins on
[-B, B] (the identity outside, section 3.1), whose widths, heights and derivatives come from a
conditioner: a coupling network ("RQ-NSF (C)") or a MADE ("RQ-NSF (AR)"). The coupling variant uses
Glow's step (actnorm, invertible 1x1 convolution, spline coupling) and, on images, Glow's
multi-scale levels, as the paper's image experiments did (section 5.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.core import DataInfo
from genzoo.models.base import ModelConfig, check_choice, check_positive
from genzoo.models.flows.base import Flow, FlowConfig
from genzoo.models.flows.glow import glow_transforms
from genzoo.models.flows.maf import autoregressive_transforms
from genzoo.models.flows.nice import check_coupling_dim
from genzoo.models.flows.realnvp import check_squeezes
from genzoo.models.flows.transforms import Transform

NSF_TRANSFORMS = ("coupling", "autoregressive")


@dataclass
class NSFConfig(ModelConfig, FlowConfig):
    transform: str = "coupling"  # coupling (RQ-NSF (C), Glow's steps) | autoregressive (RQ-NSF (AR), vectors)
    levels: int = 2  # images, coupling: L levels of Glow's multi-scale architecture
    steps: int = 4  # coupling: K steps of flow (per level on images)
    layers: int = 5  # autoregressive: masked spline transforms, reversed between
    hidden: int = 64  # channels or units of each conditioner
    blocks: int = 2  # 1x1 conv layers (images) or hidden layers (vectors, MADE) of each conditioner
    bins: int = 8  # K bins of each spline
    tail_bound: float = 3.0  # B: the spline acts on [-B, B], the identity outside
    actnorm: bool = True  # autoregressive: an ActNorm before each layer

    def validate(self, info: DataInfo) -> None:
        check_choice(self, "transform", NSF_TRANSFORMS)
        check_positive(self, "levels", "steps", "layers", "hidden", "blocks", "bins", "tail_bound")
        if self.transform == "coupling":
            check_coupling_dim(self, info)
            if info.kind == "image":
                check_squeezes(self, "levels", info, self.levels, 0)
        self.validate_flow(info, "nsf")


class NSF(Flow):
    name = "nsf"
    description = "Neural spline flow (Durkan et al. 2019): rational-quadratic spline couplings or autoregressive layers"
    Config = NSFConfig

    def transforms(self) -> list[Transform]:
        c, spline = self.config, {"bins": self.config.bins, "tail_bound": self.config.tail_bound}
        if c.transform == "coupling":
            return glow_transforms(self.info, "spline", c.levels, c.steps, c.hidden, c.blocks, self.context_dim, **spline)
        return autoregressive_transforms(self.info, "spline", c.layers, c.hidden, c.blocks, c.actnorm, self.context_dim,
                                         **spline)
