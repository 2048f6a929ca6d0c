"""The Gaussian diffusion process: a noise schedule, q(x_t | x_0), its posterior, the training losses
and the variational bound. It takes the denoiser as an argument and never builds one.

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (arXiv:2006.11239);
Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021 (arXiv:2102.09672).
Equation numbers are Ho et al.'s unless marked (N&D: Nichol & Dhariwal).

Time. The paper's t = 1..T is the index ``t`` = 0..T-1 here (as in improved-diffusion): ``alpha_bar[t]``
is the paper's alpha_bar_{t+1}, and ``alpha_bar_prev[0]`` = 1 is alpha_bar_0. Data x_0 lie in [-1, 1]
(images) or are real vectors; the forward process

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)                          (4)

destroys them into N(0, I). A denoiser maps (x_t, t, y) to a prediction of the noise epsilon, of
x_0, or of v = sqrt(alpha_bar) epsilon - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022), and, with
a learned variance, a second half of channels that interpolates log beta_t and log beta-tilde_t
(N&D eq. 15). Every conversion between the three is exact (``to_eps_x0``).

The bound (Ho eq. 5) on -log p(x_0), in nats per example:

    L = KL(q(x_T | x_0) || N(0, I))                          prior
      + sum_{t=2..T} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))   diffusion
      - log p(x_0 | x_1)                                     decoder

The decoder is a Gaussian discretised to the data's K levels (Ho section 3.3, with K = 2 a probit
Bernoulli on binary data) or, on real vectors, the Gaussian density itself. ``nll_bound`` estimates
L without bias from a fixed number of draws per example, each one (x_1, a t in 2..T, x_t):
    L ~ prior + decoder(x_1) + (T - 1) KL_t,
with t stratified over 2..T, and returns the estimate and its variance.

Schedules and loss weights are computed in float64 and applied in fp32 at least, so that under
bf16 autocast only the denoiser runs in bf16.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from genzoo.distributions.gaussian import gaussian_kl, gaussian_log_prob
from genzoo.distributions.likelihoods import discretized_gaussian_log_mass
from genzoo.distributions.numerics import at_least_fp32, draw

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("small", "large", "learned")  # beta-tilde_t, beta_t, or learned between them (N&D eq. 15)
COSINE_OFFSET = 0.008  # N&D eq. 17's s
MAX_BETA = 0.999  # N&D clip beta_t at 0.999 so that the cosine schedule stays finite near t = T

# A denoiser: (x_t (B, *shape), t (B,) int64 indices 0..T-1, labels (B,) or None) -> output (B, P*C, ...)
Denoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def betas_for(schedule: str, timesteps: int, cosine_offset: float = COSINE_OFFSET) -> Tensor:
    """beta_t (T,) float64 of a named schedule.

    - linear: Ho et al.'s 1e-4 to 0.02 over T = 1000, the ends scaled by 1000 / T (as improved-diffusion);
    - cosine: alpha_bar_t = f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) pi / 2)^2 (N&D eq. 17),
      beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at 0.999. s = ``cosine_offset`` sets the first step:
      N&D's 0.008 gives sigma_1 = sqrt(beta_1) = 0.0064 at T = 1000, a little under the bin 2/255 of 8-bit
      data on [-1, 1] but wider than its half; 0.001 gives 0.0027.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if timesteps < 1:
        raise ValueError(f"the diffusion needs at least one timestep, got T={timesteps}")
    if schedule == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, min(scale * 0.02, MAX_BETA), timesteps, dtype=torch.float64)
    if cosine_offset < 0:
        raise ValueError(f"the cosine schedule's offset s must be >= 0, got {cosine_offset}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + cosine_offset) / (1 + cosine_offset) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


def stratified_bound(term: Callable[[Tensor], Tensor], prior: Tensor, timesteps: int, draws: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
    """An unbiased estimate (B,) of a diffusion's bound L = prior + sum_t L_t and its variance (B,) (None from
    one draw), where ``term(t)`` (t (B,) indices) is L_t of each example with fresh noise: L_0 the decoder,
    L_t (t >= 1) the KL at the paper's step t + 1; ``prior`` (B,) is the prior's KL.

    Each draw is prior + L_0 + (T - 1) L_t: two denoiser passes, so the large decoder term is never left to
    chance over t. t is stratified: the draws fall in S = max(1, draws // 2) equal strata of 1..T-1 (draw d
    in stratum d mod S, uniform within it), so every estimate visits the whole range of t. The estimate is
    the mean of the strata's means; its variance sum_s s_s^2 / (n_s S^2) from each stratum's sample variance
    s_s^2 over its n_s >= 2 draws.
    """
    b, device = len(prior), prior.device
    strata = max(1, draws // 2)
    estimates = []
    for d in range(draws):
        estimate = prior + term(torch.zeros(b, dtype=torch.long, device=device))
        if timesteps > 1:
            u = (d % strata + draw(torch.rand, (b,), generator, device)) / strata  # uniform in stratum d mod S
            t = (1 + (u * (timesteps - 1)).long()).clamp(max=timesteps - 1)
            estimate = estimate + (timesteps - 1) * term(t)
        estimates.append(estimate)
    stacked = torch.stack(estimates)  # (draws, B)
    by_stratum = [stacked[s::strata] for s in range(strata)]  # each (n_s, B)
    mean = torch.stack([e.mean(0) for e in by_stratum]).mean(0)
    if draws < 2:
        return mean, None
    variance = torch.stack([e.var(0) / len(e) for e in by_stratum]).sum(0) / strata**2
    return mean, variance


class Split(NamedTuple):
    """A denoiser's output read as the process needs it."""

    eps: Tensor  # (B, *shape) the predicted noise
    x0: Tensor  # (B, *shape) the predicted data
    variance_frac: Tensor | None  # (B, *shape) in [0, 1] with a learned variance (N&D eq. 15's v), else None


class GaussianDiffusion:
    """The schedule-dependent quantities of Ho et al. section 2 and the losses built on them."""

    def __init__(self, schedule: str = "cosine", timesteps: int = 1000, prediction: str = "eps",
                 variance: str = "small", cosine_offset: float = COSINE_OFFSET):
        for name, value, valid in (("prediction", prediction, PREDICTIONS), ("variance", variance, VARIANCES)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")
        self.schedule, self.timesteps, self.prediction, self.variance = schedule, timesteps, prediction, variance
        self.betas = betas_for(schedule, timesteps, cosine_offset)  # (T,) float64
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)  # (T,)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # (7): the posterior q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde I)
        self.posterior_variance = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        # beta-tilde_1 = 0: its log is taken at t = 2 (improved-diffusion's clipped log-variance)
        self.posterior_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_coef_x0 = self.betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.posterior_coef_xt = (1 - self.alpha_bar_prev) * (1 - self.betas).sqrt() / (1 - self.alpha_bar)
        self.large_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.betas[1:]]))

    @property
    def output_factor(self) -> int:
        """Channels of the denoiser's output per data channel: 2 with a learned variance."""
        return 2 if self.variance == "learned" else 1

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at indices t (B,), float64."""
        alpha_bar = self.alpha_bar.to(t.device)[t]
        return alpha_bar / (1 - alpha_bar)

    @staticmethod
    def gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] (B,) shaped to broadcast against ``like`` (B, ...), in like's dtype (fp32 at least)."""
        out = values.to(t.device)[t].to(at_least_fp32(like).dtype)
        return out.reshape(len(t), *([1] * (like.dim() - 1)))

    # --- the forward process --------------------------------------------------------------------
    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(4): the mean (B, *shape) and variance (B, 1, ...) of q(x_t | x_0)."""
        return self.gather(self.alpha_bar.sqrt(), t, x0) * x0, self.gather(1 - self.alpha_bar, t, x0)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """(4) reparameterised: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        mean, variance = self.q_mean_variance(x0, t)
        return mean + variance.sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(6), (7): the mean (B, *shape) and clipped log-variance (B, 1, ...) of q(x_{t-1} | x_t, x_0)."""
        mean = self.gather(self.posterior_coef_x0, t, xt) * x0 + self.gather(self.posterior_coef_xt, t, xt) * xt
        return mean, self.gather(self.posterior_log_variance, t, xt)

    # --- reading a denoiser -----------------------------------------------------------------------
    def to_eps_x0(self, output: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(eps, x0) from a prediction of ``self.prediction`` at x_t: x_t = a x_0 + s eps, v = a eps - s x_0."""
        output = at_least_fp32(output)
        a, s = self.gather(self.alpha_bar.sqrt(), t, xt), self.gather((1 - self.alpha_bar).sqrt(), t, xt)
        if self.prediction == "eps":
            return output, (xt - s * output) / a
        if self.prediction == "x0":
            return (xt - a * output) / s, output
        return s * xt + a * output, a * xt - s * output  # v (a^2 + s^2 = 1)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the denoiser is trained to output: eps, x0 or v."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        a, s = self.gather(self.alpha_bar.sqrt(), t, x0), self.gather((1 - self.alpha_bar).sqrt(), t, x0)
        return a * noise - s * x0

    def split(self, output: Tensor, xt: Tensor, t: Tensor, clip: bool = False) -> Split:
        """The denoiser's output as (eps, x0, variance fraction); ``clip`` clamps x0 to [-1, 1]
        (images) and recomputes eps from it, as improved-diffusion does."""
        output = at_least_fp32(output)
        frac = None
        if self.variance == "learned":
            output, raw = output.chunk(2, dim=1)
            frac = (raw + 1) / 2  # N&D: the network's v in [-1, 1] (unconstrained in practice)
        eps, x0 = self.to_eps_x0(output, xt, t)
        if clip:
            x0 = x0.clamp(-1, 1)
            a, s = self.gather(self.alpha_bar.sqrt(), t, xt), self.gather((1 - self.alpha_bar).sqrt(), t, xt)
            eps = (xt - a * x0) / s
        return Split(eps, x0, frac)

    def p_log_variance(self, frac: Tensor | None, t: Tensor, like: Tensor) -> Tensor:
        """log sigma_t^2 of p(x_{t-1} | x_t): fixed (beta-tilde or beta) or N&D eq. 15's interpolation."""
        small = self.gather(self.posterior_log_variance, t, like)
        large = self.gather(torch.log(self.betas), t, like)
        if self.variance == "learned":
            return frac * large + (1 - frac) * small
        return small if self.variance == "small" else self.gather(self.large_log_variance, t, like)

    def p_mean_variance(self, denoiser: Denoiser, xt: Tensor, t: Tensor, y: Tensor | None = None,
                        clip: bool = False) -> tuple[Tensor, Tensor, Split]:
        """p(x_{t-1} | x_t) = N(mu_theta, sigma_t^2): (mean, log-variance, the split prediction).

        mu_theta is the posterior mean (6) at the predicted x_0, equivalently (11) in terms of eps.
        """
        pred = self.split(denoiser(xt, t, y), xt, t, clip)
        mean, _ = self.q_posterior(pred.x0, xt, t)
        return mean, self.p_log_variance(pred.variance_frac, t, xt), pred

    # --- the bound --------------------------------------------------------------------------------
    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || N(0, I)) per example (B,), nats."""
        t = torch.full((len(x0),), self.timesteps - 1, device=x0.device)
        mean, variance = self.q_mean_variance(at_least_fp32(x0), t)
        return gaussian_kl(mean.flatten(1), variance.log().expand_as(mean).flatten(1))

    def vb_term(self, mean: Tensor, log_variance: Tensor, x0: Tensor, xt: Tensor, t: Tensor,
                num_levels: int | None) -> Tensor:
        """One term of the bound per example (B,), nats: KL(q(x_{t-1} | x_t, x_0) || N(mean, e^log_variance))
        where t > 0, the decoder's -log p(x_0 | x_1) where t = 0.

        ``num_levels`` K: the decoder is the Gaussian discretised to K levels on [-1, 1] (x_0 on that
        grid); None: real vectors, the Gaussian density.
        """
        log_variance = log_variance.expand_as(mean)
        true_mean, true_log_variance = self.q_posterior(x0, xt, t)
        kl = gaussian_kl(true_mean.flatten(1), true_log_variance.expand_as(mean).flatten(1),
                         mean.flatten(1), log_variance.flatten(1))
        if num_levels is None:
            decoder = -gaussian_log_prob(x0.flatten(1), mean.flatten(1), log_variance.flatten(1))
        else:  # on [0, 1]: the level (x_0 + 1) / 2, the mean likewise, the scale halved
            decoder = -discretized_gaussian_log_mass((x0 + 1) / 2, (mean + 1) / 2, 0.5 * log_variance - math.log(2),
                                                     0.5 / (num_levels - 1)).flatten(1).sum(1)
        return torch.where(t == 0, decoder, kl)

    def bound_term(self, denoiser: Denoiser, x0: Tensor, t: Tensor, y: Tensor | None, noise: Tensor,
                   num_levels: int | None, clip: bool = False) -> Tensor:
        """The term of the bound at indices t (B,), from one draw x_t ~ q(x_t | x_0), nats (B,)."""
        xt = self.q_sample(x0, t, noise)
        mean, log_variance, _ = self.p_mean_variance(denoiser, xt, t, y, clip)
        return self.vb_term(mean, log_variance, x0, xt, t, num_levels)

    def nll_bound(self, denoiser: Denoiser, x0: Tensor, y: Tensor | None, draws: int, num_levels: int | None,
                  generator: torch.Generator | None = None, clip: bool = False) -> tuple[Tensor, Tensor | None]:
        """An unbiased estimate (B,) of the bound L on -log p(x_0) and its variance (B,) (None from one draw):
        ``stratified_bound`` of this process's terms, each with fresh noise."""
        def term(t: Tensor) -> Tensor:
            noise = draw(torch.randn, tuple(x0.shape), generator, x0.device)
            return self.bound_term(denoiser, x0, t, y, noise, num_levels, clip)
        return stratified_bound(term, self.prior_kl(x0), self.timesteps, draws, generator)

    def bound_terms(self, denoiser: Denoiser, x0: Tensor, y: Tensor | None, num_levels: int | None,
                    generator: torch.Generator | None = None, clip: bool = False) -> Tensor:
        """Every term of the bound (B, T + 1): the decoder, the T - 1 KLs, the prior; each KL from one
        draw of x_t. T denoiser passes per example: for tests and small T."""
        b, shape = len(x0), tuple(x0.shape)
        terms = [self.bound_term(denoiser, x0, torch.full((b,), t, dtype=torch.long, device=x0.device), y,
                                 draw(torch.randn, shape, generator, x0.device), num_levels, clip)
                 for t in range(self.timesteps)]
        return torch.stack([*terms, self.prior_kl(x0)], 1)

    # --- training ---------------------------------------------------------------------------------
    def bound_weights(self) -> Tensor:
        """w_t (T,) float64: the bound's term at t per unit of the squared v error, at the posterior variance.

        With sigma_t^2 = beta-tilde_t the term at t >= 2 is KL = 1/2 (SNR_{t-1} - SNR_t) |x_0 - x0_theta|^2
        (Kingma et al. 2021, VDM, eq. 13), and x_0's error is sqrt(1 - alpha_bar_t) times v's, so

            w_t = 1/2 (SNR_{t-1} / SNR_t - 1) alpha_bar_t,                                                     (N1)

        which is also eps's weight where alpha_bar_t ~ 1. At t = 1 (the decoder) w_1 is taken as w_2.
        """
        snr = self.alpha_bar / (1 - self.alpha_bar)
        weights = 0.5 * (snr[:-1] / snr[1:] - 1) * self.alpha_bar[1:]  # (T - 1,): t = 2..T
        return torch.cat([weights[:1], weights])

    def timestep_proposal(self) -> Tensor:
        """p_t (T,) float64: half uniform, half in proportion to w_t (N1). Drawn t ~ p_t with each example's
        terms multiplied by 1 / (T p_t), a loss's expectation is its uniform mean over t, while the t where the
        bound's terms are large are drawn more often: the variance of L_vlb falls (N&D section 3.3 learn p_t
        from the terms; this one is fixed). The uniform half keeps every weight 1 / (T p_t) at most 2."""
        weights = self.bound_weights()
        return 0.5 / self.timesteps + 0.5 * weights / weights.sum()

    def training_losses(self, denoiser: Denoiser, x0: Tensor, t: Tensor, y: Tensor | None, noise: Tensor,
                        loss: str = "simple", snr_gamma: float = 5.0, vlb_weight: float = 1e-3,
                        num_levels: int | None = None) -> dict[str, Tensor]:
        """Per-example terms (B,) of one training step at indices t: {"loss", "mse", and "vb" where used}.

        - "simple": L_simple (Ho eq. 14), the mean squared error of the prediction target;
        - "min_snr": the same weighted by min(SNR, gamma) / SNR in the eps form (Hang et al. 2023,
          "Efficient Diffusion Training via Min-SNR Weighting", arXiv:2303.09556), i.e. min(SNR, gamma)
          on the x0 error, min(SNR, gamma) / (SNR + 1) on the v error;
        - "hybrid": L_simple + lambda L_vlb (N&D section 3.1, lambda = ``vlb_weight`` = 0.001), L_vlb
          training only the variance (the mean is detached in it);
        - "vlb": the bound itself, T L_t, per dimension (high variance; N&D section 3.3).
        The "vb" term is T times the bound's term at t, in nats: its mean over t is the bound less the prior.
        """
        x0 = at_least_fp32(x0)
        xt = self.q_sample(x0, t, noise)
        output = at_least_fp32(denoiser(xt, t, y))
        mean_output, raw_variance = (output.chunk(2, dim=1) if self.variance == "learned" else (output, None))
        terms: dict[str, Tensor] = {}
        error = (self.target(x0, noise, t) - mean_output).square().flatten(1).mean(1)  # (B,)
        snr = self.snr(t).float()
        if loss == "min_snr":
            clipped = snr.clamp(max=snr_gamma)
            weight = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]
            terms["loss"] = weight * error
        else:
            terms["loss"] = error
        terms["mse"] = error
        if loss in ("hybrid", "vlb"):
            held = mean_output.detach() if loss == "hybrid" else mean_output
            both = held if raw_variance is None else torch.cat([held, raw_variance], 1)
            mean, log_variance, _ = self.p_mean_variance(lambda *_: both, xt, t, y)
            vb = self.timesteps * self.vb_term(mean, log_variance, x0, xt, t, num_levels)  # (B,) nats
            per_dim = vb / (x0[0].numel() * math.log(2))  # bits/dim, N&D's unit for lambda
            terms["loss"] = terms["loss"] + vlb_weight * per_dim if loss == "hybrid" else per_dim
            terms["vb"] = vb
        return terms
