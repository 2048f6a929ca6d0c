"""The uniform discrete diffusion of D3PM: K-level data corrupted by uniform resampling, its posterior, the
hybrid loss and the variational bound, every term an exact categorical KL. It takes the denoiser as an
argument and never builds one.

Austin, Johnson, Ho, Tarlow & van den Berg, "Structured Denoising Diffusion Models in Discrete State-Spaces",
NeurIPS 2021 (arXiv:2107.03006); equation numbers are theirs. Time as in ``process``: the paper's t = 1..T
is the index ``t`` = 0..T-1, ``alpha_bar[t]`` is the paper's alpha_bar_{t+1}, and the index -1 is the data.

Each of the D dimensions holds one of K states. A step keeps it with probability 1 - beta_t and otherwise
redraws it uniformly (the uniform transition of their appendix A.2.1):

    Q_t = (1 - beta_t) I + beta_t / K 11^T,    so    Q-bar_t = alpha_bar_t I + (1 - alpha_bar_t) / K 11^T,
    q(x_t | x_0) = Cat(alpha_bar_t e_{x_0} + (1 - alpha_bar_t) / K),                           (D1)

alpha_bar_t = prod_{s <= t} (1 - beta_s), from the Gaussian process's schedules (``betas_for``). The
uniform distribution is stationary: the prior is p(x_T) = 1 / K in every dimension. These matrices
commute, so between any two indices s < t the process is uniform again, with a_{t|s} = alpha_bar_t /
alpha_bar_s; and Q is symmetric, so q(x_t | x_s) read as a function of x_s is the vector
a_{t|s} e_{x_t} + (1 - a_{t|s}) / K. Hence (eq. 3, then the x_0-parameterisation of eq. 4):

    q(x_s | x_t, x_0) ∝ [a_{t|s} e_{x_t} + (1 - a_{t|s}) / K] ⊙ [alpha_bar_s e_{x_0} + (1 - alpha_bar_s) / K]    (D2)
    p(x_s | x_t)      ∝ [a_{t|s} e_{x_t} + (1 - a_{t|s}) / K] ⊙ [alpha_bar_s p~ + (1 - alpha_bar_s) / K]         (D3)

where p~ = p~(x_0 | x_t) is the denoiser's softmax over the K states of x_0. (D3) is sum_{x_0} q(x_s, x_t |
x_0) p~(x_0), normalised. With s = t - 1 they are the bound's posterior and reverse step; with s = -1
(alpha_bar = 1: x_s is the data) (D2) is the point mass on x_0 and (D3) the decoder p(x_0 | x_1) ∝
q(x_1 | x_0) p~(x_0); with s < t - 1 (D3) is the respaced sampler's step. The bound (eq. 1), per example:

    L = KL(q(x_T | x_0) || Uniform) + sum_{t=2..T} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) - log p(x_0 | x_1),

and the decoder term is the KL of the point mass (D2 at s = -1), so one function gives every L_t. It
bounds -log p(x) of the levels themselves: nothing is dequantised. The training loss is the hybrid of
eq. 5, T L_t at a uniform t plus lambda E[-log p~(x_0 | x_t)].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.distributions.numerics import draw
from genzoo.models.diffusion.process import (
    COSINE_OFFSET,
    betas_for,
    stratified_bound,
)

# A denoiser of states: (x_t (B, *shape) int64 states, t (B,) indices 0..T-1, labels or None) -> logits (B, K C, ...)
StateDenoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]


class UniformDiscreteDiffusion:
    """The schedule-dependent quantities of D3PM's uniform process over K states, and the losses built on them."""

    def __init__(self, num_states: int, schedule: str = "cosine", timesteps: int = 1000,
                 cosine_offset: float = COSINE_OFFSET):
        if num_states < 2:
            raise ValueError(f"a discrete diffusion needs at least 2 states, got {num_states}")
        self.num_states, self.timesteps = num_states, timesteps
        self.betas = betas_for(schedule, timesteps, cosine_offset)  # (T,) float64
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)  # (T,)
        self.alpha_bar_from_data = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])  # index t + 1

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """alpha_bar at indices t (B,) in -1..T-1 (-1: the data, alpha_bar = 1), float64."""
        return self.alpha_bar_from_data.to(t.device)[t + 1]

    @staticmethod
    def _column(values: Tensor, like: Tensor) -> Tensor:
        """(B,) float64 -> (B, 1, ..., 1) in like's dtype, broadcasting against (B, *shape, K)."""
        return values.to(like.dtype).reshape(len(values), *([1] * (like.dim() - 1)))

    def q_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        """q(x_t | x_0) (B, *shape, K) (D1) of states x0 (B, *shape) int64 at indices t (B,)."""
        one_hot = F.one_hot(x0, self.num_states).double()
        alpha_bar = self._column(self.alpha_bar_at(t), one_hot)
        return (alpha_bar * one_hot + (1 - alpha_bar) / self.num_states).float()

    def uniform_states(self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
        """States drawn uniformly from 0..K-1 (int64): the prior p(x_T), and a redrawn state of q."""
        return (draw(torch.rand, shape, generator, device) * self.num_states).long().clamp(max=self.num_states - 1)

    def q_sample(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0) (D1): each state kept with probability alpha_bar_t, else redrawn uniformly."""
        keep = draw(torch.rand, tuple(x0.shape), generator, x0.device, torch.float64)
        uniform = self.uniform_states(tuple(x0.shape), generator, x0.device)
        alpha_bar = self.alpha_bar_at(t).reshape(len(t), *([1] * (x0.dim() - 1)))
        return torch.where(keep < alpha_bar, x0, uniform)

    def log_step(self, xt: Tensor, log_p0: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """log p(x_s | x_t) (B, *shape, K), normalised over the K states of x_s: (D3) for log_p0 =
        log p~(x_0 | x_t), (D2) for log_p0 the log of a point mass on x_0 (0 and -inf); s < t, s = -1 the data."""
        alpha_bar_t, alpha_bar_s = self.alpha_bar_at(t), self.alpha_bar_at(s)
        k, column = self.num_states, lambda v: self._column(v, log_p0)
        a = alpha_bar_t / alpha_bar_s  # a_{t|s}; 1 - a and 1 - alpha_bar_s in float64: near 1 at the first steps
        # log q(x_t | x_s) as a function of x_s; log(alpha_bar_s p~ + (1 - alpha_bar_s) / K), stable at alpha_bar_s = 1
        from_xt = torch.log(column(a) * F.one_hot(xt, k).to(log_p0.dtype) + column((1 - a) / k))
        from_x0 = torch.logaddexp(column(alpha_bar_s.log()) + log_p0, column(((1 - alpha_bar_s) / k).log()))
        return torch.log_softmax(from_xt + from_x0, -1)

    def log_p0(self, denoiser: StateDenoiser, xt: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """log p~(x_0 | x_t) (B, *shape, K) from the denoiser's K logits per dimension, in fp32 at least."""
        logits = denoiser(xt, t, y)  # (B, K C, H, W)
        logits = logits.reshape(len(xt), self.num_states, *xt.shape[1:]).movedim(1, -1)
        return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)

    def step_kl(self, x0: Tensor, xt: Tensor, log_p0: Tensor, t: Tensor) -> Tensor:
        """KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) (B,) in nats, summed over the dimensions, given
        log p~(x_0 | x_t) (B, *shape, K); at t = 0 it is the decoder's -log p(x_0 | x_1)."""
        point_mass = torch.log(F.one_hot(x0, self.num_states).to(log_p0.dtype))  # 0 at x_0, -inf elsewhere
        log_q = self.log_step(xt, point_mass, t, t - 1)
        log_p = self.log_step(xt, log_p0, t, t - 1)
        q = log_q.exp()
        return (q * (torch.where(q > 0, log_q, 0) - log_p)).flatten(1).sum(1)  # 0 log 0 = 0

    def bound_term(self, denoiser: StateDenoiser, x0: Tensor, t: Tensor, y: Tensor | None,
                   generator: torch.Generator | None = None) -> Tensor:
        """L_t (B,) in nats at indices t, from one draw x_t ~ q(x_t | x_0) (``step_kl``)."""
        xt = self.q_sample(x0, t, generator)
        return self.step_kl(x0, xt, self.log_p0(denoiser, xt, t, y), t)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || Uniform) per example (B,), nats."""
        q = self.q_probs(x0, torch.full((len(x0),), self.timesteps - 1, device=x0.device))
        return torch.xlogy(q, q * self.num_states).flatten(1).sum(1)

    def nll_bound(self, denoiser: StateDenoiser, x0: Tensor, y: Tensor | None, draws: int,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """An unbiased estimate (B,) of the bound L on -log p(x_0) and its variance (``stratified_bound``)."""
        def term(t: Tensor) -> Tensor:
            return self.bound_term(denoiser, x0, t, y, generator)
        return stratified_bound(term, self.prior_kl(x0), self.timesteps, draws, generator)

    def bound_terms(self, denoiser: StateDenoiser, x0: Tensor, y: Tensor | None,
                    generator: torch.Generator | None = None) -> Tensor:
        """Every term (T + 1, B): L_0 .. L_{T-1} and the prior's KL; their sum is the bound (T passes: tests)."""
        ones = torch.ones(len(x0), dtype=torch.long, device=x0.device)
        terms = [self.bound_term(denoiser, x0, t * ones, y, generator) for t in range(self.timesteps)]
        return torch.stack([*terms, self.prior_kl(x0)])

    def training_losses(self, denoiser: StateDenoiser, x0: Tensor, t: Tensor, y: Tensor | None,
                        ce_weight: float = 0.01, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-example terms (B,) of one step at indices t, from one draw of x_t:
        - "vb": T L_t in nats, whose mean over uniform t is the bound less the prior;
        - "ce": -log p~(x_0 | x_t) in nats, the auxiliary loss of eq. 5;
        - "loss": (vb + lambda ce) / D, lambda = ``ce_weight`` (Austin et al.'s hybrid, per dimension)."""
        xt = self.q_sample(x0, t, generator)
        log_p0 = self.log_p0(denoiser, xt, t, y)
        vb = self.timesteps * self.step_kl(x0, xt, log_p0, t)
        ce = -log_p0.gather(-1, x0.unsqueeze(-1)).flatten(1).sum(1)
        return {"loss": (vb + ce_weight * ce) / x0[0].numel(), "vb": vb, "ce": ce}
