"""Langevin sampling from an energy-based model p(x) = exp(-E(x)) / Z, as pure functions of the energy.

- G. Roberts and R. Tweedie, "Exponential convergence of Langevin distributions and their discrete
  approximations", Bernoulli 2(4), 1996: the unadjusted Langevin algorithm (ULA) and its bias.
- M. Welling and Y. W. Teh, "Bayesian learning via stochastic gradient Langevin dynamics", ICML 2011.
- Y. Du and I. Mordatch, "Implicit generation and generalization in energy-based models", NeurIPS 2019,
  arXiv:1903.08689: short-run chains with a clipped gradient and a small noise, the usual EBM sampler.

ULA with step size h and noise scale sigma (the noise of step k is xi_k ~ N(0, I)):

    x_{k+1} = x_k - h dE/dx(x_k) + sigma xi_k.                                                                (1)

With sigma = sqrt(2 h) (the default) it is the Euler-Maruyama step of the Langevin diffusion dx = -dE/dx dt +
sqrt(2) dW, whose stationary law is exp(-E). Any other sigma is ULA on E / T at the temperature

    T = sigma^2 / (2 h),                                                                                      (2)

so a smaller sigma samples the colder exp(-E / T): Du & Mordatch's h = 10, sigma = 0.005 is T = 1.25e-6, nearly
gradient descent with a little noise. Without a Metropolis correction (MALA) the chain is biased for every h > 0.
On a Gaussian energy E(x) = 1/2 (x - m)^T P (x - m) the bias is exact in closed form: the chain's mean converges to
m and its covariance to the solution of Sigma = (I - h P) Sigma (I - h P)^T + sigma^2 I, which for symmetric P is

    Sigma_h = sigma^2 (2 h P - h^2 P^2)^{-1} = T P^{-1} (I - h P / 2)^{-1} = T (P^{-1} + h I / 2 + O(h^2)),   (3)

finite only while h < 2 / lambda_max(P) (``langevin_stationary_covariance``): the bias to T P^{-1} is h T / 2 in
every direction to first order, whatever P.

Annealed Langevin dynamics (Song & Ermon, "Generative modeling by estimating gradients of the data distribution",
NeurIPS 2019, arXiv:1907.05600) runs (1) on a noise-conditional energy E(x, sigma), the energy of the data blurred by
N(0, sigma^2 I), through decreasing levels: a chain at a large sigma crosses between modes that the data's own
energy separates by regions of near-zero density, and each level starts the next near its typical set.

Ancestral sampling (Song et al., "Score-based generative modeling through stochastic differential equations", ICLR
2021, arXiv:2011.13456, appendix F) walks the same levels once, one energy gradient each, as DDPM's sampler does:
each step draws the next level's x from the forward process's posterior with Tweedie's estimate of the data. Their
predictor-corrector sampler (algorithm 4) adds Langevin steps at each level before its ancestral step ("corrector"),
with the step size set by a signal-to-noise ratio r: ``langevin_corrector``.

An energy maps a batch (B, *shape) to per-example energies (B,) and must treat examples independently (no batch
norm in training mode): the gradient of E.sum() is then each example's own dE/dx. All noise comes from the
``generator`` passed in (``genzoo.distributions.numerics.draw``; None means the global RNG, the caller's choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from genzoo.distributions.numerics import draw

Energy = Callable[[Tensor], Tensor]  # inputs (B, *shape) -> energies (B,)
CORRECTOR_SNR = 0.16  # the corrector's signal-to-noise ratio r: Song et al. 2021's for this process on CIFAR-10
NoiseConditionalEnergy = Callable[[Tensor, Tensor], Tensor]  # (inputs (B, *shape), sigmas (B,)) -> energies (B,)


def per_example_energy(energy: Energy, x: Tensor) -> Tensor:
    """E(x): (B,) for x (B, *shape), or a ValueError naming the shape the energy returned.

    The check catches an energy that reduces over the batch: a mean over B examples divides every gradient by B,
    and a Langevin chain on it silently runs at step h / B.
    """
    e = energy(x)
    if e.shape != x.shape[:1]:
        raise ValueError(f"an energy must map x {tuple(x.shape)} to per-example energies ({x.shape[0]},): "
                         f"got {tuple(e.shape)}")
    return e


def energy_and_gradient(energy: Energy, x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) (B,), detached, and dE/dx (B, *shape), for x (B, *shape); x itself is not modified.

    Gradients are enabled inside (it works under the caller's ``torch.no_grad()``) and taken with respect to a
    leaf copy of x only, so the energy network's parameters accumulate no ``.grad``.
    """
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)  # shares x's storage; a leaf, so the energy cannot write to it
        e = per_example_energy(energy, x_leaf)  # (B,)
        (grad,) = torch.autograd.grad(e.sum(), x_leaf)  # (B, *shape): examples are independent
    return e.detach(), grad


