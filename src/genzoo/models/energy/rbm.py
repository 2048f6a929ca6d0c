"""Bernoulli restricted Boltzmann machine, trained by contrastive divergence.

Visible units v in {0, 1}^D, hidden units h in {0, 1}^H, energy E(v, h) = -b.v - c.h - h.W v, and

    p(v) = exp(-F(v)) / Z,    F(v) = -b.v - sum_j softplus(c_j + W_j.v)     (the free energy).

The log-likelihood gradient is -dF(v)/dtheta + E_p[dF/dtheta]: the data's term and the model's.
Contrastive divergence (Hinton 2002) takes the model's expectation at k block-Gibbs steps from the
data (``training=cd``, the default); persistent CD (Tieleman 2008, ``training=pcd``) keeps ``chains`` Markov chains
running across updates, in a buffer saved in the training state (not with the weights), so a resumed
run continues the same chains. ``loss`` is F(v_data) - mean F(v_chains), whose gradient is that estimate.

The likelihood (``genzoo.models.energy.partition``): ``exact`` enumerates the 2^H hidden states (H <= 25),
``ais`` estimates log Z by annealed importance sampling (Salakhutdinov & Murray 2008; optimistic in
expectation), ``raise`` runs it in reverse from each example (Burda et al. 2015; conservative).
Samples start from Bernoulli(1/2) noise, never from the persistent chains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.data.core import DataInfo
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
from genzoo.models.energy.partition import (
    MAX_ENUMERATED,
    ais_log_partition,
    base_rate_bias,
    default_betas,
    exact_log_partition,
    free_energy,
    raise_log_likelihood,
)

TRAINING = ("cd", "pcd")
SAMPLING_STEPS = 1000  # block-Gibbs steps of a sample from noise


@dataclass
class RBMConfig(ModelConfig):
    hidden_dim: int = 500  # H
    training: str = "cd"  # "cd" (chains restarted at the data) | "pcd" (persistent chains)
    gibbs_steps: int = 1  # k of CD-k / PCD-k
    chains: int = 100  # persistent chains (pcd)
    ais_runs: int = 100  # AIS runs of log Z (Salakhutdinov & Murray: 100)
    ais_temperatures: int = 14_500  # their schedule: 500 below 0.5, 4,000 to 0.9, 10,000 to 1

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "hidden_dim", "gibbs_steps", "chains", "ais_runs", "ais_temperatures")
        check_choice(self, "training", TRAINING)


class RBM(GenerativeModel):
    name = "rbm"
    description = "Bernoulli RBM (CD-k or persistent CD); exact, AIS and reverse-AIS likelihoods"
    Config = RBMConfig
    family = "energy"
    value_types = ("binary",)
    capabilities = frozenset({"chain", "complete", "fit_after_training", "initialize"})
    samplers = (SamplerSpec("gibbs", ("steps",), "block Gibbs from Bernoulli(1/2) noise"),)
    # RAISE, the conservative side, beside AIS on a fixed 1,000 examples: one chain of 14,500 temperatures each
    eval_defaults = EvalDefaults(steps=SAMPLING_STEPS, samples=1000, companions={"ais": ("raise", 1000)})
    # One epoch of H = 20 on binarized MNIST, test NLL: CD-1 at Adam 1e-2 169.0 nats, PCD-1 at 3e-3 175.0, at 1e-2 194.6
    training_defaults: ClassVar[dict] = {"lr": 1e-2, "batch_size": 100}

    def __init__(self, config: RBMConfig, info: DataInfo):
        super().__init__(config, info)
        h, d = config.hidden_dim, info.dim
        self.weight = nn.Parameter(torch.randn(h, d) * 0.01)  # Hinton's practical guide: N(0, 0.01^2)
        self.visible_bias = nn.Parameter(torch.zeros(d))
        self.hidden_bias = nn.Parameter(torch.zeros(h))
        # (chains, D): training state, saved with the optimizer, not with the weights
        self.register_buffer("chains", torch.bernoulli(torch.full((config.chains, d), 0.5)), persistent=False)
        self.register_buffer("base_bias", torch.zeros(d))  # AIS's base-rate model: logit of the data's pixel means
        self._log_z_cache: tuple[tuple, tuple[float, float]] | None = None

    @property
    def input_kind(self) -> str:
        return "binary"

    @property
    def estimators(self) -> tuple[str, ...]:
        """exact first where 2^H states can be enumerated; AIS first otherwise (exact then refuses, naming it)."""
        if min(self.config.hidden_dim, self.info.dim) <= MAX_ENUMERATED:
            return ("exact", "ais", "raise")
        return ("ais", "raise", "exact")

    def params64(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.weight.double(), self.visible_bias.double(), self.hidden_bias.double()

    def free_energy(self, x: Tensor) -> Tensor:
        """F(v) (B,) of inputs (B, *shape)."""
        return free_energy(x.reshape(len(x), -1), self.weight, self.visible_bias, self.hidden_bias)

    def gibbs(self, v: Tensor, steps: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``steps`` block-Gibbs steps v -> h -> v: (the last v (N, D) in {0, 1}, its mean p(v | h) (N, D))."""
        mean = v
        for _ in range(steps):
            h = torch.bernoulli(torch.sigmoid(F.linear(v, self.weight, self.hidden_bias)), generator=generator)
            mean = torch.sigmoid(h @ self.weight + self.visible_bias)
            v = torch.bernoulli(mean, generator=generator)
        return v, mean

    # --- training -----------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        v = x.reshape(len(x), -1)
        with torch.no_grad():
            start = self.chains if self.config.training == "pcd" else v
            negative, _ = self.gibbs(start, self.config.gibbs_steps)
            if self.config.training == "pcd":
                self.chains.copy_(negative)
        data_f = self.free_energy(x)  # (B,)
        model_f = free_energy(negative, self.weight, self.visible_bias, self.hidden_bias)  # (chains,)
        return {"loss": data_f - model_f.mean(), "free_energy_data": data_f.detach(),
                "free_energy_model": model_f.detach().mean().expand(len(x))}

    def training_state(self) -> dict[str, Tensor]:
        return {"chains": self.chains} if self.config.training == "pcd" else {}

    def load_training_state(self, tensors: dict[str, Tensor]) -> None:
        if self.config.training == "pcd":
            self.chains.copy_(tensors["chains"])

    @torch.no_grad()
    def initialize(self, x: Tensor, y: Tensor | None = None) -> None:
        """Visible biases log(p_i / (1 - p_i)) of the first batch's pixel means (Hinton's practical guide, s. 8):
        the pixels' marginals from the start, where zero biases spend the first epochs learning them."""
        self.visible_bias.copy_(base_rate_bias(x.reshape(len(x), -1).double().mean(0)).to(self.visible_bias))

    @torch.no_grad()
    def fit_after_training(self, batches) -> None:
        """AIS's base-rate model from the whole training set."""
        self.fit_base_rate(torch.cat([x for x, _ in batches]))

    def fit_base_rate(self, x: Tensor) -> None:
        """AIS's base distribution from the training data's pixel means x (N, D) (Salakhutdinov & Murray)."""
        self.base_bias.copy_(base_rate_bias(x.reshape(len(x), -1).double().mean(0)).to(self.base_bias))

    # --- the likelihood -----------------------------------------------------------------------
    def log_partition(self, estimator: str, generator: torch.Generator | None = None) -> tuple[float, float]:
        """(log Z, its standard error), cached for these weights (the optimizer bumps their versions)."""
        key = (estimator, *(p._version for p in (self.weight, self.visible_bias, self.hidden_bias)),
               self.base_bias._version)
        if self._log_z_cache is None or self._log_z_cache[0] != key:
            w, b, c = self.params64()
            if estimator == "exact":
                value = (exact_log_partition(w, b, c), 0.0)
            else:
                betas = default_betas(self.config.ais_temperatures).to(w.device)
                result = ais_log_partition(w, b, c, self.base_bias.double(), betas, self.config.ais_runs, generator)
                value = (result.log_z, result.log_z_std_err)
            self._log_z_cache = (key, value)
        return self._log_z_cache[1]

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None, estimator: str | None = None) -> LogLikelihood:
        self.check_input(x)
        estimator = self.estimator(estimator)
        w, b, c = self.params64()
        v = x.reshape(len(x), -1).double()
        if estimator == "raise":
            betas = default_betas(self.config.ais_temperatures).to(w.device)
            value = raise_log_likelihood(v, w, b, c, self.base_bias.double(), betas, generator)
            return LogLikelihood(value, "estimate", f"reverse AIS (RAISE, Burda et al. 2015), {len(betas):,} "
                                 "temperatures, one chain per example: conservative in expectation", None)
        log_z, std_err = self.log_partition(estimator, generator)
        value = -free_energy(v, w, b, c) - log_z
        if estimator == "exact":
            return LogLikelihood(value, "exact", f"log Z by enumerating 2^{min(self.config.hidden_dim, self.info.dim)} "
                                 "states", torch.zeros_like(value))
        return LogLikelihood(value, "estimate", f"AIS log Z = {log_z:.3f} ± {std_err:.3f} ({self.config.ais_runs} runs, "
                             f"{self.config.ais_temperatures:,} temperatures, base-rate start): optimistic in "
                             "expectation", None)

    # --- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               steps: int | None = None) -> Tensor:
        """p(v | h) after ``steps`` Gibbs steps from Bernoulli(1/2) noise: (n, *shape) in [0, 1]."""
        steps = SAMPLING_STEPS if steps is None else steps
        if steps < 1:
            raise ValueError(f"rbm: --steps {steps}: a Gibbs chain needs at least 1 step")
        noise = draw(torch.rand, (n, self.info.dim), generator, self.device) < 0.5
        _, mean = self.gibbs(noise.to(self.dtype), steps, generator)
        return mean.reshape(n, *self.info.shape)

    @torch.no_grad()
    def complete(self, x: Tensor, observed: Tensor, labels: Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None,
                 steps: int = SAMPLING_STEPS) -> Tensor:
        """Clamped Gibbs: the hidden pixels (outside ``observed``, (H, W) or (B, C, H, W), True = kept) of x
        (B, C, H, W) start as Bernoulli(1/2) noise and follow ``steps`` block-Gibbs steps with the observed
        pixels put back after each, a chain whose stationary law is p(x_hidden | x_observed); the output is
        p(v | h) on the hidden pixels and the image's own observed pixels, exactly."""
        if sampler not in (None, "gibbs"):
            raise ValueError(f"rbm completes images by clamped Gibbs sampling ('gibbs'), not {sampler!r}")
        self.check_input(x)
        keep = observed.to(x.device).expand_as(x).reshape(len(x), -1)
        known = x.reshape(len(x), -1).to(self.dtype)
        noise = (draw(torch.rand, tuple(known.shape), generator, self.device) < 0.5).to(self.dtype)
        v = torch.where(keep, known, noise)
        mean = v
        for _ in range(steps):
            v, mean = self.gibbs(v, 1, generator)
            v = torch.where(keep, known, v)
        return torch.where(keep, known, mean).reshape(x.shape)

    @torch.no_grad()
    def sampling_chain(self, n: int, snapshots: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """p(v | h) at ``snapshots`` step counts spaced evenly in log scale from 1 to the default steps."""
        marks = sorted({round(math.exp(k * math.log(SAMPLING_STEPS) / max(1, snapshots - 1)))
                        for k in range(snapshots)})
        v = (draw(torch.rand, (n, self.info.dim), generator, self.device) < 0.5).to(self.dtype)
        states, done = [], 0
        for mark in marks:
            v, mean = self.gibbs(v, mark - done, generator)
            done = mark
            states.append(mean.reshape(n, *self.info.shape))
        return {f"p(v | h), Gibbs steps {', '.join(map(str, marks))}": torch.stack(states, 1)}
