"""D3PM: a denoiser trained through a discrete diffusion, whose bound on -log p(x) is a sum of exact
categorical KLs.

Austin, Johnson, Ho, Tarlow & van den Berg, "Structured Denoising Diffusion Models in Discrete State-Spaces",
NeurIPS 2021 (arXiv:2107.03006), with the uniform transition: each pixel of a K-level image (K = 2 on
binarized MNIST) is a state that a step keeps or redraws uniformly. The process (``discrete.
UniformDiscreteDiffusion``) holds the mathematics; the network is the diffusion family's U-Net
(``genzoo.nn.denoisers``), reading the states scaled to [-1, 1] and returning K logits of p~(x_0 | x_t)
per pixel. Unlike a Gaussian diffusion of binary data (``ddpm`` with its probit decoder), nothing is
continuous: the bound is on the levels themselves, on the ruler of the VAE and autoregressive rows.

Sampling is ancestral: x_T uniform, then p(x_s | x_t) (``discrete`` eq. D3) over S respaced steps, which
is exact for any spacing because the uniform process composes in closed form; the last step draws x_0
from p(x_0 | x_t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.likelihoods import gumbel
from genzoo.distributions.numerics import draw
from genzoo.models.base import (
    EvalDefaults,
    GenerativeModel,
    LogLikelihood,
    ModelConfig,
    SamplerSpec,
    check_choice,
    check_images,
    check_positive,
    check_unet_levels,
)
from genzoo.models.diffusion.discrete import UniformDiscreteDiffusion
from genzoo.models.diffusion.process import COSINE_OFFSET, SCHEDULES
from genzoo.models.diffusion.samplers import indices, step_pairs
from genzoo.nn.denoisers import UNet
from genzoo.nn.mode import eval_mode

DEFAULT_STEPS = 100  # respaced ancestral steps of a sample (of T = 1000)


@dataclass
class D3PMConfig(ModelConfig):
    timesteps: int = 1000  # T
    schedule: str = "cosine"  # alpha_bar_t, the probability that a state is still its data value: cosine | linear
    cosine_offset: float = COSINE_OFFSET  # the cosine schedule's s
    ce_weight: float = 0.01  # lambda of the hybrid loss L_vb + lambda E[-log p~(x_0 | x_t)] (Austin et al. eq. 5)
    channels: int = 32  # U-Net base width
    channel_mult: tuple[int, ...] = (1, 2, 2)  # U-Net width per level, in units of channels (28 -> 14 -> 7)
    blocks: int = 2  # residual blocks per U-Net level
    attention_resolutions: tuple[int, ...] = (7,)  # U-Net levels (by height) with attention besides the middle (0: none)
    heads: int = 4  # attention heads
    dropout: float = 0.1  # dropout in the residual blocks

    def validate(self, info: DataInfo) -> None:
        check_images(info, "d3pm", "ddpm")
        check_choice(self, "schedule", SCHEDULES)
        check_positive(self, "cosine_offset", "ce_weight", allow_zero=True)
        check_positive(self, "timesteps", "channels", "blocks", "heads")
        check_unet_levels(self, info)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{type(self).__name__}.dropout must lie in [0, 1), got {self.dropout}")


class D3PM(GenerativeModel):
    name = "d3pm"
    description = "discrete diffusion (Austin et al. 2021, uniform D3PM): exact categorical KLs in its bound"
    Config = D3PMConfig
    family = "diffusion"
    value_types = ("binary", "discrete")
    samplers = (SamplerSpec("ancestral", ("steps",), f"the reverse process, respaced (default {DEFAULT_STEPS} steps)"),)
    estimators = ("bound",)
    capabilities = frozenset({"complete"})
    training_defaults: ClassVar[dict] = {"lr": 2e-4, "grad_clip": 1.0, "ema_decay": 0.999, "warmup_steps": 100}

    def __init__(self, config: D3PMConfig, info: DataInfo):
        super().__init__(config, info)
        self.process = UniformDiscreteDiffusion(info.num_levels, config.schedule, config.timesteps,
                                                config.cosine_offset)
        self.net = UNet(info.shape, info.num_levels, config.channels, config.channel_mult, config.blocks,
                        config.attention_resolutions, config.heads, config.dropout, 0)

    @property
    def input_kind(self) -> str:
        return "discrete"

    @property
    def eval_defaults(self) -> EvalDefaults:
        """4 draws of the bound per example (8 network passes); sample metrics on at most 1,000 samples."""
        return EvalDefaults(draws=4, sampler="ancestral", steps=min(DEFAULT_STEPS, self.config.timesteps),
                            samples=1000)

    def to_states(self, x: Tensor) -> Tensor:
        """Images in [0, 1] on the data's K levels -> states 0..K-1 (int64)."""
        return (x * (self.info.num_levels - 1)).round().long()

    def from_states(self, states: Tensor) -> Tensor:
        return states.to(self.dtype) / (self.info.num_levels - 1)

    def denoise(self, states: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """The U-Net's K logits per pixel (B, K C, H, W) of p~(x_0 | x_t), reading the states scaled to [-1, 1]."""
        inputs = 2 * states.to(self.dtype) / (self.info.num_levels - 1) - 1
        return self.net(inputs.contiguous(memory_format=self.info.memory_format), t, y)  # the weights' layout

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        """The hybrid loss at one uniform t per example (``UniformDiscreteDiffusion.training_losses``)."""
        self.check_input(x)
        t = torch.randint(0, self.config.timesteps, (len(x),), device=x.device)
        return self.process.training_losses(self.denoise, self.to_states(x), t, None, self.config.ce_weight)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """Minus the bound on -log p(x), estimated from ``num_samples`` stratified draws over t per example."""
        self.check_input(x)
        with eval_mode(self):
            nll, variance = self.process.nll_bound(self.denoise, self.to_states(x), None, num_samples, generator)
        reason = (f"variational bound (Austin et al. 2021, eq. 1) over T = {self.config.timesteps} steps of the uniform "
                  f"process on {self.info.num_levels} states, exact categorical KLs; unbiased Monte Carlo over t: "
                  "each draw is prior + decoder + (T - 1) KL_t")
        return LogLikelihood(-nll, "lower_bound", reason, variance)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               steps: int | None = None) -> Tensor:
        """n samples (n, *shape): x_T uniform, then ``steps`` respaced ancestral steps."""
        return self.from_states(self.reverse(n, steps, generator))

    def reverse(self, n: int, steps: int | None, generator: torch.Generator | None,
                known: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        """States (n, *shape) after the reverse process from uniform x_T over ``steps`` respaced steps; with
        ``known`` states and the ``keep`` mask, the kept states are replaced after every step by a fresh draw
        of q(x_s | known), so that they end exactly as known (replacement, as ``ddpm``'s inpainting)."""
        steps = min(DEFAULT_STEPS, self.config.timesteps) if steps is None else steps
        x = self.process.uniform_states((n, *self.info.shape), generator, self.device)
        with eval_mode(self):
            for t, s in step_pairs(self.config.timesteps, steps):
                t_, s_ = indices(x, t), indices(x, s)
                log_p = self.process.log_step(x, self.process.log_p0(self.denoise, x, t_, None), t_, s_)
                uniform = draw(torch.rand, tuple(log_p.shape), generator, self.device)
                x = (log_p + gumbel(uniform)).argmax(-1)  # a draw of p(x_s | x_t) (Gumbel-max)
                if known is not None:
                    x = torch.where(keep, self.process.q_sample(known, s_, generator), x)
        return x

    @torch.no_grad()
    def complete(self, x: Tensor, observed: Tensor, labels: Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None) -> Tensor:
        """Fill in the pixels outside ``observed`` ((H, W) or (B, C, H, W), True = kept) by replacement over the
        default steps; the observed pixels are the image's own, exactly."""
        if sampler not in (None, "replacement"):
            raise ValueError(f"d3pm completes images by replacement, not {sampler!r}")
        self.check_input(x)
        keep = observed.to(x.device).expand_as(x)
        states = self.reverse(len(x), None, generator, self.to_states(x), keep)
        return torch.where(keep, x.to(self.dtype), self.from_states(states))
