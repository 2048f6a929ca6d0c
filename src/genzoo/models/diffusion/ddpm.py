"""DDPM: a denoiser trained through the Gaussian diffusion process, sampled by DDPM, DDIM or DPM-Solver++.

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (arXiv:2006.11239), with
the choices of Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021
(arXiv:2102.09672): the cosine schedule, a learned variance trained by the hybrid loss, and the U-Net
with scale-shift norm. Classifier-free guidance: Ho & Salimans, "Classifier-Free Diffusion Guidance",
2022 (arXiv:2207.12598).

The model is three separate things: the process (``process.GaussianDiffusion``: schedule, q, losses,
bound), the network (``genzoo.nn.denoisers``: a U-Net for images, a residual MLP for vectors) and the
samplers (``samplers``: pure functions). Images are mapped from [0, 1] to [-1, 1]; real vectors are
diffused as they are.

Guidance. A class-conditional model is trained with the label replaced by a "no label" token with
probability ``label_dropout``. At sampling, guidance weight w (the paper's; ``--guidance W``) gives

    eps = (1 + w) eps(x_t, y) - w eps(x_t)                                 (Ho & Salimans eq. 6)

w = 0 is plain conditional sampling. diffusers' ``guidance_scale`` s is w + 1. The combination is
made on the denoiser's output, which is affine in eps whatever the prediction target, so it is the
same in all three.

Likelihood: the variational bound (``process.GaussianDiffusion.nll_bound``), a ``lower_bound`` on
log p(x) of the data's levels (the discretised decoder) or, on real vectors, of the density.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.distributions.numerics import draw
from genzoo.models.base import (
    EvalDefaults,
    GenerativeModel,
    LogLikelihood,
    ModelConfig,
    SamplerSpec,
    check_choice,
    check_labelled,
    check_positive,
    check_unet_levels,
)
from genzoo.models.diffusion.process import (
    COSINE_OFFSET,
    PREDICTIONS,
    SCHEDULES,
    VARIANCES,
    GaussianDiffusion,
    Split,
)
from genzoo.models.diffusion.samplers import (
    SAMPLERS,
    SPACINGS,
    repaint_sample,
    replacement_sample,
    timestep_sequence,
)
from genzoo.nn.denoisers import MLPDenoiser, UNet
from genzoo.nn.mode import eval_mode

LOSSES = ("simple", "min_snr", "hybrid", "vlb")
TIMESTEP_SAMPLING = ("uniform", "importance")
COMPLETIONS = ("repaint", "replacement")
DEFAULT_STEPS = {"ddim": 50, "dpm-solver": 20}  # ddpm: all T
INPAINT_STEPS = 100  # respaced ancestral steps of a completion (RePaint: 5 passes over blocks of 10)


@dataclass
class DDPMConfig(ModelConfig):
    timesteps: int = 1000  # T, the training timesteps
    schedule: str = "cosine"  # noise schedule: linear (Ho et al.) | cosine (Nichol & Dhariwal)
    cosine_offset: float = COSINE_OFFSET  # the cosine schedule's s: the first step's noise (0.008: sigma_1 = 0.0064 at T = 1000)
    prediction: str = "v"  # what the network predicts: eps | x0 | v (v: eps at alpha_bar_T ~ 0 cannot give x0)
    variance: str = "small"  # reverse variance: small (beta-tilde) | large (beta) | learned (needs loss hybrid or vlb)
    loss: str = "simple"  # simple (L_simple) | min_snr (min-SNR-gamma weights) | hybrid (L_simple + lambda L_vlb) | vlb
    snr_gamma: float = 5.0  # gamma of loss=min_snr
    vlb_weight: float = 0.001  # lambda of loss=hybrid (Nichol & Dhariwal's 0.001)
    timestep_sampling: str = "uniform"  # training t: uniform | importance (the bound's proposal, reweighted: for vlb)
    channels: int = 32  # U-Net base width (images)
    channel_mult: tuple[int, ...] = (1, 2, 2)  # U-Net width per level, in units of channels (28 -> 14 -> 7)
    blocks: int = 2  # residual blocks per U-Net level
    attention_resolutions: tuple[int, ...] = (7,)  # U-Net levels (by height) with self-attention besides the middle's (0: none)
    heads: int = 4  # attention heads
    dropout: float = 0.1  # dropout in the residual blocks
    hidden: int = 128  # width of the MLP denoiser (vectors)
    layers: int = 3  # residual blocks of the MLP denoiser (vectors)
    class_conditional: bool = False  # condition on the label (needs a labelled dataset), for classifier-free guidance
    label_dropout: float = 0.1  # training: share of labels replaced by "no label" (classifier-free guidance)
    clip_denoised: bool = True  # images: clamp each predicted x0 to [-1, 1] when sampling and in the bound
    spacing: str = "trailing"  # timestep spacing of samplers with fewer steps than T: trailing | leading

    def validate(self, info: DataInfo) -> None:
        name = type(self).__name__
        for field, valid in (("schedule", SCHEDULES), ("prediction", PREDICTIONS), ("variance", VARIANCES),
                             ("loss", LOSSES), ("spacing", SPACINGS), ("timestep_sampling", TIMESTEP_SAMPLING)):
            check_choice(self, field, valid)
        check_positive(self, "cosine_offset", allow_zero=True)
        check_positive(self, "timesteps", "snr_gamma", "vlb_weight", "channels", "blocks", "heads", "hidden", "layers")
        check_unet_levels(self, info)
        if not 0 <= self.dropout < 1 or not 0 <= self.label_dropout < 1:
            raise ValueError(f"{name}.dropout and label_dropout must lie in [0, 1)")
        if self.variance == "learned" and self.loss not in ("hybrid", "vlb"):
            raise ValueError(f"{name}.variance=learned is trained only by the bound: use --set loss=hybrid (or vlb)")
        if self.loss == "hybrid" and self.variance != "learned":
            raise ValueError(f"{name}.loss=hybrid trains a learned variance: add --set variance=learned "
                             "(or use loss=vlb to train a fixed-variance model on the bound)")
        if self.class_conditional:
            check_labelled(info, "ddpm")


class DDPM(GenerativeModel):
    name = "ddpm"
    description = "denoising diffusion (Ho et al. 2020; DDIM, DPM-Solver++, classifier-free guidance), bound on NLL"
    Config = DDPMConfig
    family = "diffusion"
    samplers = (
        SamplerSpec("ddim", ("steps", "eta", "guidance"), "DDIM (Song et al. 2021), eta = 0 deterministic (default 50 steps)"),
        SamplerSpec("dpm-solver", ("steps", "guidance"), "DPM-Solver++(2M) (Lu et al. 2022), deterministic (default 20 steps)"),
        SamplerSpec("ddpm", ("steps", "guidance"), "ancestral sampling (Ho et al. 2020, algorithm 2; default all T steps)"),
    )
    estimators = ("bound",)
    training_defaults: ClassVar[dict] = {"lr": 2e-4, "grad_clip": 1.0, "ema_decay": 0.999, "warmup_steps": 100}

    def __init__(self, config: DDPMConfig, info: DataInfo):
        super().__init__(config, info)
        self.process = GaussianDiffusion(config.schedule, config.timesteps, config.prediction, config.variance,
                                         config.cosine_offset)
        classes = info.num_classes if config.class_conditional else 0
        factor = self.process.output_factor
        if info.kind == "image":
            self.net = UNet(info.shape, factor, config.channels, config.channel_mult, config.blocks,
                            config.attention_resolutions, config.heads, config.dropout, classes)
        else:
            self.net = MLPDenoiser(info.dim, factor, config.hidden, config.layers, classes)
        self.num_levels = info.num_levels if info.value_type != "continuous" else None
        self.clip = config.clip_denoised and info.kind == "image"

    @property
    def capabilities(self) -> frozenset[str]:
        """Completion always; guidance when the labels were dropped in training (the unconditional model)."""
        guide = self.config.class_conditional and self.config.label_dropout > 0
        return frozenset({"complete", "chain"} | ({"guide"} if guide else set()))

    @property
    def input_kind(self) -> str:
        return "continuous" if self.info.value_type == "continuous" else "discrete"

    @property
    def conditional(self) -> bool:
        return self.config.class_conditional

    @property
    def eval_defaults(self) -> EvalDefaults:
        """Draws of the bound per example: 4 for images (8 network passes), 64 for vectors (an MLP's passes
        are cheap); sample metrics on at most 1,000 DDIM-25 samples."""
        draws = 4 if self.info.kind == "image" else 64
        return EvalDefaults(draws=draws, sampler="ddim", steps=min(25, self.config.timesteps), samples=1000)

    # --- data <-> diffusion space -----------------------------------------------------------------
    def to_x0(self, x: Tensor) -> Tensor:
        """Model inputs -> x_0: images [0, 1] -> [-1, 1]; real vectors unchanged."""
        return 2 * x - 1 if self.info.kind == "image" else x

    def from_x0(self, x0: Tensor) -> Tensor:
        """x_0 -> model inputs, images rounded to the data's levels."""
        if self.num_levels is None or self.info.kind != "image":
            return x0
        k = self.num_levels - 1
        return ((x0.clamp(-1, 1) + 1) / 2 * k).round() / k

    def denoise(self, xt: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        return self.net(xt, t, y)

    # --- training -------------------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        """The chosen objective at one drawn t per example (``GaussianDiffusion.training_losses``): t uniform, or
        from ``timestep_proposal`` with the "loss" and "vb" terms reweighted by 1 / (T p_t), the same expectation."""
        self.check_input(x)
        y = self.check_labels(y, len(x))
        if y is not None and self.config.label_dropout:  # classifier-free guidance: sometimes no label
            drop = torch.rand(len(y), device=y.device) < self.config.label_dropout
            y = torch.where(drop, torch.full_like(y, self.info.num_classes), y)
        c = self.config
        if c.timestep_sampling == "importance":
            proposal = self.process.timestep_proposal()  # (T,) float64
            t = torch.multinomial(proposal, len(x), replacement=True).to(x.device)
            weight = (1 / (c.timesteps * proposal.to(x.device)[t])).float()  # (B,)
        else:
            t = torch.randint(0, c.timesteps, (len(x),), device=x.device)
            weight = None
        x0 = self.to_x0(x)
        terms = self.process.training_losses(self.denoise, x0, t, y, torch.randn_like(x0), c.loss, c.snr_gamma,
                                             c.vlb_weight, self.num_levels)
        if weight is not None:
            terms.update({name: weight * terms[name] for name in ("loss", "vb") if name in terms})
        return terms

    # --- likelihood -------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """Minus the bound on -log p(x [| y]), estimated from ``num_samples`` draws over t per example."""
        self.check_input(x)
        y = self.check_labels(y, len(x))
        with eval_mode(self):
            nll, variance = self.process.nll_bound(self.denoise, self.to_x0(x.to(self.dtype)), y, num_samples,
                                                   self.num_levels, generator, self.clip)
        decoder = (f"a Gaussian discretised to {self.num_levels} levels" if self.num_levels
                   else "a Gaussian density")
        reason = (f"variational bound (Ho et al. 2020, eq. 5) over T = {self.config.timesteps} steps, decoder {decoder}; "
                  f"unbiased Monte Carlo over t: each draw is prior + decoder + (T - 1) KL_t, t ~ U{{2..T}}")
        return LogLikelihood(-nll, "lower_bound", reason, variance)

    # --- sampling ---------------------------------------------------------------------------------------
    def predictor(self, labels: Tensor | None, guidance: float | None):
        """predict(x_t, t) -> Split for the samplers: the network, guided when ``guidance`` w is given."""
        def predict(xt: Tensor, t: Tensor) -> Split:
            if not guidance:
                return self.process.split(self.denoise(xt, t, labels), xt, t, self.clip)
            unlabelled = torch.full_like(labels, self.info.num_classes)
            both = self.denoise(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([labels, unlabelled])).float()
            conditional, unconditional = both.chunk(2)
            if self.process.variance == "learned":  # guide the mean part; the variance is the conditional one's
                (cond_mean, cond_var), (uncond_mean, _) = conditional.chunk(2, 1), unconditional.chunk(2, 1)
                guided = torch.cat([(1 + guidance) * cond_mean - guidance * uncond_mean, cond_var], 1)
            else:
                guided = (1 + guidance) * conditional - guidance * unconditional  # Ho & Salimans eq. 6
            return self.process.split(guided, xt, t, self.clip)
        return predict

    def check_guidance(self, guidance: float | None) -> None:
        if not guidance or self.can("guide") and guidance > 0:
            return
        if not self.conditional:
            raise ValueError(f"--guidance {guidance:g} needs a class-conditional model (train with --set "
                             "class_conditional=true); this ddpm is unconditional")
        if not self.config.label_dropout:
            raise ValueError(f"--guidance {guidance:g} needs the unconditional branch, and this model was trained "
                             "with label_dropout=0; retrain with --set label_dropout=0.1")
        if guidance < 0:
            raise ValueError(f"--guidance must be >= 0 (w = 0: plain conditional sampling), got {guidance:g}")

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               sampler: str = "ddim", steps: int | None = None, eta: float | None = None,
               guidance: float | None = None) -> Tensor:
        """n samples (n, *shape) from x_T ~ N(0, I) with ``sampler`` in ``steps`` steps (see ``samplers``)."""
        labels = self.check_labels(labels, n)
        self.check_guidance(guidance)
        if eta is not None and not eta >= 0:
            raise ValueError(f"--eta must be >= 0 (0: deterministic DDIM, 1: DDPM's variance), got {eta:g}")
        if steps is None:
            steps = min(DEFAULT_STEPS.get(sampler, self.config.timesteps), self.config.timesteps)
        timestep_sequence(self.config.timesteps, steps, self.config.spacing)  # --steps out of range fails here
        x = draw(torch.randn, (n, *self.info.shape), generator, self.device, self.dtype)
        x = x.contiguous(memory_format=self.info.memory_format)  # the weights' layout: 1.2x faster sampling
        run = SAMPLERS[sampler]
        if sampler == "ddim":
            run = partial(run, eta=eta or 0.0)
        with eval_mode(self):  # no dropout: the samples depend on the generator alone
            x0 = run(self.predictor(labels, guidance), x, self.process, steps, generator=generator,
                     spacing=self.config.spacing)
        return self.from_x0(x0)

    @torch.no_grad()
    def sampling_chain(self, n: int, snapshots: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """x_t and the predicted x_0 (in the data's units) at ``snapshots`` evenly spaced steps of DDIM-50."""
        labels = torch.arange(n, device=self.device) % self.info.num_classes if self.conditional else None
        steps = min(DEFAULT_STEPS["ddim"], self.config.timesteps)
        keep = {round(k * (steps - 1) / max(1, snapshots - 1)) for k in range(snapshots)}
        states: dict[str, list[Tensor]] = {"x_t": [], "predicted x_0": []}
        step = 0

        def record(t: int, xt: Tensor, pred: Split) -> None:
            nonlocal step
            if step in keep:
                states["x_t"].append(self.from_x0(xt))  # clamped to [-1, 1] and leveled, as shown
                states["predicted x_0"].append(self.from_x0(pred.x0))
            step += 1

        x = draw(torch.randn, (n, *self.info.shape), generator, self.device, self.dtype)
        with eval_mode(self):
            SAMPLERS["ddim"](self.predictor(labels, None), x, self.process, steps, generator=generator,
                             spacing=self.config.spacing, callback=record)
        return {name: torch.stack(values, 1) for name, values in states.items()}  # (n, snapshots, *shape)

    @torch.no_grad()
    def complete(self, x: Tensor, observed: Tensor, labels: Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None) -> Tensor:
        """Fill in the pixels outside ``observed`` ((H, W) or (B, C, H, W), True = kept) of x (B, C, H, W),
        keeping the observed ones exactly: RePaint (default) or replacement, 100 respaced ancestral steps."""
        sampler = sampler or COMPLETIONS[0]
        if sampler not in COMPLETIONS:
            raise ValueError(f"ddpm completes images by {' or '.join(COMPLETIONS)}, not {sampler!r}")
        self.check_input(x)
        labels = self.check_labels(labels, len(x))
        keep = observed.to(x.device).expand_as(x)
        known = self.to_x0(x.to(self.dtype))
        start = draw(torch.randn, tuple(x.shape), generator, x.device, self.dtype)
        run = repaint_sample if sampler == "repaint" else replacement_sample
        steps = min(INPAINT_STEPS, self.config.timesteps)
        with eval_mode(self):
            x0 = run(self.predictor(labels, None), start, self.process, steps, known, keep, generator,
                     self.config.spacing)
        return torch.where(keep, x.to(self.dtype), self.from_x0(x0))

