"""The one mixture of genzoo: its E-step, its Gaussian components, its M-step and its sampler.

Every mixture in the package goes through these functions: the VampPrior (the encoder's posteriors
at K pseudo-inputs, diagonal, equal weights), the AAE's prior (K isotropic components on a circle),
the AE's latent mixture (K full-covariance components fitted by EM to the training codes) and the
mixtures family (``gmm``, ``mfa``, ``mob``: ``mixture_posterior`` is their E-step, whatever their
components).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genzoo.distributions.numerics import LOG_2PI, draw

MIXTURE_LOG_WEIGHT_FLOOR = 60.0  # nats below the nearest component, see gaussian_mixture_log_prob


def gaussian_mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log (1/K) sum_k N(z; means_k, diag(exp(logvars_k))): z (..., d), means and logvars (K, d) -> (...).

    The squared Mahalanobis distances come from the expansion
    sum_d (z_d^2 - 2 z_d m_kd + m_kd^2) / v_kd, two matmuls, so memory is (..., K) rather than
    (..., K, d): 5,000 importance samples against 500 components stay small. The expansion
    cancels large terms, so it runs in float32 (float64 if given) even under bf16 autocast.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        z, means, logvars = z.to(dtype), means.to(dtype), logvars.to(dtype)
        log_components = gaussian_log_densities(z.reshape(-1, z.shape[-1]), means, torch.exp(-0.5 * logvars),
                                                "diag").reshape(*z.shape[:-1], len(means))  # (..., K)
        # log-mean-exp, with each component's weight floored at e^-60 of the largest: a trained prior
        # has many components hundreds of nats away, whose weights (and gradients) would be
        # subnormal floats, slow to compute with on CPUs (they made a trained VampPrior IWAE's
        # k=50 training step 1.4x slower here). The floor changes the value
        # by at most a factor 1 + K e^-60 and zeroes those components' gradients (< e^-60 anyway).
        peak = log_components.detach().amax(-1, keepdim=True)  # (..., 1)
        weights = torch.exp((log_components - peak).clamp_min(-MIXTURE_LOG_WEIGHT_FLOOR))  # (..., K) in [e^-60, 1]
        return peak.squeeze(-1) + torch.log(weights.mean(-1))


def sample_gaussian_mixture(n: int, weights: Tensor, means: Tensor, scales: Tensor,
                            generator: torch.Generator | None = None, components: Tensor | None = None) -> Tensor:
    """n draws (n, d) of sum_k w_k N(means_k, S_k S_k^T).

    ``weights`` (K,) sum to one; ``means`` (K, d); ``scales`` either (K, d), the standard deviations
    of diagonal components (or (K, 1), isotropic), or (K, d, d), factors S_k of full covariances
    (any S_k with S_k S_k^T = Sigma_k: a Cholesky factor, or ``covariance_scales``'s P_k^-T).
    ``components`` (n,) picks each draw's component (a label of a conditioned prior); otherwise
    it is drawn by the inverse CDF of the weights. Noise from ``generator``: first eps (n, d), then
    the uniform (n,) of the components, so a draw with given components uses the same eps.
    """
    eps = draw(torch.randn, (n, means.shape[-1]), generator, means.device, means.dtype)  # (n, d)
    if components is None:
        components = draw_components(n, weights, generator)
    if scales.dim() == 2:  # diagonal
        return means[components] + scales[components] * eps
    return means[components] + (scales[components] @ eps.unsqueeze(-1)).squeeze(-1)


def draw_components(n: int, weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """n component indices (n,) drawn with probabilities ``weights`` (K,), by the inverse CDF of one uniform each."""
    u = draw(torch.rand, (n,), generator, weights.device, weights.dtype)
    return torch.searchsorted(weights.cumsum(0), u).clamp(max=len(weights) - 1)


# --- mixtures fitted by EM (the mixtures family and the AE's latent mixture) ----------------------
COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")


class SingularCovariance(ValueError):
    """An M-step gave a covariance that is not positive definite; the message names the component."""


def mixture_posterior(log_components: Tensor, log_weights: Tensor) -> tuple[Tensor, Tensor]:
    """(log p(x) (N,), responsibilities p(k | x) (N, K)) of log_components log p(x | k) (N, K) and
    log_weights log pi_k (K,): log p(x) = logsumexp_k (log pi_k + log p(x | k)), the E-step of every
    mixture here (Gaussian, factor-analyser, Bernoulli)."""
    joint = log_components + log_weights  # (N, K)
    log_p = torch.logsumexp(joint, -1)  # (N,)
    return log_p, torch.exp(joint - log_p.unsqueeze(-1))


def gaussian_log_densities(x: Tensor, means: Tensor, precision_cholesky: Tensor, covariance: str) -> Tensor:
    """log N(x_n; mu_k, Sigma_k) (N, K) of x (N, D), means (K, D) and the Cholesky factors L_k of the
    precisions, Sigma_k^-1 = L_k L_k^T, shaped by ``covariance``: "full" (K, D, D), "tied" (D, D),
    "diag" (K, D) (L = diag(1 / sigma)), "spherical" (K,).

    log N = -D/2 log 2 pi + log |L_k| - ||L_k^T (x - mu_k)||^2 / 2. The tied and diagonal forms expand
    the square into matmuls (cancellation of terms ~ x^2 / sigma^2: call in float64 for small variances).
    """
    d = x.shape[-1]
    if covariance == "full":
        squared = torch.stack([(((x - mu) @ chol_k) ** 2).sum(-1) for mu, chol_k in zip(means, precision_cholesky)], -1)
        log_det = torch.diagonal(precision_cholesky, dim1=-2, dim2=-1).log().sum(-1)  # (K,)
    elif covariance == "tied":  # one L for all: ||L^T x||^2 - 2 (L^T x).(L^T mu_k) + ||L^T mu_k||^2, one product
        xl, ml = x @ precision_cholesky, means @ precision_cholesky  # (N, D), (K, D)
        squared = (xl**2).sum(-1, keepdim=True) - 2 * xl @ ml.T + (ml**2).sum(-1)
        log_det = torch.diagonal(precision_cholesky).log().sum()
    else:
        precisions = precision_cholesky**2  # (K, D) or (K,)
        if covariance == "spherical":
            precisions = precisions.unsqueeze(-1).expand(-1, d)
        squared = (x**2) @ precisions.T - 2 * x @ (means * precisions).T + (means**2 * precisions).sum(-1)
        log_det = 0.5 * precisions.log().sum(-1)  # (K,)
    return -0.5 * (d * LOG_2PI + squared.clamp_min(0)) + log_det


def gaussian_mixture_statistics(x: Tensor, responsibilities: Tensor, covariance: str) -> dict[str, Tensor]:
    """The sufficient statistics of one M-step, sums over the examples of x (N, D) weighted by
    responsibilities r (N, K): "count" N_k = sum r (K,), "sum_x" sum r x (K, D), "sum_xx" sum r x x^T
    (K, D, D) for "full", sum x x^T (D, D) for "tied", sum r x^2 (K, D) for "diag" and "spherical".
    Sums add over batches and processes (an all-reduce), so several processes fit as one."""
    r = responsibilities
    if covariance == "full":
        sum_xx = torch.stack([(x * r_k.unsqueeze(-1)).T @ x for r_k in r.T])
    elif covariance == "tied":
        sum_xx = x.T @ x
    else:
        sum_xx = r.T @ (x**2)
    return {"count": r.sum(0), "sum_x": r.T @ x, "sum_xx": sum_xx}


def gaussian_mixture_parameters(stats: dict[str, Tensor], covariance: str,
                                reg_covar: float) -> tuple[Tensor, Tensor, Tensor]:
    """The M-step: (weights (K,), means (K, D), precision Cholesky factors) from summed statistics.

    As scikit-learn's ``GaussianMixture``: N_k gets 10 machine epsilons (no empty component divides
    by zero), the weights are N_k / sum N_k, ``reg_covar`` is added to every covariance's diagonal
    (in the data's units: on [0, 1] pixels 1e-6 is the variance of the 1/256 dequantisation noise).
    A covariance that is not positive definite raises ``SingularCovariance`` naming its component.
    """
    count, sum_x, sum_xx = stats["count"], stats["sum_x"], stats["sum_xx"]
    nk = count + 10 * torch.finfo(count.dtype).eps  # (K,)
    weights, means = nk / nk.sum(), sum_x / nk.unsqueeze(-1)
    d = means.shape[-1]
    if covariance in ("full", "tied"):
        if covariance == "full":  # sum r (x - mu)(x - mu)^T / N_k = sum r x x^T / N_k - mu mu^T
            covariances = sum_xx / nk[:, None, None] - means.unsqueeze(-1) * means.unsqueeze(-2)
        else:
            covariances = ((sum_xx - (nk[:, None] * means).T @ means) / nk.sum()).unsqueeze(0)
        covariances = covariances + reg_covar * torch.eye(d, dtype=means.dtype, device=means.device)
        chol, info = torch.linalg.cholesky_ex(covariances)
        check_positive_definite(info > 0, count, covariance, reg_covar)
        eye = torch.eye(d, dtype=means.dtype, device=means.device).expand_as(chol)
        precision_cholesky = torch.linalg.solve_triangular(chol, eye, upper=False).mT  # L^-T: Sigma^-1 = L L^T
        return weights, means, precision_cholesky if covariance == "full" else precision_cholesky[0]
    variances = sum_xx / nk.unsqueeze(-1) - means**2 + reg_covar  # (K, D)
    if covariance == "spherical":
        variances = variances.mean(-1)  # (K,)
    check_positive_definite((variances <= 0).reshape(len(nk), -1).any(-1), count, covariance, reg_covar)
    return weights, means, variances.rsqrt()


def check_positive_definite(singular: Tensor, count: Tensor, covariance: str, reg_covar: float) -> None:
    if singular.any():
        k = int(singular.nonzero()[0, 0])
        which = "the tied covariance" if covariance == "tied" else f"the covariance of component {k}"
        held = "" if covariance == "tied" else f" (it holds {count[k].item():.1f} examples)"
        raise SingularCovariance(f"{which} is singular{held}: raise reg_covar (now {reg_covar:g}), "
                                 f"e.g. --set reg_covar={max(10 * reg_covar, 1e-6):g}, or use fewer components")


def covariance_scales(precision_cholesky: Tensor, covariance: str, components: int) -> Tensor:
    """What ``sample_gaussian_mixture`` takes: standard deviations (K, D) of diagonal components, or
    factors S_k (K, D, D) with S_k S_k^T = Sigma_k of full ones: the precision's Cholesky factor P_k is
    upper triangular with Sigma_k^-1 = P_k P_k^T, so S_k = P_k^-T, lower triangular."""
    if covariance == "diag":
        return precision_cholesky.reciprocal()
    if covariance == "spherical":
        return precision_cholesky.reciprocal().unsqueeze(-1)  # broadcast over D by the sampler's product
    chol = precision_cholesky if covariance == "full" else precision_cholesky.expand(components, *precision_cholesky.shape)
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    return torch.linalg.solve_triangular(chol.mT, eye, upper=False)  # P^T S = I: S = P^-T


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k centres (k, D) of x (N, D) by k-means++ (Arthur & Vassilvitskii 2007) with greedy local
    trials as scikit-learn: each new centre is the best of 2 + floor(ln k) candidates drawn with
    probability proportional to the squared distance to the nearest centre so far."""
    n = len(x)
    trials = 2 + int(math.log(k))
    x_sq = (x**2).sum(-1)  # (N,): squared distances by ||c||^2 - 2 c.x + ||x||^2, matmuls (10x cdist's speed here)
    first = int(draw(torch.rand, (1,), generator, x.device, torch.float64).item() * n)
    chosen = [first]
    nearest = (x_sq[first] - 2 * x @ x[first] + x_sq).clamp_min(0)  # (N,) squared distance to the nearest centre
    for _ in range(1, k):
        u = draw(torch.rand, (trials,), generator, x.device, torch.float64) * nearest.sum()
        candidates = torch.searchsorted(nearest.double().cumsum(0), u).clamp(max=n - 1)  # (trials,)
        squared = (x_sq[candidates, None] - 2 * x[candidates] @ x.T + x_sq).clamp_min(0)  # (trials, N)
        distances = torch.minimum(nearest, squared)
        best = int(distances.sum(-1).argmin())
        chosen.append(int(candidates[best]))
        nearest = distances[best]
    return x[chosen]


def nearest_centre(x: Tensor, centres: Tensor) -> Tensor:
    """One-hot responsibilities (N, K) of each row of x to its nearest centre: k-means++'s hard start."""
    nearest = ((centres**2).sum(-1) - 2 * x @ centres.T).argmin(-1)  # ||x||^2 is the same for every centre
    return torch.nn.functional.one_hot(nearest, len(centres)).to(x.dtype)


def fit_gaussian_mixture(x: Tensor, components: int, covariance: str = "full", reg_covar: float = 1e-6,
                         max_iter: int = 100, tol: float = 1e-3,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """EM in one process, in float64, from k-means++: (weights, means, precision Cholesky factors),
    for the AE's latent mixture; the ``gmm`` model is the same EM under the trainer (several
    processes, restarts, checkpoints)."""
    x = x.double()
    stats = gaussian_mixture_statistics(x, nearest_centre(x, kmeans_plusplus(x, components, generator)), covariance)
    params = gaussian_mixture_parameters(stats, covariance, reg_covar)
    previous = -math.inf
    for _ in range(max_iter):
        weights, means, precision_cholesky = params
        log_p, r = mixture_posterior(gaussian_log_densities(x, means, precision_cholesky, covariance), weights.log())
        params = gaussian_mixture_parameters(gaussian_mixture_statistics(x, r, covariance), covariance, reg_covar)
        if abs(log_p.mean().item() - previous) < tol:
            break
        previous = log_p.mean().item()
    return params


def factor_analyser_posterior(x: Tensor, means: Tensor, loadings: Tensor,
                              noise_variances: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each factor analyser k, z ~ N(0, I_R), x | z ~ N(mu_k + W_k z, Psi_k), at x (N, D): the marginal
    log N(x_n; mu_k, W_k W_k^T + Psi_k) (N, K), the latent posterior means E[z | x_n, k] (N, K, R) and
    covariances Cov[z | x, k] = M_k^-1 (K, R, R), of means (K, D), loadings W (K, D, R), Psi (K, D).

    Woodbury and the matrix determinant lemma, with M = I_R + W^T Psi^-1 W and b = W^T Psi^-1 (x - mu):
    (x - mu)^T C^-1 (x - mu) = (x - mu)^T Psi^-1 (x - mu) - b^T M^-1 b, log |C| = log |M| + sum log Psi,
    and E[z | x] = M^-1 b (Ghahramani & Hinton 1996). O(N K D R) time and O(N K R) memory, no D x D
    matrix. The diagonal term is expanded into matmuls as in ``gaussian_log_densities`` (call in float64).
    """
    n, d = x.shape
    k, _, r = loadings.shape
    scaled = loadings / noise_variances.unsqueeze(-1)  # Psi^-1 W (K, D, R)
    eye = torch.eye(r, dtype=x.dtype, device=x.device)
    chol = torch.linalg.cholesky(eye + loadings.mT @ scaled)  # M = L L^T (K, R, R)
    b = (x @ scaled.permute(1, 0, 2).reshape(d, k * r)).reshape(n, k, r) - torch.einsum("kd,kdr->kr", means, scaled)
    c = torch.linalg.solve_triangular(chol, b.permute(1, 2, 0), upper=False)  # L^-1 b (K, R, N)
    precisions = noise_variances.reciprocal()  # (K, D)
    squared = ((x**2) @ precisions.T - 2 * x @ (means * precisions).T + (means**2 * precisions).sum(-1)
               - (c**2).sum(1).T)  # (N, K): d^T Psi^-1 d - b^T M^-1 b
    log_det = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1) + noise_variances.log().sum(-1)  # (K,)
    log_densities = -0.5 * (d * LOG_2PI + squared.clamp_min(0) + log_det)
    latent_means = torch.linalg.solve_triangular(chol.mT, c, upper=True).permute(2, 0, 1)  # M^-1 b (N, K, R)
    return log_densities, latent_means, torch.cholesky_inverse(chol)


def low_rank_gaussian_log_densities(x: Tensor, means: Tensor, loadings: Tensor, noise_variances: Tensor) -> Tensor:
    """log N(x_n; mu_k, W_k W_k^T + diag(Psi_k)) (N, K) of x (N, D), means (K, D), loadings (K, D, R),
    noise variances Psi (K, D): ``factor_analyser_posterior``'s marginal, never forming a D x D matrix."""
    return factor_analyser_posterior(x, means, loadings, noise_variances)[0]
