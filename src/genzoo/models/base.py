"""The one protocol every genzoo model answers.

A model is an ``nn.Module`` built from a typed config dataclass and the ``DataInfo`` of the data
it will see. It answers a few questions, always with per-example values in nats:

- ``loss(x, y, phase, step)`` -> ``{"loss": (B,), other named terms: (B,)}``; the trainer minimises
                             the mean of ``"loss"`` and logs the others.
- ``phases()``            -> the players and their parameters. One phase ("model") for ordinary
                             models; a GAN or an adversarial autoencoder returns one per player,
                             each with its own optimizer and number of updates per iteration.
- ``sample(n, labels, generator)`` -> images (n, C, H, W) in the model's input representation.
- ``log_likelihood(x, y, num_samples)`` -> a ``LogLikelihood`` that says whether it is exact,
                             a lower bound, or unavailable.
- ``encode``/``decode``   -> optional, for latent-variable models (pictures, interpolation).
- ``fit_after_training``  -> optional closed-form step after gradient training (the AE's
                             latent Gaussian mixture).
- ``training_warnings(row)`` -> messages about symptoms visible in a row of averaged log terms
                             (a discriminator that wins outright, collapsed samples); the trainer
                             reports one when it persists.
- ``training_defaults``   -> ``TrainConfig`` values this model trains best with (a GAN's Adam
                             betas and learning rate) where the user gives none.

Inputs ``x`` are float tensors (B, C, H, W) in [0, 1] in the representation named by
``input_kind`` (see ``genzoo.data.prepare``); labels ``y`` are int64 (B,) or None.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from genzoo.data.core import DataInfo, InputKind, check_finite

LikelihoodKind = Literal["exact", "lower_bound", "unavailable"]


@dataclass(frozen=True)
class LogLikelihood:
    """log p(x) per example, in nats, and what kind of number it is.

    ``kind="lower_bound"`` covers the ELBO and the importance-weighted bound (whose expectation is
    a lower bound on log p(x) and which converges to it as the number of samples grows).
    """

    value: Tensor | None  # (B,) nats, None when unavailable
    kind: LikelihoodKind
    reason: str = ""  # why it is unavailable, or how it was computed


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
    training_defaults: ClassVar[dict] = {}  # TrainConfig field -> value, used when the user sets none

    def __init__(self, config: ModelConfig, info: DataInfo):
        super().__init__()
        config.validate(info)
        self.config = config
        self.info = info

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

    def training_warnings(self, row: dict[str, float]) -> list[str]:
        """Symptoms in one row of averaged log terms (keys "phase/term", e.g. "discriminator/d_real")."""
        return []

    # --- helpers shared by all models --------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        """Inputs must be (B, *shape) of this model's data (images (B, C, H, W), vectors (B, D)), finite."""
        if tuple(x.shape[1:]) != self.info.shape or x.dim() != 1 + len(self.info.shape):
            what = "images" if self.info.kind == "image" else "vectors"
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
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