def langevin(energy: Energy, x: Tensor, steps: int, step_size: float, noise_std: float | None = None, *,
             grad_clip: float | None = None, bounds: tuple[float, float] | None = None,
             observed: Tensor | None = None, generator: torch.Generator | None = None,
             final_noise: bool = True) -> Tensor:
    """``steps`` iterations of (1) from x (B, *shape); returns the final x (B, *shape), detached.

    - ``noise_std``: sigma of (1); None is sqrt(2 step_size), ULA targeting exp(-E). A smaller one samples the
      colder exp(-E / T) with T = noise_std^2 / (2 step_size) (2), as Du & Mordatch do (step 10, noise 0.005).
    - ``grad_clip``: each element of dE/dx clamped to [-grad_clip, grad_clip] (Du & Mordatch), so no step moves
      an element by more than step_size * grad_clip plus its noise.
    - ``bounds``: (lo, hi), x clamped to it after each step (images live in [0, 1]).
    - ``observed``: a bool mask broadcastable to x, True where an entry is kept: after each step those entries
      are put back to their values in the input x (clamped Langevin: the others sample p(x_free | x_observed),
      inpainting). The kept entries of the result equal the input's exactly.
    - ``final_noise=False`` leaves the noise out of the last step: the chain ends on a gradient step, samples
      without the last step's pixel noise.

    ``steps = 0`` returns a copy of x. ``noise_std = 0`` is gradient descent and draws no noise.
    """
    if steps < 0:
        raise ValueError(f"langevin: steps must be >= 0, got {steps}")
    if step_size <= 0:
        raise ValueError(f"langevin: step_size must be > 0, got {step_size}")
    if noise_std is None:
        noise_std = math.sqrt(2 * step_size)  # ULA: the Langevin diffusion's stationary law is exp(-E)
    if noise_std < 0:
        raise ValueError(f"langevin: noise_std must be >= 0, got {noise_std}")
    if grad_clip is not None and grad_clip <= 0:
        raise ValueError(f"langevin: grad_clip must be > 0, got {grad_clip}")
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"langevin: bounds must be (lo, hi) with lo < hi, got {bounds}")
    start = x.detach()  # (B, *shape): the observed entries' values
    x = start.clone()
    for k in range(steps):
        _, grad = energy_and_gradient(energy, x)  # (B, *shape)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
        x = x - step_size * grad
        if noise_std > 0 and (final_noise or k < steps - 1):
            x = x + noise_std * draw(torch.randn, x.shape, generator, x.device, x.dtype)
        if bounds is not None:
            x = x.clamp(*bounds)
        if observed is not None:
            x = torch.where(observed, start, x)  # after the clamp: kept entries stay exact even out of bounds
    return x


def langevin_stationary_covariance(precision: Tensor, step_size: float, noise_std: float | None = None) -> Tensor:
    """Sigma_h of (3): the exact stationary covariance (D, D) of ``langevin`` on E(x) = 1/2 (x - m)^T P (x - m).

    ``precision`` is P (D, D), symmetric positive definite; ``noise_std`` None is sqrt(2 step_size), as in
    ``langevin``. The stationary mean is m exactly; Sigma_h - P^{-1} is ULA's bias at that step size (about
    step_size / 2 in every direction at small steps). Raises ValueError when step_size >= 2 / lambda_max(P): the
    chain then diverges and has no stationary law.
    """
    if step_size <= 0:
        raise ValueError(f"langevin_stationary_covariance: step_size must be > 0, got {step_size}")
    variance = 2 * step_size if noise_std is None else noise_std**2  # sigma^2
    lam, vectors = torch.linalg.eigh(precision)  # (D,), (D, D): P = V diag(lam) V^T
    if lam.min() <= 0:
        raise ValueError(f"langevin_stationary_covariance: the precision must be positive definite: its smallest "
                         f"eigenvalue is {lam.min().item():.3g}")
    if step_size * lam.max() >= 2:
        raise ValueError(f"langevin_stationary_covariance: step_size {step_size} >= 2 / lambda_max(P) = "
                         f"{2 / lam.max().item():.3g}: the chain diverges")
    # (3) in P's eigenbasis: each direction is an AR(1) chain z' = (1 - h lam) z + sigma xi
    return vectors @ torch.diag(variance / (2 * step_size * lam - step_size**2 * lam**2)) @ vectors.T


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> Tensor:
    """``levels`` noise levels (L,) float64 from sigma_max down to sigma_min, evenly spaced in log (Song & Ermon)."""
    if not 0 < sigma_min <= sigma_max or levels < 1:
        raise ValueError(f"geometric_sigmas: needs 0 < sigma_min <= sigma_max and levels >= 1, got {sigma_min}, "
                         f"{sigma_max}, {levels}")
    if levels == 1:
        return torch.tensor([sigma_min], dtype=torch.float64)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), levels, dtype=torch.float64)


