"""Mixture of Bernoullis fitted by EM, for binary data.

    P(x) = sum_k pi_k prod_d p_kd^x_d (1 - p_kd)^(1 - x_d),

an exact, tractable likelihood (Bishop 2006, section 9.3.3). The M-step's maximum-likelihood
p_kd = sum_n r_nk x_nd / N_k is 0 or 1 at a pixel that the component's examples never (or always)
switch on, and one test image with that pixel flipped then has probability 0: an infinite test
NLL. A Beta(1 + c, 1 + c) prior on each p_kd (c = ``pseudo_count``) gives the MAP update

    p_kd = (sum_n r_nk x_nd + c) / (N_k + 2c),

c pseudo-observations of each value per pixel, so p_kd lies in [c / (N_k + 2c), 1 - c / (N_k + 2c)].
EM then never decreases the log-posterior, log P(X) + log prior, which is what ``objective`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.mixture import (
    draw_components,
    kmeans_plusplus,
    nearest_centre,
)
from genzoo.distributions.numerics import draw
from genzoo.models.base import (
    ClosedFormConfig,
    check_positive,
)
from genzoo.models.mixtures.common import Mixture, flat


@dataclass
class MoBConfig(ClosedFormConfig):
    components: int = 10  # K
    pseudo_count: float = 1.0  # c of the Beta(1 + c, 1 + c) prior on each pixel probability; 0: maximum likelihood

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "components")
        check_positive(self, "pseudo_count", allow_zero=True)


class MoB(Mixture):
    """Mixture of Bernoullis by EM; buffers ``weights`` (K,) and ``probs`` (K, D)."""

    name = "mob"
    description = "mixture of Bernoullis fitted by EM, with a Beta pseudo-count on every pixel"
    Config = MoBConfig
    likelihood_method = "the components' Bernoulli products"
    value_types = ("binary",)  # 8-bit data: binarized_mnist, or gmm / mfa on the levels

    def __init__(self, config: MoBConfig, info: DataInfo):
        super().__init__(config, info)
        self.register_buffer("weights", torch.full((config.components,), 1 / config.components, dtype=torch.float64))
        self.register_buffer("probs", torch.full((config.components, info.dim), 0.5, dtype=torch.float64))

    @property
    def input_kind(self) -> str:
        return "binary"

    def component_log_densities(self, x: Tensor) -> Tensor:
        """log P(x_n | k) = sum_d x log p_kd + (1 - x) log(1 - p_kd): (N, K) of inputs (N, *shape)."""
        x = flat(x)
        return x @ self.probs.log().T + (1 - x) @ torch.log1p(-self.probs).T

    # --- EM -----------------------------------------------------------------------------------
    def initialize_fit(self, x: Tensor, generator: torch.Generator) -> None:
        """k-means++ centres, each example given to its nearest, then one M-step."""
        x = flat(x)
        self.check_components(len(x))
        responsibilities = nearest_centre(x, kmeans_plusplus(x, self.config.components, generator))
        self.update({"count": responsibilities.sum(0), "sum_x": responsibilities.T @ x})

    def statistics(self, x: Tensor) -> dict[str, Tensor]:
        x = flat(x)
        log_p, responsibilities = self.posterior(x)
        return {"count": responsibilities.sum(0), "sum_x": responsibilities.T @ x, "log_likelihood": log_p.sum()}

    def update(self, totals: dict[str, Tensor]) -> None:
        count, c = totals["count"], self.config.pseudo_count
        nk = count + 10 * torch.finfo(count.dtype).eps  # (K,): an empty component divides by no zero
        self.weights.copy_(nk / nk.sum())
        self.probs.copy_((totals["sum_x"] + c) / (nk.unsqueeze(-1) + 2 * c))

    def objective(self, totals: dict[str, Tensor], n: int) -> float:
        """(log P(X) + log prior) / n, the log-posterior EM climbs (up to the prior's constant)."""
        c = self.config.pseudo_count
        log_prior = c * (self.probs.log() + torch.log1p(-self.probs)).sum() if c else 0.0
        return (totals["log_likelihood"].item() + float(log_prior)) / n

    # --- the protocol -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A component k ~ pi, then each pixel ~ Bernoulli(p_kd): (n, *shape) in {0, 1}."""
        components = draw_components(n, self.weights, generator)
        u = draw(torch.rand, (n, self.info.dim), generator, self.probs.device, torch.float64)
        return (u < self.probs[components]).float().reshape(n, *self.info.shape)
