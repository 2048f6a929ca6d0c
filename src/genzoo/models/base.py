"""The one protocol every genzoo model answers.

A model is an ``nn.Module`` built from a typed config dataclass and the ``DataInfo`` of the data
it will see. It answers a few questions, always with per-example values in nats:

- ``loss(x, y, phase, step)`` -> ``{"loss": (B,), other named terms: (B,)}``; the trainer minimises
                             the mean of ``"loss"`` and logs the others.
- ``phases()``            -> the players and their parameters. One phase ("model") for ordinary
                             models; a GAN or an adversarial autoencoder returns one per player,
                             each with its own optimizer and number of updates per iteration.
- ``sample(n, labels, generator, **options)`` -> inputs (n, *shape) in the model's input
                             representation; called through ``generate``, which checks the options.
- ``log_likelihood(x, y, num_samples, generator)`` -> a ``LogLikelihood`` that says what kind of
                             number it is (``LIKELIHOOD_KINDS``).
- ``divergence(terms)``    -> why one step's terms (B,) show that training has diverged ('' when they
                             do not): the trainer stops there and keeps the last good checkpoint.
- ``training_state()`` / ``load_training_state(tensors)`` -> tensors training needs beyond the
                             weights (an EBM's replay buffer), saved in the resumable training state
                             and not with the weights.
- ``training_warnings(row)`` -> messages about symptoms visible in a row of averaged log terms
                             (a discriminator that wins outright, collapsed samples); the trainer
                             reports one when it persists.
- ``training_defaults``   -> ``TrainConfig`` values this model trains best with (a GAN's Adam
                             betas and learning rate) where the user gives none; a value may
                             depend on the data's kind: {"image": ..., "vector": ...}.

What a model can do beyond that is declared once, as class attributes, and read by the CLI,
the figures, evaluation and the trainer (never guessed with ``hasattr``):

- ``family``               the folder it lives in: "latent", "adversarial", "autoregressive", ...
- ``capabilities``         a subset of ``CAPABILITIES``: "encode" (``encode``/``decode``: latent
                           codes, reconstructions, traversals), "decode" (a generator of codes
                           without an encoder), "corrupt" (denoising), "complete" (inpainting),
                           "fit_after_training" (a closed-form step after gradient training),
                           "extra_likelihood_terms" (``likelihood_terms``: the ELBO beside the IWAE bound),
                           "invert" (``encode``/``decode`` as an exact bijection x <-> z of the data's size:
                           interpolation in z, no traversals), "initialize" (``initialize(batch)``: a
                           data-dependent initialisation the trainer runs once, before the first step),
                           "guide" (its samplers take ``guidance``: a class-conditional model that also
                           learned the unconditional one), "chain" (``sampling_chain``: the states of
                           an iterative sampler from noise to samples, for a figure), "input_gradients"
                           (its sampling and completion differentiate the model with respect to its input,
                           Langevin dynamics: they turn gradients on themselves, so callers may hold
                           ``torch.no_grad()``, never ``torch.inference_mode()``);
- ``samplers``             the ways it generates (``SamplerSpec``: a name and the options of
                           ``SAMPLING_OPTIONS`` it takes), the first being the default;
- ``estimators``           the names of its likelihood estimators, the first being the default;
- ``eval_defaults``        the sampler and steps of sample metrics and the draws per example of
                           estimated likelihoods, chosen so that the default ``eval`` finishes in
                           minutes on a laptop CPU;
- ``value_types``          the data it models ("binary", "discrete" levels, "continuous"), all by default;
- ``training_mode``        "gradient" (the default: the trainer's optimizer minimises ``loss``) or
                           "closed_form" (``ClosedFormModel``: fitted by its own update rule, EM).

Inputs ``x`` are float tensors (B, C, H, W) in [0, 1] (images) or (B, D) (vectors) in the
representation named by ``input_kind`` (see ``genzoo.data.prepare``); labels ``y`` are int64
(B,) or None.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from genzoo.data.core import DataInfo, InputKind, check_finite

# What a reported log-likelihood is:
# - "exact":       log p(x) itself (autoregressive models, flows, enumerated RBMs);
# - "lower_bound": a bound on log p(x), so the reported NLL is an upper bound: the ELBO, the IWAE
#                  bound, a dequantisation bound, also when the bound is estimated by Monte Carlo;
# - "estimate":    a stochastic estimate that is no bound (AIS, optimistic in expectation; AVB's
#                  discriminator estimate of the KL term);
# - "numerical":   normalised on a grid;
# - "unavailable": the model defines none (GANs, the plain autoencoder).
LIKELIHOOD_KINDS = ("exact", "lower_bound", "estimate", "numerical", "unavailable")
LikelihoodKind = Literal["exact", "lower_bound", "estimate", "numerical", "unavailable"]
SAMPLING_OPTIONS = ("steps", "temperature", "guidance", "eta")  # options a sampler may take (genzoo sample --steps ...)
TRAINING_MODES = ("gradient", "closed_form")
CAPABILITIES = ("encode", "decode", "corrupt", "complete", "fit_after_training", "extra_likelihood_terms", "invert",
                "initialize", "guide", "chain", "input_gradients")


@dataclass(frozen=True)
class LogLikelihood:
    """log p(x) per example, in nats, and what kind of number it is (``LIKELIHOOD_KINDS``).

    ``variance`` is the variance of each example's value due to the estimator's own randomness
    (None when it cannot be had from one call, e.g. from a single draw; zero when exact).
    """

    value: Tensor | None  # (B,) nats, None when unavailable
    kind: LikelihoodKind
    reason: str = ""  # why it is unavailable, or how it was computed
    variance: Tensor | None = None  # (B,) nats^2


@dataclass(frozen=True)
class SamplerSpec:
    """One way a model generates: its name, the ``SAMPLING_OPTIONS`` it takes, one line on what it does."""

    name: str
    options: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class EvalDefaults:
    """What ``genzoo eval`` does for this model when not told otherwise."""

    draws: int = 1  # draws per example of an estimated likelihood (importance samples)
    sampler: str | None = None  # sampler of the sample metrics (None: the model's first)
    steps: int | None = None  # its steps, where it takes them
    samples: int | None = None  # samples of the sample metrics (None: as many as the split has examples)
    # estimator -> (an estimator reported beside it as nll_{name}_nats, at most this many examples): RAISE's
    # conservative side beside AIS's optimistic one
    companions: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)


@dataclass
class Phase:
    """One player of the training game: its parameters, its optimizer settings, its update count."""

    name: str
    parameters: list[nn.Parameter]
    updates_per_step: int = 1  # e.g. k discriminator updates per generator update
    lr: float | None = None  # None: the trainer's learning rate
    betas: tuple[float, float] | None = None  # None: the trainer's Adam betas


@dataclass
class ModelConfig:
    """Base of every model config. Subclasses add typed fields with defaults and ``validate``."""

    def validate(self, info: DataInfo) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid for this data."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_choice(config: ModelConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"{type(config).__name__}.{name}={value!r} is not one of {', '.join(choices)}")


def check_labelled(info: DataInfo, model_name: str) -> None:
    """A conditional model needs a dataset with class labels."""
    if info.num_classes == 0:
        raise ValueError(f"{model_name} needs class labels, and dataset {info.name!r} has none; "
                         "use a labelled dataset such as digits or mnist")


def check_images(info: DataInfo, model_name: str, instead: str) -> None:
    """A model of images (C, H, W) refuses vector data, in one line that names the models to use."""
    if info.kind != "image":
        raise ValueError(f"{model_name} models images (C, H, W); {info.name} holds {info.dim}-D vectors: "
                         f"use {instead}")


def check_unet_levels(config: ModelConfig, info: DataInfo) -> None:
    """A U-Net's ``channel_mult`` (one width multiplier per level) is positive and, on images, halves them no
    further than one pixel."""
    name, mult = type(config).__name__, config.channel_mult
    if not mult or min(mult) < 1:
        raise ValueError(f"{name}.channel_mult={mult!r} needs one positive multiplier per level")
    if info.kind == "image" and len(mult) > 1 and info.shape[1] // 2 ** (len(mult) - 1) < 1:
        raise ValueError(f"{name}.channel_mult={mult!r}: {len(mult)} levels halve {info.shape[1]}x{info.shape[2]} "
                         "images below one pixel; use fewer levels")


def check_positive(config: ModelConfig, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(config, name)
        if not (value >= 0 if allow_zero else value > 0):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{type(config).__name__}.{name}={value!r} must be {bound}")


class GenerativeModel(nn.Module):
    """Base class: holds config and data info, routes ``forward`` to ``loss``.

    ``forward`` exists only so that wrappers such as DistributedDataParallel see the loss
    computation and synchronise gradients; call ``loss`` directly everywhere else.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    family: ClassVar[str]
    training_defaults: ClassVar[dict] = {}  # TrainConfig field -> value, used when the user sets none
    capabilities: ClassVar[frozenset[str]] = frozenset()  # of CAPABILITIES
    samplers: ClassVar[tuple[SamplerSpec, ...]] = (SamplerSpec("ancestral", (), "one pass of the generative model"),)
    estimators: ClassVar[tuple[str, ...]] = ()  # likelihood estimators; () when the model has no likelihood
    eval_defaults: ClassVar[EvalDefaults] = EvalDefaults()
    training_mode: ClassVar[str] = "gradient"  # of TRAINING_MODES
    value_types: ClassVar[tuple[str, ...]] = ("binary", "discrete", "continuous")  # the data it models

    def __init__(self, config: ModelConfig, info: DataInfo):
        super().__init__()
        self.check_data(info)
        config.validate(info)
        self.config = config
        self.info = info

    @classmethod
    def check_data(cls, info: DataInfo) -> None:
        """Refuse, in one line, data of a kind the model does not model (``value_types``)."""
        if info.value_type not in cls.value_types:
            kind = "real-valued" if info.value_type == "continuous" else f"{info.num_levels}-level"
            raise ValueError(f"{cls.name} models {' or '.join(cls.value_types)} data, and {info.name} is {kind}: "
                             f"choose such a dataset (genzoo list), e.g. "
                             f"{'binarized_mnist' if cls.value_types == ('binary',) else 'mnist'}")

    # --- what the model consumes -------------------------------------------------------------
    @property
    def input_kind(self) -> InputKind:
        """The data representation this model's likelihood is defined on."""
        raise NotImplementedError

    @property
    def conditional(self) -> bool:
        """True when ``loss``, ``sample`` and ``log_likelihood`` need labels."""
        return False

    # --- the protocol ------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        """Named per-example terms (B,) in nats; ``step`` drives schedules (None: their final value)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
                step: int | None = None) -> dict[str, Tensor]:
        return self.loss(x, y, phase, step)

    def phases(self) -> list[Phase]:
        return [Phase("model", [p for p in self.parameters() if p.requires_grad])]

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """log p(x [| y]) per example; ``num_samples`` and ``generator`` drive estimators that sample."""
        return LogLikelihood(None, "unavailable", f"{self.name} defines no likelihood")

    def likelihood_terms(self, x: Tensor, y: Tensor | None = None,
                         generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Extra per-example log-terms (B,) in nats reported beside the likelihood, e.g. {"elbo": ...}
        (capability "extra_likelihood_terms"); ``eval`` reports each as ``neg_{name}_nats``."""
        return {}

    def fit_after_training(self, batches) -> None:
        """A closed-form step on the training data after gradient training (capability "fit_after_training")."""

    def conditional_log_likelihood(self, x: Tensor, observed: Tensor, y: Tensor | None = None) -> dict | None:
        """{"log_likelihood": log p(x_hidden | x_observed) (B,), "exact": bool} for a model that can
        complete images (capability "complete"); None where it has no such number (diffusion)."""
        return None

    def gaussian_components(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor] | None:
        """The model as a mixture of Gaussians, for a figure: (weights (K,), means (K, D), covariances
        (K, D, D)) of a Gaussian mixture's K components, or n draws p(x | z_i), z_i ~ p(z), of a latent
        model with a Gaussian decoder (an infinite mixture, sampled); None for any other model."""
        return None

    def sampling_chain(self, n: int, snapshots: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """States of the default sampler at ``snapshots`` evenly spaced steps (capability "chain"):
        {name: (n, snapshots, *shape)}, e.g. {"x_t": ..., "predicted x_0": ...}; unconditional or
        with labels cycling 0..K-1."""
        raise NotImplementedError

    def initialize(self, x: Tensor, y: Tensor | None = None) -> None:
        """Data-dependent initialisation from one batch (capability "initialize"), e.g. Glow's ActNorm."""

    def locate_nonfinite(self, x: Tensor, y: Tensor | None = None) -> str:
        """Which part of the model first turns this batch non-finite ('' when it cannot tell)."""
        return ""

    def can(self, capability: str) -> bool:
        """Whether this model declares ``capability`` (one of ``CAPABILITIES``)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; one of: {', '.join(CAPABILITIES)}")
        return capability in self.capabilities

    # --- sampling and estimators, checked against what the model declares ----------------------
    def sampler_spec(self, sampler: str | None) -> SamplerSpec:
        """The declared sampler called ``sampler`` (None: the default); an unknown name lists the model's."""
        if sampler is None:
            return self.samplers[0]
        for spec in self.samplers:
            if spec.name == sampler:
                return spec
        raise ValueError(f"{self.name} has no sampler {sampler!r}; its samplers: "
                         f"{', '.join(s.name for s in self.samplers)}")

    def generate(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
                 sampler: str | None = None, **options) -> Tensor:
        """``n`` samples with a declared sampler and its options (None values mean "the default").

        An option the sampler lacks is refused by name. The sampler's name reaches ``sample`` only
        when the model declares more than one.
        """
        spec = self.sampler_spec(sampler)
        given = {k: v for k, v in options.items() if v is not None}
        unknown = [k for k in given if k not in SAMPLING_OPTIONS]
        if unknown:
            raise ValueError(f"unknown sampling option(s) {', '.join(unknown)}; one of: {', '.join(SAMPLING_OPTIONS)}")
        refused = [k for k in given if k not in spec.options]
        if refused:
            takes = f"takes {', '.join('--' + o for o in spec.options)}" if spec.options else "takes no options"
            raise ValueError(f"{self.name}'s {spec.name!r} sampler has no --{refused[0]} option (it {takes})")
        if len(self.samplers) > 1:
            given["sampler"] = spec.name
        return self.sample(n, labels, generator, **given)

    def estimator(self, name: str | None) -> str:
        """The declared likelihood estimator ``name`` (None: the default); an unknown name lists the model's."""
        if not self.estimators:
            raise ValueError(f"{self.name} defines no likelihood, so it has no estimators")
        if name is None:
            return self.estimators[0]
        if name not in self.estimators:
            raise ValueError(f"{self.name} has no estimator {name!r}; its estimators: {', '.join(self.estimators)}")
        return name

    def divergence(self, terms: dict[str, Tensor]) -> str:
        """Why this step's terms show divergence beyond a non-finite loss ('' when they do not)."""
        return ""

    def training_state(self) -> dict[str, Tensor]:
        """Tensors training needs beyond the weights, by name (saved in the training state only)."""
        return {}

    def load_training_state(self, tensors: dict[str, Tensor]) -> None:
        """Restore what ``training_state`` returned."""

    def training_warnings(self, row: dict[str, float]) -> list[str]:
        """Symptoms in one row of averaged log terms (keys "phase/term", e.g. "discriminator/d_real")."""
        return []

    # --- helpers shared by all models --------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        """Inputs must be (B, *shape) of this model's data (images (B, C, H, W), vectors (B, D)), finite."""
        what = "images" if self.info.kind == "image" else "vectors"
        if tuple(x.shape[1:]) != self.info.shape or x.dim() != 1 + len(self.info.shape):
            raise ValueError(f"{self.name} was built for {what} of shape (B, {', '.join(map(str, self.info.shape))}) "
                             f"({self.info.name}), got {tuple(x.shape)}")
        check_finite(x, f"{self.name}: the input {what}")

    def check_labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Validate labels for a conditional model; return None for unconditional ones."""
        if not self.conditional:
            return None
        if y is None:
            raise ValueError(
                f"{self.name} is conditional and needs class labels; "
                f"pass labels (0..{self.info.num_classes - 1}) or use a labelled dataset"
            )
        if y.shape != (n,):
            raise ValueError(f"{self.name}: labels must have shape ({n},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.info.num_classes):
            raise ValueError(f"{self.name}: labels must lie in 0..{self.info.num_classes - 1}")
        return y

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device  # a fitted mixture has only buffers

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


@dataclass
class ClosedFormConfig(ModelConfig):
    """The convergence criterion of a model fitted by its own update rule (scikit-learn's names)."""

    tol: float = 1e-3  # stop when the mean log-likelihood per example changes by less than this (nats)
    max_iter: int = 100  # at most this many iterations per start
    restarts: int = 1  # fresh starts (scikit-learn's n_init); the one with the best final objective is kept

    def validate(self, info: DataInfo) -> None:
        check_positive(self, "max_iter", "restarts")
        check_positive(self, "tol", allow_zero=True)


class ClosedFormModel(GenerativeModel):
    """A model fitted by its own update rule (EM), not by gradients: ``training_mode = "closed_form"``.

    The trainer (``genzoo.train.closed_form``) prepares the whole training set once (dequantised
    with the run's seed, so the objective is fixed and EM never decreases it), then, for each of
    ``config.restarts`` starts:

    - ``initialize_fit(x, generator)`` on all of it, the same on every process (same data, same generator);
    - per iteration, ``statistics(chunk)`` on this process's share, summed over its chunks and
      all-reduced over processes (so a 2-process fit equals a 1-process fit), then ``update(totals)``,
      the same on every process;
    - until ``objective(totals, n)`` (the mean over the n examples, measured before the update)
      changes by less than ``config.tol``, or ``config.max_iter`` iterations.

    Its parameters are buffers: no optimizer, no gradients, no ``loss``.
    """

    training_mode = "closed_form"
    config: ClosedFormConfig

    def phases(self) -> list[Phase]:
        return []

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        """{"loss": -log p(x)} (B,): what EM decreases (the trainer runs EM, not this)."""
        value = self.log_likelihood(x, y).value
        return {"loss": -value}

    def initialize_fit(self, x: Tensor, generator: torch.Generator) -> None:
        """A fresh start from all training inputs x (N, *shape) (k-means++ for the mixtures)."""
        raise NotImplementedError

    def statistics(self, x: Tensor) -> dict[str, Tensor]:
        """Sufficient statistics of one update, summed over the examples x (B, *shape) under the current
        parameters, in float64; "log_likelihood" holds sum_n log p(x_n)."""
        raise NotImplementedError

    def update(self, totals: dict[str, Tensor]) -> None:
        """The update (the M-step) from statistics summed over every example of every process."""
        raise NotImplementedError

    def objective(self, totals: dict[str, Tensor], n: int) -> float:
        """What the update never decreases, per example: the mean log-likelihood (a MAP fit adds its log prior / n)."""
        return totals["log_likelihood"].item() / n
