"""A deep energy-based model: p(x) = exp(-E(x)) / Z with E a neural network, sampled by Langevin dynamics.

Three objectives (``objective``):

- ``cd``: maximum likelihood by contrastive divergence. The gradient of -log p(x) is
  dE(x)/dtheta - E_p[dE/dtheta]; the model's expectation is taken at negatives drawn by
  ``langevin_steps`` steps of Langevin dynamics (``genzoo.models.energy.langevin``). With a replay
  buffer (``buffer_size`` > 0; Du & Mordatch 2019) each chain starts from a buffer entry, or from
  noise with probability ``reinit``, and its end goes back into the buffer, so chains run on across
  updates (persistent CD, as the RBM's). With ``buffer_size=0`` every chain starts from noise: the
  short-run EBM of Nijkamp et al. 2019, whose K-step sampler is itself the generator. The loss per
  example is
      E(x_i) - E(x_i^-) + energy_penalty * (E(x_i)^2 + E(x_i^-)^2),
  the L2 penalty on energies of Du & Mordatch keeping both near 0.
- ``ssm``: sliced score matching (Song et al. 2019) on the score s(x) = -dE/dx: no sampling in training.
- ``dsm``: denoising score matching (Vincent 2011) at noise ``sigma``: it fits the score of the data
  convolved with N(0, sigma^2 I), a known bias. With ``noise_levels`` L > 1 the energy is noise-conditional,
  E(x, sigma) on a denoising U-Net (images) or residual MLP (vectors) (``nn.energies.DenoiserEnergy``),
  fitted at every sigma from ``sigma_max`` down to ``sigma`` (Song & Ermon 2019), and sampled through the L
  levels by predictor-corrector sampling (the default: ancestral steps, each after one Langevin corrector
  step), ancestral sampling alone (``langevin.ancestral_sampling``) or annealed Langevin dynamics with a final
  denoising step (``langevin.annealed_langevin``). The
  bias of one sigma then shrinks to the smallest level's, and the chains cross between modes at the large
  levels, which a single energy's chains from noise cannot do in a few hundred steps. ``level_weight``
  weighs the levels: Song & Ermon's sigma^2, or Karras et al.'s, under which the U-Net's error counts alike
  at every level (``score_matching.noise_conditional_dsm_loss``).

Langevin steps are x <- x - step_size * dE/dx + sqrt(2 step_size temperature) * noise, which targets
exp(-E(x) / temperature); temperature 1 is exact. On images, Du & Mordatch's step 10 with noise 0.005
is temperature 1.25e-6: a cold, nearly deterministic descent. The sampler of ``genzoo sample`` starts
fresh chains from noise (uniform on the data's range), never from the buffer.

Divergence, the known failure (energies running off as the negatives and the data separate): every
step's energies and input-gradient norms are checked (``divergence``), and training stops with the
last good checkpoint kept.

Likelihood: on 2-D data, log Z by the midpoint rule over the dataset's box (``log_partition``),
``numerical``; on images none: Z over hundreds of dimensions has no estimate here that is a bound or
reliable, so the sample metrics judge the model. A noise-conditional energy's density is exp(-E(x, sigma))
at the smallest level: the data blurred by N(0, sigma^2 I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from genzoo.data.core import DataInfo
from genzoo.data.toy2d import TOY2D
from genzoo.distributions.grid import grid_points, log_cell_area
from genzoo.distributions.numerics import draw
from genzoo.models.base import (
    EvalDefaults,
    GenerativeModel,
    LogLikelihood,
    ModelConfig,
    SamplerSpec,
    check_choice,
    check_positive,
    check_unet_levels,
)
from genzoo.models.energy.langevin import (
    ancestral_sampling,
    annealed_langevin,
    energy_and_gradient,
    geometric_sigmas,
    langevin,
)
from genzoo.models.energy.score_matching import (
    denoising_score_matching_loss,
    noise_conditional_dsm_loss,
    sliced_score_matching_loss,
)
from genzoo.nn.denoisers import MLPDenoiser, UNet
from genzoo.nn.energies import ConvEnergy, DenoiserEnergy, MLPEnergy

OBJECTIVES = ("cd", "ssm", "dsm")
LEVEL_WEIGHTS = ("sigma2", "karras")  # noise-conditional dsm: Song & Ermon's lambda = sigma^2, or Karras et al.'s
GRID_RESOLUTION = 512  # cells per side of the grid that normalises a 2-D density


@dataclass
class EBMConfig(ModelConfig):
    objective: str = "cd"  # cd (Langevin negatives) | ssm (sliced score matching) | dsm (denoising score matching)
    channels: int = 16  # width of the convolutional energy (images): 16, 32 and 64 channels; a U-Net's base width
    hidden_dim: int = 128  # width of the MLP energy (vectors)
    num_hidden_layers: int = 3  # its layers
    # Langevin dynamics (training negatives of cd, and sampling). None: by the data's kind
    langevin_steps: int | None = None  # steps per training chain (default: images 40, vectors 20)
    langevin_step: float | None = None  # step size on dE/dx (default: images 10, Du & Mordatch's; vectors 0.01)
    langevin_temperature: float | None = None  # noise sqrt(2 step T) (default: images 1.25e-6, noise 0.005; vectors 1, exact)
    langevin_clip: float | None = None  # clamp of each element of dE/dx; 0: none (default: images 0.01; vectors 0)
    sample_steps: int | None = None  # Langevin steps of a sample from noise (default: langevin_steps x images 20, vectors 100; short-run x 5)
    buffer_size: int | None = None  # replay buffer of cd; 0: short-run chains from noise (default: images 0, vectors 10,000)
    reinit: float = 0.05  # probability that a chain starts from noise instead of the buffer
    energy_penalty: float | None = None  # weight of the L2 penalty on energies, cd (default: images 1, vectors 0.1)
    sigma: float = 0.1  # noise of dsm (with noise_levels > 1: the smallest level)
    noise_levels: int = 1  # dsm: 1, one energy at sigma; L > 1, a noise-conditional energy, annealed Langevin over L levels
    sigma_max: float = 10.0  # the largest level of a noise-conditional energy: well above the data's spread (see below)
    sigma_data: float | None = None  # its preconditioning's data scale (default: images 0.5, vectors 1)
    level_weight: str = "sigma2"  # its loss per level: sigma2 (Song & Ermon) | karras (the U-Net's error alike at every level)
    channel_mult: tuple[int, ...] = (1, 2, 2)  # a noise-conditional energy's U-Net: widths per level, in units of channels
    blocks: int = 1  # and residual blocks per level
    projections: int = 1  # random projections per example of ssm
    max_energy: float = 1e4  # |energy| above this on average: diverged
    max_gradient: float = 1e6  # RMS of dE/dx per dimension above this: diverged

    def validate(self, info: DataInfo) -> None:
        check_choice(self, "objective", OBJECTIVES)
        check_choice(self, "level_weight", LEVEL_WEIGHTS)
        check_positive(self, "channels", "hidden_dim", "num_hidden_layers", "sigma", "projections", "max_energy",
                       "max_gradient", "noise_levels", "sigma_max", "blocks")
        if self.sigma_data is not None:
            check_positive(self, "sigma_data")
        if self.noise_levels > 1 and self.objective != "dsm":
            raise ValueError(f"EBMConfig.noise_levels={self.noise_levels} trains a noise-conditional energy by "
                             f"denoising score matching: use --set objective=dsm (or noise_levels=1 with {self.objective})")
        if self.noise_levels > 1 and not self.sigma < self.sigma_max:
            raise ValueError(f"EBMConfig: the noise levels run from sigma_max={self.sigma_max:g} down to "
                             f"sigma={self.sigma:g}; sigma must be the smaller")
        if self.level_weight != "sigma2" and self.noise_levels == 1:
            raise ValueError(f"EBMConfig.level_weight={self.level_weight} weighs the noise levels of a noise-conditional "
                             "energy: use it with --set noise_levels=L (L > 1)")
        check_unet_levels(self, info)
        for name in ("langevin_steps", "langevin_step", "langevin_temperature", "sample_steps"):
            if getattr(self, name) is not None:
                check_positive(self, name)
        for name in ("langevin_clip", "energy_penalty", "buffer_size"):
            if getattr(self, name) is not None:
                check_positive(self, name, allow_zero=True)
        if not 0 <= self.reinit <= 1:
            raise ValueError(f"EBMConfig.reinit={self.reinit!r} must lie in [0, 1]")


@dataclass(frozen=True)
class KindDefaults:
    """The settings an ``EBMConfig`` leaves None, by the data's kind."""

    buffer_size: int  # 0: short-run chains
    langevin_steps: int
    langevin_step: float
    langevin_temperature: float
    langevin_clip: float
    energy_penalty: float
    sample_multiple: int  # sample_steps = this x langevin_steps (x SHORT_RUN_SAMPLE_MULTIPLE for short-run chains)


