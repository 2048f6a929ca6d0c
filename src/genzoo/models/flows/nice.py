"""NICE: additive couplings and a diagonal scaling.

Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR 2015 workshop
(arXiv:1410.8516). On a vector x (an image is flattened), each coupling keeps the even or the odd
coordinates x_A and shifts the others, y_B = x_B + m(x_A) (eq. 7), alternating; the Jacobian is
unit-triangular, so the couplings are volume-preserving and the final diagonal scaling y = x exp(s)
(section 3.3) carries the whole log-determinant, sum_i s_i.

Deviations: a standard normal base (the paper used a logistic one on MNIST) and the logit of the
dequantised pixels as the first transform (the paper rescaled them to [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.core import DataInfo
from genzoo.models.base import ModelConfig, check_positive
from genzoo.models.flows.base import Flow, FlowConfig
from genzoo.models.flows.transforms import (
    Coupling,
    Flatten,
    Scaling,
    Transform,
    alternating_mask,
)


def check_coupling_dim(config: ModelConfig, info: DataInfo) -> None:
    """A coupling keeps some coordinates and transforms the others: it needs at least 2."""
    if info.dim < 2:
        raise ValueError(f"{type(config).__name__}: a coupling needs at least 2 dimensions, and {info.name} has 1")


@dataclass
class NICEConfig(ModelConfig, FlowConfig):
    couplings: int = 4  # additive coupling layers, alternating even/odd coordinates
    hidden: int = 1000  # units of each coupling's MLP (the paper's 1000)
    layers: int = 5  # hidden layers of each coupling's MLP (the paper's 5)

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "couplings", "hidden", "layers")
        check_coupling_dim(self, info)
        self.validate_flow(info, "nice")


class NICE(Flow):
    name = "nice"
    description = "NICE (Dinh et al. 2014): additive couplings on the flattened data, a diagonal scaling"
    Config = NICEConfig

    def transforms(self) -> list[Transform]:
        c, d = self.config, self.info.dim
        first = [Flatten(self.info.shape)] if self.info.kind == "image" else []
        couplings = [Coupling(alternating_mask(d, i % 2), "additive", c.hidden, c.layers, self.context_dim)
                     for i in range(c.couplings)]
        return first + couplings + [Scaling((d,))]
