"""Gaussian mixture fitted by expectation-maximisation.

    p(x) = sum_k pi_k N(x; mu_k, Sigma_k),

with full, diagonal, tied (one Sigma for all) or spherical (sigma_k^2 I) covariances. EM
(Dempster et al. 1977; Bishop 2006, section 9.2) alternates the E-step, the responsibilities
r_nk = p(k | x_n), and the M-step, the weighted maximum-likelihood pi, mu, Sigma, and never
decreases the log-likelihood. Every step is ``genzoo.distributions.mixture``'s, in float64, and
follows scikit-learn's ``GaussianMixture`` (precision Cholesky factors, ``reg_covar`` on the
diagonal, 10 machine epsilons in N_k), so that from the same start both give the same fit.

On images the mixture is a density on [0, 1]^D of dequantised pixels v = (x + u) / 256: the
training set is dequantised once with the run's seed, so the EM objective is one fixed function,
and its bits/dim bound the discrete likelihood (log P(x) >= log p(v) - D log 256, Jensen). Many
MNIST pixels are 0 in every image: their variance shrinks to the noise's 1 / (12 x 256^2) = 1.3e-6
plus ``reg_covar``, which is why ``reg_covar`` is stated on the data's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.mixture import (
    COVARIANCE_TYPES,
    covariance_scales,
    gaussian_log_densities,
    gaussian_mixture_parameters,
    gaussian_mixture_statistics,
    kmeans_plusplus,
    nearest_centre,
    sample_gaussian_mixture,
)
from genzoo.models.base import (
    ClosedFormConfig,
    check_choice,
    check_positive,
)
from genzoo.models.mixtures.common import Mixture, flat


@dataclass
class GMMConfig(ClosedFormConfig):
    components: int = 8  # K
    covariance: str = "full"  # "full" | "diag" | "tied" | "spherical"
    reg_covar: float = 1e-6  # added to each covariance's diagonal, in the data's units (variance)

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "components")
        check_positive(self, "reg_covar", allow_zero=True)
        check_choice(self, "covariance", COVARIANCE_TYPES)


def precision_shape(covariance: str, k: int, d: int) -> tuple[int, ...]:
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance]


class GMM(Mixture):
    """Gaussian mixture by EM; buffers ``weights`` (K,), ``means`` (K, D), ``precision_cholesky`` (by type)."""

    name = "gmm"
    description = "Gaussian mixture fitted by EM (full, diagonal, tied or spherical covariances)"
    Config = GMMConfig
    likelihood_method = "the Gaussian densities"

    def __init__(self, config: GMMConfig, info: DataInfo):
        super().__init__(config, info)
        k, d = config.components, info.dim
        eye = torch.eye(d, dtype=torch.float64)
        start = {"full": eye.expand(k, d, d).clone(), "tied": eye}.get(config.covariance,
                                                                        torch.ones(precision_shape(config.covariance, k, d), dtype=torch.float64))
        self.register_buffer("weights", torch.full((k,), 1 / k, dtype=torch.float64))
        self.register_buffer("means", torch.zeros(k, d, dtype=torch.float64))
        self.register_buffer("precision_cholesky", start)

    @property
    def input_kind(self) -> str:
        return "continuous"

    def set_parameters(self, weights: Tensor, means: Tensor, precision_cholesky: Tensor) -> None:
        """Copy in (weights (K,), means (K, D), precision Cholesky factors), e.g. a start shared with scikit-learn."""
        self.weights.copy_(weights)
        self.means.copy_(means)
        self.precision_cholesky.copy_(precision_cholesky)

    def component_log_densities(self, x: Tensor) -> Tensor:
        """log N(x_n; mu_k, Sigma_k) (N, K) of inputs (N, *shape)."""
        return gaussian_log_densities(flat(x), self.means, self.precision_cholesky, self.config.covariance)

    # --- EM -----------------------------------------------------------------------------------
    def initialize_fit(self, x: Tensor, generator: torch.Generator) -> None:
        """k-means++ centres, each example given to its nearest, then one M-step (scikit-learn's "k-means++")."""
        x = flat(x)
        self.check_components(len(x))
        responsibilities = nearest_centre(x, kmeans_plusplus(x, self.config.components, generator))
        self.update(gaussian_mixture_statistics(x, responsibilities, self.config.covariance))

    def statistics(self, x: Tensor) -> dict[str, Tensor]:
        x = flat(x)
        log_p, responsibilities = self.posterior(x)
        return {**gaussian_mixture_statistics(x, responsibilities, self.config.covariance),
                "log_likelihood": log_p.sum()}

    def update(self, totals: dict[str, Tensor]) -> None:
        self.set_parameters(*gaussian_mixture_parameters(totals, self.config.covariance, self.config.reg_covar))

    # --- the protocol -------------------------------------------------------------------------
    def gaussian_components(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The K components themselves (``n`` is not used)."""
        scales = covariance_scales(self.precision_cholesky, self.config.covariance, self.config.components)
        covariances = scales @ scales.mT if scales.dim() == 3 else torch.diag_embed(scales.expand_as(self.means) ** 2)
        return self.weights, self.means, covariances

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        scales = covariance_scales(self.precision_cholesky, self.config.covariance, self.config.components)
        return self.as_data(sample_gaussian_mixture(n, self.weights, self.means, scales, generator))