# Images: short-run chains (Nijkamp et al.) with Du & Mordatch's sampler (step 10, noise 0.005, clamp 0.01), 40
# steps where they ran 60 (a CPU budget). On MNIST, about 2,500 updates in 50-55 minutes on one thread: short-run at
# Adam 3e-4, FD 316 from 200-step samples (370 from 40); a 10,000-entry buffer at 2e-4, FD 519 from 800-step
# samples. A buffer's fresh chains need many more steps than the buffer's, which run on across updates: after
# 1,000 updates, 160 steps from noise drew blobs, 800 thin digits, 2,000 the same digits.
# Vectors: persistent chains of exact Langevin, whose density the grid then normalises; 3,000 steps on checkerboard
# at Adam 1e-3: KL 0.099 with 20 steps and penalty 0.1, 0.66 with 100 steps and penalty 1 at 1e-4. On two-moons,
# 400 sampling steps left chains on the energy's far plateau (sliced W2 0.41), 2,000 and 5,000 did not (0.13).
KIND_DEFAULTS = {"image": KindDefaults(0, 40, 10.0, 0.005**2 / 20, 0.01, 1.0, 20),
                 "vector": KindDefaults(10_000, 20, 0.01, 1.0, 0.0, 0.1, 100)}
SHORT_RUN_SAMPLE_MULTIPLE = 5  # a short-run model's own chain, run on: MNIST FD 316 at 200 steps, 370 at 40
# Annealed Langevin: step_size = ANNEALED_STEP sigma_min^2, so alpha_i / sigma_i^2 = ANNEALED_STEP at every level, and
# ANNEALED_STEPS_PER_LEVEL steps a level. An energy fitted by DSM is right only near its level's noisy data, a shell
# of radius about sigma sqrt(D) around the data, so adjacent levels' shells must overlap (Song & Ermon 2020): on
# MNIST, 10 levels of 10 steps (Song & Ermon 2019 ran 10 of 100 at 0.2) drifted toward bright noise, 100 levels of one
# step at 0.5 drew digits (0.25 left noise in, 1.0 diverged). The chains start at the first level's Gaussian, which
# lies inside that level's shell only when sigma_max is well above the data's spread: with sigma_max = 1 they drifted
# to white from N(0.5, 1.25 I) and drew digits from the data's pixel means and variances plus sigma_max^2.
ANNEALED_STEP = 0.5
ANNEALED_STEPS_PER_LEVEL = 1
PC_CORRECTOR_STEPS = 1  # corrector steps a level of the pc sampler, at langevin.CORRECTOR_SNR (Song et al.'s)
MONITORED = 8  # examples whose dE/dx a noise-conditional energy's divergence check reads


