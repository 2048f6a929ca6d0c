"""Mixture of factor analysers fitted by expectation-maximisation.

    p(x) = sum_k pi_k N(x; mu_k, W_k W_k^T + Psi_k),   W_k (D, R) loadings, Psi_k diagonal (D,),

the marginal of z ~ N(0, I_R), x | z, k ~ N(mu_k + W_k z, Psi_k) (Ghahramani & Hinton 1996, "The EM
algorithm for mixtures of factor analyzers", with a diagonal Psi per component as most
implementations). Each component is a Gaussian with D + D R parameters instead of D (D + 1) / 2, so a
full-image mixture is practical at D = 784; its density costs O(D R) per example by the Woodbury
identity (``genzoo.distributions.mixture.factor_analyser_posterior``), never a D x D matrix.

EM, in float64:

- E-step: responsibilities r_nk (``mixture_posterior``) and the latent posterior of each component,
  G_k = M_k^-1 = (I + W_k^T Psi_k^-1 W_k)^-1, E[z | x, k] = G_k W_k^T Psi_k^-1 (x - mu_k),
  E[z z^T | x, k] = G_k + E[z] E[z]^T.
- M-step on the augmented loadings W~_k = [W_k, mu_k] and z~ = [z; 1] (eq. 15-16):
  W~_k = (sum_n r x E[z~]^T) (sum_n r E[z~ z~^T])^-1,
  Psi_k = diag(sum_n r x x^T - W~_k sum_n r E[z~] x^T) / N_k + reg_covar.

The statistics are sums over examples, so they add over batches and processes. The start is
k-means++ with a probabilistic PCA of each cluster (Tipping & Bishop 1999). On images the density is
on dequantised pixels, and its bits/dim bound the discrete likelihood, as for ``gmm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.mixture import (
    check_positive_definite,
    draw_components,
    factor_analyser_posterior,
    kmeans_plusplus,
    low_rank_gaussian_log_densities,
    mixture_posterior,
    nearest_centre,
)
from genzoo.distributions.numerics import draw
from genzoo.models.base import (
    ClosedFormConfig,
    check_positive,
)
from genzoo.models.mixtures.common import Mixture, flat


@dataclass
class MFAConfig(ClosedFormConfig):
    components: int = 10  # K
    rank: int | None = None  # R, latent factors per component; None: min(10, D - 1)
    # added to Psi after each M-step, in the data's units (variance): on [0, 1] pixels 1e-6 is about
    # the variance of the 1/256 dequantisation noise, 1 / (12 x 256^2) = 1.3e-6
    reg_covar: float = 1e-6

    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_positive(self, "components")
        check_positive(self, "reg_covar", allow_zero=True)
        if self.rank is not None:
            check_positive(self, "rank")
            if self.rank >= info.dim:
                raise ValueError(f"MFAConfig.rank={self.rank} must be below the data's dimension {info.dim}")

    def resolved_rank(self, info: DataInfo) -> int:
        return min(10, info.dim - 1) if self.rank is None else self.rank


def probabilistic_pca(x: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """(mean (D,), loadings W (D, R), residual variances (D,)) of x (N, D), N > R, as probabilistic PCA:
    W = U_R (Lambda_R - sigma^2)^1/2 with sigma^2 the mean discarded eigenvalue of the sample covariance
    (Tipping & Bishop 1999, eq. 7-8), and the residual diag(S - W W^T) >= 0 per dimension."""
    n, d = x.shape
    mean = x.mean(0)
    centred = x - mean  # (N, D)
    variances = (centred**2).mean(0)  # diag(S) (D,)
    if n < d:  # the Gram matrix X X^T / N (N, N) has S's nonzero eigenvalues; its eigenvectors u give S's as X^T u
        eigenvalues, u = torch.linalg.eigh(centred @ centred.T / n)  # ascending
        top = eigenvalues[-rank:].flip(0)  # (R,)
        directions = centred.T @ u[:, -rank:].flip(1) / (n * top.clamp_min(torch.finfo(x.dtype).tiny)).sqrt()
    else:
        eigenvalues, v = torch.linalg.eigh(centred.T @ centred / n)  # (D,), (D, D) ascending
        top, directions = eigenvalues[-rank:].flip(0), v[:, -rank:].flip(1)  # (R,), (D, R)
    sigma2 = (variances.sum() - top.sum()) / (d - rank)  # the mean of the D - R discarded eigenvalues
    loadings = directions * (top - sigma2).clamp_min(0).sqrt()  # (D, R)
    residual = (variances - (loadings**2).sum(-1)).clamp_min(0)  # diag(S - W W^T) (D,)
    return mean, loadings, residual


class MFA(Mixture):
    """Mixture of factor analysers by EM; buffers ``weights`` (K,), ``means`` (K, D), ``loadings`` (K, D, R),
    ``noise_variances`` (K, D)."""

    name = "mfa"
    description = "mixture of factor analysers fitted by EM: K Gaussians with rank-R plus diagonal covariances"
    Config = MFAConfig
    likelihood_method = "the Gaussian densities by the Woodbury identity"

    def __init__(self, config: MFAConfig, info: DataInfo):
        super().__init__(config, info)
        k, d, r = config.components, info.dim, config.resolved_rank(info)
        self.rank = r
        self.register_buffer("weights", torch.full((k,), 1 / k, dtype=torch.float64))
        self.register_buffer("means", torch.zeros(k, d, dtype=torch.float64))
        self.register_buffer("loadings", torch.zeros(k, d, r, dtype=torch.float64))
        self.register_buffer("noise_variances", torch.ones(k, d, dtype=torch.float64))

    @property
    def input_kind(self) -> str:
        return "continuous"

    def set_parameters(self, weights: Tensor, means: Tensor, loadings: Tensor, noise_variances: Tensor) -> None:
        """Copy in (weights (K,), means (K, D), loadings (K, D, R), noise variances Psi (K, D))."""
        self.weights.copy_(weights)
        self.means.copy_(means)
        self.loadings.copy_(loadings)
        self.noise_variances.copy_(noise_variances)

    def component_log_densities(self, x: Tensor) -> Tensor:
        """log N(x_n; mu_k, W_k W_k^T + Psi_k) (N, K) of inputs (N, *shape)."""
        return low_rank_gaussian_log_densities(flat(x), self.means, self.loadings, self.noise_variances)

    # --- EM -----------------------------------------------------------------------------------
    def initialize_fit(self, x: Tensor, generator: torch.Generator) -> None:
        """k-means++ centres, each example given to its nearest, then each cluster's probabilistic PCA
        (the whole data's for a cluster of R examples or fewer, which has no R directions of its own)."""
        x = flat(x)
        self.check_components(len(x))
        k, r, reg = self.config.components, self.rank, self.config.reg_covar
        centres = kmeans_plusplus(x, k, generator)  # (K, D)
        assignment = nearest_centre(x, centres).argmax(-1)  # (N,)
        count = torch.bincount(assignment, minlength=k).to(x.dtype)  # (K,)
        everything = None
        means, loadings, residuals = [], [], []
        for j in range(k):
            cluster = x[assignment == j]
            if len(cluster) > r:
                mean, w, residual = probabilistic_pca(cluster, r)
            else:
                if everything is None:
                    everything = probabilistic_pca(x, r)
                mean = cluster.mean(0) if len(cluster) else centres[j]
                _, w, residual = everything
            means.append(mean)
            loadings.append(w)
            residuals.append(residual)
        noise_variances = torch.stack(residuals) + reg  # (K, D)
        check_positive_definite((noise_variances <= 0).any(-1), count, "factor", reg)
        nk = count + 10 * torch.finfo(count.dtype).eps
        self.set_parameters(nk / nk.sum(), torch.stack(means), torch.stack(loadings), noise_variances)

    def statistics(self, x: Tensor) -> dict[str, Tensor]:
        """E-step sums: "count" N_k (K,), "sum_x_z" sum r x E[z~]^T (K, D, R+1), "sum_z_z" sum r E[z~ z~^T]
        (K, R+1, R+1), "sum_xx" sum r x^2 (K, D), "log_likelihood" sum log p(x)."""
        x = flat(x)
        log_components, z_mean, z_cov = factor_analyser_posterior(x, self.means, self.loadings, self.noise_variances)
        log_p, responsibilities = mixture_posterior(log_components, self.weights.log())  # (N,), (N, K)
        count = responsibilities.sum(0)  # (K,)
        weighted_z = responsibilities.unsqueeze(-1) * z_mean  # r E[z] (N, K, R)
        sum_z = weighted_z.sum(0)  # (K, R)
        sum_x_z = torch.cat([torch.einsum("nd,nkr->kdr", x, weighted_z),
                             (responsibilities.T @ x).unsqueeze(-1)], -1)  # (K, D, R+1): the last column is sum r x
        # sum r E[z z^T | x] = N_k G_k + sum r E[z] E[z]^T, bordered by sum r E[z] and N_k for z~ = [z; 1]
        sum_zz = count[:, None, None] * z_cov + torch.einsum("nkr,nks->krs", weighted_z, z_mean)  # (K, R, R)
        sum_z_z = torch.cat([torch.cat([sum_zz, sum_z.unsqueeze(-1)], -1),
                             torch.cat([sum_z, count.unsqueeze(-1)], -1).unsqueeze(1)], 1)  # (K, R+1, R+1)
        return {"count": count, "sum_x_z": sum_x_z, "sum_z_z": sum_z_z,
                "sum_xx": responsibilities.T @ (x**2), "log_likelihood": log_p.sum()}

    def update(self, totals: dict[str, Tensor]) -> None:
        """The M-step (eq. 15-16) on the augmented loadings [W_k, mu_k]."""
        count, sum_x_z, sum_z_z = totals["count"], totals["sum_x_z"], totals["sum_z_z"]
        eps = 10 * torch.finfo(count.dtype).eps  # as in N_k (scikit-learn): an empty component solves to W~ = 0
        nk = count + eps  # (K,)
        eye = torch.eye(sum_z_z.shape[-1], dtype=count.dtype, device=count.device)
        augmented = torch.linalg.solve(sum_z_z + eps * eye, sum_x_z.mT).mT  # W~ = S_xz A^-1 (K, D, R+1), A symmetric
        # diag(S_xx - W~ S_zx) is the diagonal of a Schur complement, >= 0 but for rounding
        noise_variances = (totals["sum_xx"] - (augmented * sum_x_z).sum(-1)) / nk.unsqueeze(-1) + self.config.reg_covar
        check_positive_definite((noise_variances <= 0).any(-1), count, "factor", self.config.reg_covar)
        self.set_parameters(nk / nk.sum(), augmented[..., -1], augmented[..., :-1], noise_variances)

    # --- the protocol -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A component k ~ pi, then x = mu_k + W_k z + Psi_k^1/2 eps, z ~ N(0, I_R), eps ~ N(0, I_D): (n, *shape)."""
        components = draw_components(n, self.weights, generator)  # (n,)
        device, r = self.means.device, self.rank
        z = draw(torch.randn, (n, r), generator, device, torch.float64)
        eps = draw(torch.randn, (n, self.info.dim), generator, device, torch.float64)
        x = self.means[components] + self.noise_variances[components].sqrt() * eps  # (n, D)
        for k in components.unique().tolist():  # one (n_k, R) x (R, D) product per component, no (n, D, R) gather
            rows = components == k
            x[rows] += z[rows] @ self.loadings[k].T
        return self.as_data(x)
