"""Samplers as pure functions of (predict, x_T, process, steps, generator): ancestral DDPM, DDIM, DPM-Solver++(2M),
and the completion samplers (replacement, RePaint).

``predict(x_t, t)`` maps a batch x_t (B, *shape) at indices t (B,) to a ``Split`` (eps, x0, variance
fraction): the model closes over the labels, the guidance and the clipping of x0, so the samplers
know only the process. Every function draws its noise from ``generator``, in a fixed order, and has
no other side effect.

Timestep spacing. A sampler with S < T steps visits S of the T training indices, in decreasing
order, and ends at "index -1", alpha_bar = 1, the data. ``timestep_sequence`` spaces them:
- "trailing" (default): round(T - k T / S) - 1 for k = 0..S-1, so the first step starts at the last
  training index T - 1, where x_T is pure noise (Lin et al. 2024, "Common Diffusion Noise Schedules and
  Sample Steps are Flawed", arXiv:2305.08891, table 2);
- "leading": k floor(T / S) for k = S-1..0 (DDIM's and diffusers' "leading"), which never visits the
  noisiest indices when T / S does not divide evenly.
Each step goes from the index it is at to the next one in the sequence, never to t - T / S: diffusers'
"linspace" spacing breaks because its DDIM step assumes the latter (diffusers #9261, #11347).

Between two visited indices t > s the process is the respaced one (Nichol & Dhariwal 2021, section
4): beta' = 1 - alpha_bar_t / alpha_bar_s, and DDPM's posterior and variances follow from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from genzoo.distributions.numerics import draw
from genzoo.models.diffusion.process import GaussianDiffusion, Split

SPACINGS = ("trailing", "leading")
Predict = Callable[[Tensor, Tensor], Split]


def timestep_sequence(timesteps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The S = ``steps`` training indices a sampler visits, in decreasing order (see the module docstring)."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    if not 1 <= steps <= timesteps:
        raise ValueError(f"--steps {steps} must lie in 1..{timesteps}, the model's training timesteps T")
    if spacing == "leading":
        return [k * (timesteps // steps) for k in reversed(range(steps))]
    return [round(timesteps - k * timesteps / steps) - 1 for k in range(steps)]


def step_pairs(timesteps: int, steps: int, spacing: str = "trailing") -> list[tuple[int, int]]:
    """(t, s) for each step t -> s of the sequence, the last s = -1 (the data)."""
    sequence = timestep_sequence(timesteps, steps, spacing)
    return list(zip(sequence, [*sequence[1:], -1]))


def _pairs(process: GaussianDiffusion, steps: int, spacing: str):
    """(t, s, alpha_bar_t, alpha_bar_s) for each step t -> s of the sequence, s = -1 (alpha_bar = 1) last."""
    alpha_bar = process.alpha_bar
    for t, s in step_pairs(process.timesteps, steps, spacing):
        yield t, s, alpha_bar[t].item(), 1.0 if s < 0 else alpha_bar[s].item()


def indices(x: Tensor, t: int) -> Tensor:
    """The index t for each example of x (B,), int64 on x's device."""
    return torch.full((len(x),), t, dtype=torch.long, device=x.device)


def ddim_step(x: Tensor, eps: Tensor, x0: Tensor, alpha_bar_t: float, alpha_bar_s: float, eta: float,
              noise: Tensor | None) -> Tensor:
    """One DDIM step t -> s (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", arXiv:2010.02502, eq. 12):

        x_s = sqrt(alpha_bar_s) x0 + sqrt(1 - alpha_bar_s - sigma^2) eps + sigma z,
        sigma^2 = eta^2 (1 - alpha_bar_s) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_s)     (eq. 16)

    eta = 0: deterministic; eta = 1: DDPM's ancestral step with the posterior variance beta-tilde.
    """
    variance = eta**2 * (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)
    x_s = alpha_bar_s**0.5 * x0 + max(1 - alpha_bar_s - variance, 0.0) ** 0.5 * eps
    return x_s if noise is None else x_s + variance**0.5 * noise


@torch.no_grad()
def ddim_sample(predict: Predict, x: Tensor, process: GaussianDiffusion, steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, spacing: str = "trailing",
                callback: Callable[[int, Tensor, Split], None] | None = None) -> Tensor:
    """DDIM from x_T (B, *shape) in ``steps`` steps; noise (eta > 0) is drawn at every step but the last.
    ``callback(t, x_t, prediction)`` sees each step's state (a figure's chain), before the step."""
    for t, s, alpha_bar_t, alpha_bar_s in _pairs(process, steps, spacing):
        pred = predict(x, indices(x, t))
        if callback is not None:
            callback(t, x, pred)
        noise = draw(torch.randn, tuple(x.shape), generator, x.device) if eta > 0 and s >= 0 else None
        x = ddim_step(x, pred.eps, pred.x0, alpha_bar_t, alpha_bar_s, eta, noise)
    return x


def ddpm_step(x: Tensor, pred: Split, alpha_bar_t: float, alpha_bar_s: float, variance: str,
              noise: Tensor | None) -> Tensor:
    """One ancestral step t -> s of the respaced process: x_s ~ N(mu-tilde(x_t, x0), sigma^2) (Ho et al.
    eqs. 6, 7 with beta' = 1 - alpha_bar_t / alpha_bar_s); sigma^2 is beta-tilde' ("small"), beta' ("large")
    or their learned log-interpolation (Nichol & Dhariwal eq. 15)."""
    beta = 1 - alpha_bar_t / alpha_bar_s
    mean = (beta * alpha_bar_s**0.5 * pred.x0 + (1 - alpha_bar_s) * (1 - beta) ** 0.5 * x) / (1 - alpha_bar_t)
    if noise is None:
        return mean
    small, large = math.log(beta * (1 - alpha_bar_s) / (1 - alpha_bar_t)), math.log(beta)
    if variance == "learned":
        log_variance = pred.variance_frac * large + (1 - pred.variance_frac) * small
    else:
        log_variance = torch.full_like(mean[:1], small if variance == "small" else large)
    return mean + (0.5 * log_variance).exp() * noise