LANGEVIN = SamplerSpec("langevin", ("steps",), "Langevin dynamics from uniform noise; with noise_levels > 1, annealed "
                       "through the levels (the steps spread evenly over them), then denoised")
ANCESTRAL = SamplerSpec("ancestral", ("steps",), "noise-conditional energies: ancestral sampling (Song "
                        "et al. 2021), one step a level, the --steps levels spaced geometrically (default noise_levels)")
PREDICTOR_CORRECTOR = SamplerSpec("pc", ("steps",), "noise-conditional energies (their default): ancestral sampling "
                                  "with one Langevin corrector step a level before each (Song et al. 2021's "
                                  "predictor-corrector), twice the gradients of ancestral")
# the samplers that walk a noise-conditional energy's levels -> their Langevin corrector steps a level
LEVEL_SAMPLERS = {ANCESTRAL.name: 0, PREDICTOR_CORRECTOR.name: PC_CORRECTOR_STEPS}


class EBM(GenerativeModel):
    name = "ebm"
    description = ("deep energy-based model: Langevin contrastive divergence with a replay buffer, score matching, or a "
                   "noise-conditional energy with annealed Langevin")
    Config = EBMConfig
    family = "energy"
    value_types = ("discrete", "continuous")
    capabilities = frozenset({"chain", "complete", "input_gradients"})
    samplers = (LANGEVIN, ANCESTRAL, PREDICTOR_CORRECTOR)
    # Du & Mordatch train with Adam betas (0, 0.999): no momentum on a gradient whose negatives change every step
    training_defaults: ClassVar[dict] = {"lr": {"image": 3e-4, "vector": 1e-3}, "betas": (0.0, 0.999),
                                         "batch_size": {"image": 64, "vector": 128}}

    def __init__(self, config: EBMConfig, info: DataInfo):
        super().__init__(config, info)
        kind = "image" if info.kind == "image" else "vector"
        defaults = KIND_DEFAULTS[kind]

        def setting(name: str):
            return getattr(defaults, name) if getattr(config, name) is None else getattr(config, name)

        self.buffer_size, self.langevin_steps, self.energy_penalty = (
            setting("buffer_size"), setting("langevin_steps"), setting("energy_penalty"))
        self.step_size, self.temperature = setting("langevin_step"), setting("langevin_temperature")
        self.gradient_clamp = setting("langevin_clip")
        multiple = defaults.sample_multiple if self.buffer_size else SHORT_RUN_SAMPLE_MULTIPLE
        self.sample_steps = config.sample_steps or multiple * self.langevin_steps
        self.annealed = config.noise_levels > 1
        if self.annealed:
            self.step_size = config.langevin_step or ANNEALED_STEP * config.sigma**2
            self.sample_steps = config.sample_steps or ANNEALED_STEPS_PER_LEVEL * config.noise_levels
            self.sigmas = geometric_sigmas(config.sigma_max, config.sigma, config.noise_levels)
            denoiser = (UNet(info.shape, 1, config.channels, config.channel_mult, config.blocks, (0,), dropout=0.0)
                        if kind == "image" else MLPDenoiser(info.dim, 1, config.hidden_dim, config.num_hidden_layers))
            center = 0.5 if kind == "image" else 0.0
            sigma_data = config.sigma_data or (0.5 if kind == "image" else 1.0)
            self.energy_net = DenoiserEnergy(denoiser, config.sigma, config.sigma_max, sigma_data, center)
            # on 250 MNIST validation images, one trained energy: FD 133 by predictor-corrector, 176 by ancestral
            # sampling alone (and, at 950 steps on the protocol, ancestral 211 where annealed Langevin drew 259)
            self.samplers = (PREDICTOR_CORRECTOR, ANCESTRAL, LANGEVIN)
        else:
            self.energy_net = (ConvEnergy(info.shape, config.channels) if kind == "image"
                               else MLPEnergy(info.shape, config.hidden_dim, config.num_hidden_layers))
        # the replay buffer (buffer_size, *shape): training state, saved with the optimizer, not with the weights
        self.register_buffer("replay", self.noise(self.buffer_size, torch.Generator().manual_seed(0)),
                             persistent=False)
        self._log_z_cache: tuple[tuple, float] | None = None

    @property
    def input_kind(self) -> str:
        return "continuous"

    @property
    def box(self) -> tuple[float, float] | None:
        """The square box of a 2-D arena dataset, where its density is normalised; None otherwise."""
        spec = TOY2D.get(self.info.name)
        return spec.extent if spec is not None and self.info.dim == 2 else None

    @property
    def bounds(self) -> tuple[float, float] | None:
        """Where chains are clamped after each step: images in [0, 1]; a 2-D arena dataset in its box, where its
        density is normalised (an MLP energy may fall off outside it: 9% of unclamped chains left the
        eight-gaussians box, some to 15 units); None otherwise."""
        return (0.0, 1.0) if self.info.kind == "image" else self.box

    @property
    def estimators(self) -> tuple[str, ...]:
        return ("grid",) if self.box is not None else ()

    @property
    def eval_defaults(self) -> EvalDefaults:
        return EvalDefaults(steps=self.sample_steps, samples=1000 if self.info.kind == "image" else None)

    def energy(self, x: Tensor) -> Tensor:
        """E(x) (B,) of inputs (B, *shape); a noise-conditional energy's at its smallest level."""
        if self.annealed:
            return self.energy_net(x, torch.full((len(x),), self.config.sigma, device=x.device, dtype=x.dtype))
        return self.energy_net(x)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Chain starts (n, *shape): uniform on [0, 1] (images) or on the dataset's box (2-D), else N(0, I)."""
        shape, device, dtype = (n, *self.info.shape), self.device, self.dtype
        if self.info.kind == "image":
            return draw(torch.rand, shape, generator, device, dtype)
        if self.box is not None:
            lo, hi = self.box
            return lo + (hi - lo) * draw(torch.rand, shape, generator, device, dtype)
        return draw(torch.randn, shape, generator, device, dtype)

    def run_langevin(self, x: Tensor, steps: int, generator: torch.Generator | None = None,
                     observed: Tensor | None = None, final_noise: bool = True) -> Tensor:
        """``steps`` Langevin steps of this model's settings from x (B, *shape)."""
        x = x.contiguous(memory_format=self.info.memory_format)  # the weights' layout
        return langevin(self.energy, x, steps, self.step_size, math.sqrt(2 * self.step_size * self.temperature),
                        grad_clip=self.gradient_clamp or None, bounds=self.bounds,
                        observed=observed, generator=generator, final_noise=final_noise)

    # --- training -----------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        objective = self.config.objective
        if objective == "ssm":
            return {"loss": sliced_score_matching_loss(self.energy, x, self.config.projections), **self.monitor(x)}
        if objective == "dsm" and self.annealed:
            loss = noise_conditional_dsm_loss(self.energy_net, x, self.config.sigma, self.config.sigma_max,
                                              sigma_data=self.energy_net.sigma_data if self.config.level_weight == "karras" else None)
            return {"loss": loss, **self.monitor(x[:MONITORED])}  # a U-Net's extra pass on every example costs 20%
        if objective == "dsm":
            return {"loss": denoising_score_matching_loss(self.energy, x, self.config.sigma), **self.monitor(x)}
        negatives = self.negatives(len(x))  # (B, *shape), no graph
        data_energy, model_energy = self.energy(x), self.energy(negatives)  # (B,) each
        loss = data_energy - model_energy + self.energy_penalty * (data_energy**2 + model_energy**2)
        return {"loss": loss, "energy_data": data_energy.detach(), "energy_model": model_energy.detach(),
                **self.monitor(negatives)}

    def negatives(self, n: int) -> Tensor:
        """Langevin chains (n, *shape) from the replay buffer (or noise), their ends written back."""
        if self.buffer_size == 0:
            return self.run_langevin(self.noise(n), self.langevin_steps)
        index = torch.randint(self.buffer_size, (n,), device=self.replay.device)
        starts = self.replay[index]
        fresh = torch.rand(n, device=starts.device) < self.config.reinit
        starts = torch.where(fresh.view(-1, *[1] * (starts.dim() - 1)), self.noise(n), starts)
        ends = self.run_langevin(starts, self.langevin_steps)
        self.replay[index] = ends
        return ends

    def monitor(self, x: Tensor) -> dict[str, Tensor]:
        """{"gradient_rms": the RMS per dimension of dE/dx at x (B,)}: what divergence shows in first."""
        _, gradient = energy_and_gradient(self.energy, x)
        return {"gradient_rms": gradient.flatten(1).square().mean(1).sqrt()}

    def divergence(self, terms: dict[str, Tensor]) -> str:
        """Why this step's terms show divergence ('' when they do not)."""
        for name, limit in (("energy_data", self.config.max_energy), ("energy_model", self.config.max_energy),
                            ("gradient_rms", self.config.max_gradient)):
            if name not in terms:
                continue
            value = terms[name].float().abs().mean().item()
            if not value <= limit:
                option = "max_gradient" if name == "gradient_rms" else "max_energy"
                return (f"the energy has diverged: the mean |{name}| is {value:.3g}, past {option}={limit:g}; "
                        "train with a lower --lr or a larger --set energy_penalty")
        return ""

    def training_state(self) -> dict[str, Tensor]:
        return {"replay": self.replay} if self.buffer_size else {}

    def load_training_state(self, tensors: dict[str, Tensor]) -> None:
        if self.buffer_size:
            self.replay.copy_(tensors["replay"])

    # --- the likelihood -----------------------------------------------------------------------
    def log_partition(self) -> float:
        """log Z = log of the integral of exp(-E) over the box, by the midpoint rule on a 512 x 512 grid,
        cached for these weights (the optimizer bumps their versions)."""
        key = tuple(p._version for p in self.parameters())
        if self._log_z_cache is None or self._log_z_cache[0] != key:
            points = grid_points(self.box, GRID_RESOLUTION)  # (512^2, 2)
            with torch.no_grad():
                energies = torch.cat([self.energy(chunk.to(self.device, self.dtype)).double()
                                      for chunk in points.split(65_536)])
            self._log_z_cache = (key, (torch.logsumexp(-energies, 0) + log_cell_area(self.box, GRID_RESOLUTION)).item())
        return self._log_z_cache[1]

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None, estimator: str | None = None) -> LogLikelihood:
        self.check_input(x)
        if self.box is None:
            return LogLikelihood(None, "unavailable", f"ebm: Z of an energy over {self.info.dim} dimensions has no "
                                 "estimate here that is a bound or reliable; read the sample metrics")
        self.estimator(estimator)
        value = -self.energy(x).double() - self.log_partition()
        return LogLikelihood(value, "numerical", f"exp(-E) normalised over the box {self.box} by the midpoint rule, "
                             f"{GRID_RESOLUTION} x {GRID_RESOLUTION} cells", torch.zeros_like(value))

    # --- sampling -----------------------------------------------------------------------------
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               steps: int | None = None, sampler: str | None = None) -> Tensor:
        """Fresh chains from noise after ``steps`` Langevin steps (default ``sample_steps``), the last
        without its noise, or ancestral (predictor-corrector) sampling through ``steps`` levels (``sampler``;
        default the model's first): (n, *shape)."""
        name = self.sampler_spec(sampler).name
        if name in LEVEL_SAMPLERS:
            return self.run_ancestral(n, steps, generator, corrector_steps=LEVEL_SAMPLERS[name])
        steps = self.sample_steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"ebm: --steps {steps}: a Langevin chain needs at least 1 step")
        if self.annealed:
            return self.run_annealed(self.annealed_start(n, generator), steps, generator)
        return self.run_langevin(self.noise(n, generator), steps, generator, final_noise=False)

    def annealed_start(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Chain starts (n, *shape) of annealed Langevin: N(center, (sigma_1^2 + s_d^2) I) at its first level sigma_1,
        the energy of that level before training, near which the trained one stays."""
        spread = math.hypot(float(self.sigmas[0]), self.energy_net.sigma_data)
        return self.energy_net.center + spread * draw(torch.randn, (n, *self.info.shape), generator, self.device, self.dtype)

    def run_annealed(self, x: Tensor, steps: int, generator: torch.Generator | None = None,
                     known: Tensor | None = None, observed: Tensor | None = None) -> Tensor:
        """Annealed Langevin from x (B, *shape): ``steps`` in all, spread evenly over the levels (at least one
        each), then the denoising step; clamped to ``bounds`` (images: [0, 1]) at the end."""
        x = x.contiguous(memory_format=self.info.memory_format)
        per_level = max(1, math.ceil(steps / len(self.sigmas)))
        x = annealed_langevin(self.energy_net, x, self.sigmas, per_level, self.step_size, known=known,
                              observed=observed, generator=generator)
        return self.clamped(x)

    def run_ancestral(self, n: int, steps: int | None, generator: torch.Generator | None = None,
                      known: Tensor | None = None, observed: Tensor | None = None, callback=None,
                      corrector_steps: int = 0) -> Tensor:
        """Ancestral sampling of n chains (n, *shape) from ``annealed_start`` through ``steps`` levels from
        sigma_max down to sigma, spaced geometrically (default: the trained levels), with ``corrector_steps``
        Langevin steps a level (predictor-corrector); clamped to ``bounds``."""
        if not self.annealed:
            raise ValueError("ebm: the ancestral and pc samplers walk the noise levels of a noise-conditional energy; "
                             "this one has a single level: use --sampler langevin (or train with --set noise_levels=L)")
        levels = self.config.noise_levels if steps is None else steps
        if levels < 2:
            raise ValueError(f"ebm: --steps {levels}: ancestral sampling needs at least 2 noise levels")
        x = self.annealed_start(n, generator).contiguous(memory_format=self.info.memory_format)
        sigmas = geometric_sigmas(self.config.sigma_max, self.config.sigma, levels)
        return self.clamped(ancestral_sampling(self.energy_net, x, sigmas, known=known, observed=observed,
                                               generator=generator, callback=callback,
                                               corrector_steps=corrector_steps))

    def clamped(self, x: Tensor) -> Tensor:
        """x clamped to ``bounds`` where the model has them."""
        return x.clamp(*self.bounds) if self.bounds is not None else x

    def complete(self, x: Tensor, observed: Tensor, labels: Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None,
                 steps: int | None = None) -> Tensor:
        """Clamped Langevin: the pixels outside ``observed`` ((H, W) or (B, C, H, W), True = kept) of x
        (B, C, H, W) start as noise and follow ``steps`` Langevin steps with the observed pixels put back
        after each (or, ``ancestral``, the observed pixels held at each level's noisy draw of them); the
        observed pixels come back exactly."""
        sampler = self.sampler_spec(sampler).name
        self.check_input(x)
        keep = observed.to(x.device).expand_as(x)
        if sampler in LEVEL_SAMPLERS:
            return self.run_ancestral(len(x), steps, generator, known=x, observed=keep,
                                      corrector_steps=LEVEL_SAMPLERS[sampler])
        steps = self.sample_steps if steps is None else steps
        if self.annealed:
            return self.run_annealed(self.annealed_start(len(x), generator), steps, generator, known=x, observed=keep)
        start = torch.where(keep, x, self.noise(len(x), generator))
        return self.run_langevin(start, steps, generator, observed=keep, final_noise=False)

    def sampling_chain(self, n: int, snapshots: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The chains at ``snapshots`` step counts spaced evenly in log scale from 1 to ``sample_steps``; a
        noise-conditional energy's predictor-corrector chains (its default sampler) after evenly spaced levels, the
        last the denoised sample."""
        if self.annealed:
            levels = len(self.sigmas)
            keep = {round(k * (levels - 1) / max(1, snapshots - 1)) for k in range(snapshots)}
            states: list[Tensor] = []

            def record(level: int, x: Tensor) -> None:
                if level in keep:
                    states.append(self.clamped(x))

            self.run_ancestral(n, None, generator, callback=record, corrector_steps=PC_CORRECTOR_STEPS)
            sigmas = ", ".join(f"{float(self.sigmas[k]):.2g}" for k in sorted(keep)[:-1])
            title = f"predictor-corrector sampling after levels sigma = {sigmas}, then denoised"
            return {title: torch.stack(states, 1)}
        marks = sorted({round(math.exp(k * math.log(self.sample_steps) / max(1, snapshots - 1)))
                        for k in range(snapshots)})
        x, states, done = self.noise(n, generator), [], 0
        for mark in marks:
            x = self.run_langevin(x, mark - done, generator)
            done = mark
            states.append(x)
        return {f"Langevin steps {', '.join(map(str, marks))}": torch.stack(states, 1)}