def annealed_langevin(energy: NoiseConditionalEnergy, x: Tensor, sigmas: Tensor, steps_per_level: int,
                      step_size: float, *, known: Tensor | None = None, observed: Tensor | None = None,
                      generator: torch.Generator | None = None, denoise: bool = True,
                      callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, algorithm 1) from x (B, *shape) through the decreasing noise
    levels ``sigmas`` (L,): at level i, ``steps_per_level`` steps of (1) on E(., sigma_i) with

        h_i = alpha_i / 2,  noise sqrt(alpha_i),  alpha_i = step_size sigma_i^2 / sigma_L^2,                  (4)

    so every level moves by the same share of its own noise (alpha_i / sigma_i^2 is constant). Then, with
    ``denoise``, one step to the noisy data's posterior mean at the last level, Tweedie's formula

        x <- x + sigma_L^2 s(x, sigma_L),  s = -dE/dx,                                                        (5)

    which removes the last level's noise (Jolicoeur-Martineau et al. 2021, "Adversarial score matching and improved
    sampling for image generation"; Song & Ermon 2020, "Improved techniques for training score-based generative
    models"). Returns x (B, *shape), detached.

    Completion: ``known`` (B, *shape) and ``observed`` (a bool mask broadcastable to x, True = kept) hold the
    observed entries at known + sigma_i eps during level i, a draw of the observed part at that level's noise (Song &
    Ermon's inpainting), and exactly at ``known`` in the result. ``callback(i, x)`` sees x after each level.
    """
    if steps_per_level < 1:
        raise ValueError(f"annealed_langevin: steps_per_level must be >= 1, got {steps_per_level}")
    if (known is None) != (observed is None):
        raise ValueError("annealed_langevin: completion needs both known and observed")
    last = float(sigmas[-1])
    for i, sigma in enumerate(float(s) for s in sigmas):
        level = torch.full((len(x),), sigma, device=x.device, dtype=x.dtype)
        alpha = step_size * sigma**2 / last**2

        def energy_at_level(v: Tensor, level: Tensor = level) -> Tensor:
            return energy(v, level)

        if known is not None:
            noisy = known + sigma * draw(torch.randn, x.shape, generator, x.device, x.dtype)
            x = torch.where(observed, noisy, x)
        x = langevin(energy_at_level, x, steps_per_level, alpha / 2, math.sqrt(alpha), observed=observed,
                     generator=generator)
        if callback is not None:
            callback(i, x)
    if denoise:
        level = torch.full((len(x),), last, device=x.device, dtype=x.dtype)
        _, grad = energy_and_gradient(lambda v: energy(v, level), x)
        x = x - last**2 * grad
    return x if known is None else torch.where(observed, known, x)


def langevin_corrector(energy: Energy, x: Tensor, steps: int, snr: float = CORRECTOR_SNR, *,
                       generator: torch.Generator | None = None, observed: Tensor | None = None) -> Tensor:
    """``steps`` Langevin steps (1) on one level's energy from x (B, *shape), each example's step size set by the
    signal-to-noise ratio r = ``snr`` of that step (Song et al. 2021, algorithm 5):

        h = 2 (r ||z|| / ||s(x)||)^2,   x <- x + h s(x) + sqrt(2 h) z,   z ~ N(0, I),                          (8)

    so the drift is r times as long as the noise and the step needs no tuning per level. It is not exact: on an
    isotropic Gaussian of variance v in D dimensions, with a = ||x - m||^2 and b = ||z||^2 ~ chi^2_D, one step keeps
    E a unchanged when v D = (1 + r^2) v^2 E[b^2] E[1 / a]; with a ~ v' chi^2_D the chain settles at

        v' = v (1 + r^2) (D + 2) / (D - 2),                                                                   (9)

    r^2 above v as D grows (r = 0.16: 2.6%). ``observed`` as ``langevin``'s: those entries are put back to their
    values in the input x after each step. Returns x (B, *shape), detached.
    """
    if steps < 0 or not snr > 0:
        raise ValueError(f"langevin_corrector: needs steps >= 0 and snr > 0, got {steps}, {snr}")
    start = x.detach()  # (B, *shape): the observed entries' values
    x = start
    for _ in range(steps):
        _, grad = energy_and_gradient(energy, x)  # (B, *shape), dE/dx = -s
        z = draw(torch.randn, x.shape, generator, x.device, x.dtype)
        ratio = z.flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)  # (B,)
        h = (2 * (snr * ratio) ** 2).reshape(-1, *[1] * (x.dim() - 1))
        x = x - h * grad + (2 * h).sqrt() * z
        if observed is not None:
            x = torch.where(observed, start, x)
    return x


def ancestral_sampling(energy: NoiseConditionalEnergy, x: Tensor, sigmas: Tensor, *, known: Tensor | None = None,
                       observed: Tensor | None = None, generator: torch.Generator | None = None,
                       callback: Callable[[int, Tensor], None] | None = None, corrector_steps: int = 0,
                       snr: float = CORRECTOR_SNR) -> Tensor:
    """Ancestral sampling from x (B, *shape), a draw at the first of the decreasing levels ``sigmas`` (L,), through
    the levels to sigma_{L+1} = 0. The forward process adds N(0, (sigma_i^2 - sigma_{i+1}^2) I) from level i+1 to
    level i; its posterior, with the data replaced by Tweedie's estimate x_i + sigma_i^2 s(x_i, sigma_i), gives

        x_{i+1} = x_i + (sigma_i^2 - sigma_{i+1}^2) s(x_i, sigma_i) + sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2) z, (6)

    s = -dE/dx, z ~ N(0, I) (Song et al. 2021, eq. 47). The last step draws no noise: it is Tweedie's (5). Against
    annealed Langevin with one step a level, (6) moves each level by the noise between it and the next, not by a
    fixed multiple of sigma_i^2, and adds only the noise the next level has. On Gaussian data N(m, c^2 I) with the
    exact energy, a draw of variance v at level i leaves with

        v' = v (c^2 + sigma_{i+1}^2)^2 / (c^2 + sigma_i^2)^2 + sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2,  (7)

    short of c^2 + sigma_{i+1}^2 by c^2 (sigma_i^2 - sigma_{i+1}^2)^2 / (sigma_i^2 (c^2 + sigma_i^2)): a bias that
    vanishes as the levels get dense. With ``corrector_steps`` = M > 0 it is Song et al.'s predictor-corrector
    sampler: M steps of ``langevin_corrector`` at ratio ``snr`` on level i's energy before each step (6), which pull
    x toward that level's marginal and so repair what the coarse steps left. Completion (``known``, ``observed``)
    and ``callback`` as ``annealed_langevin``. Returns x (B, *shape), detached.
    """
    if (known is None) != (observed is None):
        raise ValueError("ancestral_sampling: completion needs both known and observed")
    levels = [float(s) for s in sigmas]
    x = x.detach()
    for i, sigma in enumerate(levels):
        following = levels[i + 1] if i + 1 < len(levels) else 0.0
        if known is not None:
            noisy = known + sigma * draw(torch.randn, x.shape, generator, x.device, x.dtype)
            x = torch.where(observed, noisy, x)
        level = torch.full((len(x),), sigma, device=x.device, dtype=x.dtype)

        def energy_at_level(v: Tensor, level: Tensor = level) -> Tensor:
            return energy(v, level)

        if corrector_steps:
            x = langevin_corrector(energy_at_level, x, corrector_steps, snr, generator=generator, observed=observed)
        _, grad = energy_and_gradient(energy_at_level, x)  # dE/dx = -s
        gap = sigma**2 - following**2
        x = x - gap * grad
        if following > 0:
            x = x + math.sqrt(following**2 * gap / sigma**2) * draw(torch.randn, x.shape, generator, x.device, x.dtype)
        if callback is not None:
            callback(i, x)
    return x if known is None else torch.where(observed, known, x)
