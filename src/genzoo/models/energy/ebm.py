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
  convolved with N(0, sigma^2 I), a known bias.

Langevin steps are x <- x - step_size * dE/dx + sqrt(2 step_size temperature) * noise, which targets
exp(-E(x) / temperature); temperature 1 is exact. On images, Du & Mordatch's step 10 with noise 0.005
is temperature 1.25e-6: a cold, nearly deterministic descent. The sampler of ``genzoo sample`` starts
fresh chains from noise (uniform on the data's range), never from the buffer.

Divergence, the known failure (energies running off as the negatives and the data separate): every
step's energies and input-gradient norms are checked (``divergence``), and training stops with the
last good checkpoint kept.

Likelihood: on 2-D data, log Z by the midpoint rule over the dataset's box (``log_partition``),
``numerical``; on images none: Z over hundreds of dimensions has no estimate here that is a bound or
reliable, so the sample metrics judge the model.
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
)
from genzoo.models.energy.langevin import energy_and_gradient, langevin
from genzoo.models.energy.score_matching import (
    denoising_score_matching_loss,
    sliced_score_matching_loss,
)
from genzoo.nn.energies import ConvEnergy, MLPEnergy

OBJECTIVES = ("cd", "ssm", "dsm")
GRID_RESOLUTION = 512  # cells per side of the grid that normalises a 2-D density


@dataclass
class EBMConfig(ModelConfig):
    objective: str = "cd"  # cd (Langevin negatives) | ssm (sliced score matching) | dsm (denoising score matching)
    channels: int = 16  # width of the convolutional energy (images): 16, 32 and 64 channels
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
    sigma: float = 0.1  # noise of dsm
    projections: int = 1  # random projections per example of ssm
    max_energy: float = 1e4  # |energy| above this on average: diverged
    max_gradient: float = 1e6  # RMS of dE/dx per dimension above this: diverged

    def validate(self, info: DataInfo) -> None:
        check_choice(self, "objective", OBJECTIVES)
        check_positive(self, "channels", "hidden_dim", "num_hidden_layers", "sigma", "projections", "max_energy",
                       "max_gradient")
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


class EBM(GenerativeModel):
    name = "ebm"
    description = "deep energy-based model: Langevin contrastive divergence with a replay buffer, or score matching"
    Config = EBMConfig
    family = "energy"
    value_types = ("discrete", "continuous")
    capabilities = frozenset({"chain", "complete", "input_gradients"})
    samplers = (SamplerSpec("langevin", ("steps",), "Langevin dynamics from uniform noise"),)
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
        """E(x) (B,) of inputs (B, *shape)."""
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
        if self.info.kind == "image":  # the layout of the trainer's weights: 6x faster 3x3 convolutions on a CPU
            x = x.contiguous(memory_format=torch.channels_last)
        return langevin(self.energy, x, steps, self.step_size, math.sqrt(2 * self.step_size * self.temperature),
                        grad_clip=self.gradient_clamp or None, bounds=self.bounds,
                        observed=observed, generator=generator, final_noise=final_noise)

    # --- training -----------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        objective = self.config.objective
        if objective == "ssm":
            return {"loss": sliced_score_matching_loss(self.energy, x, self.config.projections), **self.monitor(x)}
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
               steps: int | None = None) -> Tensor:
        """Fresh chains from noise after ``steps`` Langevin steps (default ``sample_steps``), the last
        without its noise: (n, *shape)."""
        steps = self.sample_steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"ebm: --steps {steps}: a Langevin chain needs at least 1 step")
        return self.run_langevin(self.noise(n, generator), steps, generator, final_noise=False)

    def complete(self, x: Tensor, observed: Tensor, labels: Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None,
                 steps: int | None = None) -> Tensor:
        """Clamped Langevin: the pixels outside ``observed`` ((H, W) or (B, C, H, W), True = kept) of x
        (B, C, H, W) start as noise and follow ``steps`` Langevin steps with the observed pixels put back
        after each; the observed pixels come back exactly."""
        if sampler not in (None, "langevin"):
            raise ValueError(f"ebm completes images by clamped Langevin dynamics ('langevin'), not {sampler!r}")
        self.check_input(x)
        keep = observed.to(x.device).expand_as(x)
        start = torch.where(keep, x, self.noise(len(x), generator))
        steps = self.sample_steps if steps is None else steps
        return self.run_langevin(start, steps, generator, observed=keep, final_noise=False)

    def sampling_chain(self, n: int, snapshots: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The chains at ``snapshots`` step counts spaced evenly in log scale from 1 to ``sample_steps``."""
        marks = sorted({round(math.exp(k * math.log(self.sample_steps) / max(1, snapshots - 1)))
                        for k in range(snapshots)})
        x, states, done = self.noise(n, generator), [], 0
        for mark in marks:
            x = self.run_langevin(x, mark - done, generator)
            done = mark
            states.append(x)
        return {f"Langevin steps {', '.join(map(str, marks))}": torch.stack(states, 1)}
