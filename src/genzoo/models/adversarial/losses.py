"""The two-player losses shared by GANs and adversarial autoencoders, per example (B,).

A discriminator returns logits l = log D / (1 - D). With softplus(a) = log(1 + e^a):
  -log D(x)       = softplus(-l)
  -log(1 - D(x))  = softplus(l)
so every loss below is a stable function of logits (Goodfellow et al. 2014, "Generative
Adversarial Nets", arXiv:1406.2661).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.distributions.numerics import at_least_fp32

# "minimax": the generator minimises log(1 - D(G(z))), the game of Goodfellow et al.; its gradient
# vanishes while D confidently rejects the samples (early training).
# "non_saturating": the generator minimises -log D(G(z)) instead: same fixed point, strong
# gradients exactly when D wins (section 3 of the paper; the course notes' practical fix).
GENERATOR_LOSSES = ("minimax", "non_saturating")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-log D(x) - log(1 - D(G(z))) per example: (B,) from logits (B,)."""
    return F.softplus(-real_logits) + F.softplus(fake_logits)


def generator_loss(fake_logits: Tensor, kind: str) -> Tensor:
    """The generator's loss per example (B,): log(1 - D(G(z))) or -log D(G(z))."""
    if kind == "minimax":
        return -F.softplus(fake_logits)
    if kind == "non_saturating":
        return F.softplus(-fake_logits)
    raise ValueError(f"unknown generator loss {kind!r}; choose one of: {', '.join(GENERATOR_LOSSES)}")


def frozen_call(module: torch.nn.Module, *inputs: Tensor) -> Tensor:
    """``module(*inputs)`` with the module's parameters detached: gradients reach the inputs (a
    generator's samples, an encoder's codes) but never the module's own weights, which belong to
    the other player and are updated in its own phase. Buffers are used as they are."""
    detached = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, detached, inputs)


def annealed_std(initial_std: float, step: int | None, anneal_steps: int) -> float:
    """Instance-noise standard deviation at ``step``: linear from ``initial_std`` to 0 over
    ``anneal_steps`` (Sonderby et al. 2017, arXiv:1610.04490; Arjovsky & Bottou 2017,
    arXiv:1701.04862). ``step=None`` (evaluation) gives 0."""
    if step is None or anneal_steps <= 0:
        return 0.0
    return initial_std * max(0.0, 1.0 - step / anneal_steps)


def add_instance_noise(x: Tensor, std: float) -> Tensor:
    """x + N(0, std^2) noise, applied to real and fake inputs of the discriminator alike."""
    return x if std == 0 else x + std * torch.randn_like(x)


# --- gradient penalties on the discriminator ---------------------------------------------------
def input_gradient(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """d critic(x_i) / d x_i for each example, flattened: (B, D).

    ``create_graph=True``: the penalties below are differentiated in the discriminator's update.
    Per-example outputs depend on their own input only (true of every genzoo discriminator
    except one with batch norm in training mode, where the batch statistics couple examples).
    """
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    grad = grad.flatten(1)
    return at_least_fp32(grad)  # bf16 under autocast: sum in fp32


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """||grad_x D(x)||^2 at real data, per example (B,) (Mescheder, Geiger & Nowozin 2018, "Which
    Training Methods for GANs do actually Converge?", arXiv:1801.04406). The loss adds gamma/2 times it."""
    return input_gradient(critic, real).pow(2).sum(1)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """(||grad D(x_hat)||_2 - 1)^2 per example (B,), at x_hat = eps x + (1 - eps) G(z),
    eps ~ U[0, 1] per example (global RNG) (Gulrajani et al. 2017, "Improved Training of
    Wasserstein GANs", arXiv:1704.00028, Algorithm 1). The loss adds lambda times it."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return (torch.linalg.vector_norm(input_gradient(critic, x_hat), dim=1) - 1) ** 2


# --- symptoms -----------------------------------------------------------------------------------
D_WINS_REAL, D_WINS_FAKE = 0.99, 0.01  # mean D(x) above, mean D(G(z)) below: the discriminator wins
MIN_DIVERSITY = 0.1  # generated batch's per-pixel spread below this fraction of the data's: collapse


def sample_diversity(fake: Tensor, real: Tensor) -> Tensor:
    """Mean per-pixel standard deviation across the generated batch over that of the real batch,
    a scalar (0: every sample identical, ~1: as varied as the data). Detached: a log term."""
    fake, real = fake.detach().float().flatten(1), real.detach().float().flatten(1)
    return fake.std(0, correction=0).mean() / real.std(0, correction=0).mean().clamp_min(1e-8)