@torch.no_grad()
def ddpm_sample(predict: Predict, x: Tensor, process: GaussianDiffusion, steps: int,
                generator: torch.Generator | None = None, spacing: str = "trailing") -> Tensor:
    """Ancestral sampling (Ho et al. algorithm 2) from x_T (B, *shape); the last step returns the mean."""
    for t, s, alpha_bar_t, alpha_bar_s in _pairs(process, steps, spacing):
        pred = predict(x, indices(x, t))
        noise = draw(torch.randn, tuple(x.shape), generator, x.device) if s >= 0 else None
        x = ddpm_step(x, pred, alpha_bar_t, alpha_bar_s, process.variance, noise)
    return x


@torch.no_grad()
def dpm_solver_pp_2m(predict: Predict, x: Tensor, process: GaussianDiffusion, steps: int,
                     generator: torch.Generator | None = None, spacing: str = "trailing") -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", arXiv:2211.01095, algorithm 2): the multistep
    second-order solver of the probability-flow ODE in the data prediction x0, in lambda = log(alpha / sigma):

        x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D,   h = lambda_s - lambda_t,
        D = (1 + 1 / (2 r)) x0_t - 1 / (2 r) x0_prev,  r = h_prev / h   (D = x0_t on the first step).

    The last step, to sigma = 0, returns x0 (first order there, as diffusers' lower_order_final).
    Deterministic: ``generator`` is unused.
    """
    x0_prev, h_prev = None, None
    for t, s, alpha_bar_t, alpha_bar_s in _pairs(process, steps, spacing):
        x0 = predict(x, indices(x, t)).x0
        if s < 0:
            return x0
        alpha_t, sigma_t = alpha_bar_t**0.5, (1 - alpha_bar_t) ** 0.5
        alpha_s, sigma_s = alpha_bar_s**0.5, (1 - alpha_bar_s) ** 0.5
        h = math.log(alpha_s / sigma_s / (alpha_t / sigma_t))
        d = x0 if x0_prev is None else (1 + h / (2 * h_prev)) * x0 - h / (2 * h_prev) * x0_prev
        x = sigma_s / sigma_t * x - alpha_s * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


SAMPLERS = {"ddim": ddim_sample, "ddpm": ddpm_sample, "dpm-solver": dpm_solver_pp_2m}


# --- completion: x_known (B, *shape) observed where ``keep`` (B, *shape) is True --------------------
@torch.no_grad()
def replacement_sample(predict: Predict, x: Tensor, process: GaussianDiffusion, steps: int, x_known: Tensor,
                       keep: Tensor, generator: torch.Generator | None = None, spacing: str = "trailing") -> Tensor:
    """Inpainting by replacement (Song et al. 2021, "Score-Based Generative Modeling through SDEs", appendix
    I.2): before each ancestral step from t, the observed pixels are replaced by a fresh draw of q(x_t | x_known).
    RePaint without its resampling."""
    return repaint_sample(predict, x, process, steps, x_known, keep, generator, spacing, resample=1)


def _known_at(x: Tensor, x_known: Tensor, keep: Tensor, alpha_bar: float, generator: torch.Generator | None) -> Tensor:
    """x with its observed pixels replaced by a draw of q(x_t | x_known) at alpha_bar_t (eq. 4)."""
    noise = draw(torch.randn, tuple(x.shape), generator, x.device)
    return torch.where(keep, alpha_bar**0.5 * x_known + (1 - alpha_bar) ** 0.5 * noise, x)


@torch.no_grad()
def repaint_sample(predict: Predict, x: Tensor, process: GaussianDiffusion, steps: int, x_known: Tensor,
                   keep: Tensor, generator: torch.Generator | None = None, spacing: str = "trailing",
                   resample: int = 5, jump: int = 10) -> Tensor:
    """RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models",
    arXiv:2201.09865, algorithm 1 with jumps, section 4.2): replacement steps, and every ``jump`` steps the
    last ``jump`` steps are undone by re-noising x_s -> x_t (q of the respaced forward process) and redone,
    ``resample`` times in all, so the hidden pixels harmonise with the observed ones."""
    pairs = list(_pairs(process, steps, spacing))
    i = 0
    done_rounds: dict[int, int] = {}
    while i < len(pairs):
        t, s, alpha_bar_t, alpha_bar_s = pairs[i]
        x = _known_at(x, x_known, keep, alpha_bar_t, generator)
        pred = predict(x, indices(x, t))
        noise = draw(torch.randn, tuple(x.shape), generator, x.device) if s >= 0 else None
        x = ddpm_step(x, pred, alpha_bar_t, alpha_bar_s, process.variance, noise)
        i += 1
        end_of_block = i % jump == 0 and i < len(pairs)
        if end_of_block and done_rounds.get(i, 0) < resample - 1:
            done_rounds[i] = done_rounds.get(i, 0) + 1
            back = pairs[i - jump][2]  # alpha_bar at the start of the block
            ratio = back / pairs[i - 1][3]  # q(x_t | x_s) = N(sqrt(ratio) x_s, (1 - ratio) I)
            x = ratio**0.5 * x + (1 - ratio) ** 0.5 * draw(torch.randn, tuple(x.shape), generator, x.device)
            i -= jump
    return torch.where(keep, x_known, x)
