"""Training options: one typed dataclass, saved with every run."""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.registry import DATASETS
from genzoo.models.registry import model_class
from genzoo.train.schedules import LR_SCHEDULES

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    data: str = "digits"  # dataset name (genzoo list)
    data_root: str | None = None  # directory with the dataset files (default: a cache, downloading)
    epochs: int | None = None  # None: the dataset's default
    max_steps: int | None = None  # stop after this many optimizer steps instead
    max_minutes: float | None = None  # a wall-clock cap: stop, with a checkpoint, after this much training time
    batch_size: int = 128  # per process
    lr: float = 1e-3  # AdamW learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    lr_schedule: str = "constant"  # "constant" | "cosine" | "linear" decay to 0, after warm-up
    warmup_steps: int = 0  # linear learning-rate warm-up
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off
    ema_warmup: bool = True  # EMA decay min(ema_decay, (1 + n) / (10 + n)) at update n: a short run forgets its first networks
    seed: int = 0  # initial weights, data order and noise
    init_from: str | None = None  # a run directory whose weights start this run (e.g. an IWAE from a trained VAE)
    precision: str = "fp32"  # "fp32" | "bf16" (autocast; evaluation always runs in fp32)
    log_every: int = 50  # steps between log rows
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at the end of every epoch
    holdout: int = 0  # training examples held out, never trained on, to score each checkpoint; the best is kept; 0 = off
    holdout_iw_samples: int = 1  # importance samples of the held-out score (1: the ELBO of a latent model)
    patience: int = 0  # stop after this many held-out scores without a new best; 0 = train to the end

    def validate(self) -> None:
        if self.data not in DATASETS:
            raise ValueError(f"unknown dataset {self.data!r}; choose one of: {', '.join(sorted(DATASETS))}")
        for name in ("batch_size", "lr", "log_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be > 0")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be >= 1 (a budget below one step trains nothing)")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"TrainConfig.max_minutes={self.max_minutes!r} must be > 0")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "checkpoint_every", "holdout", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"TrainConfig.ema_decay={self.ema_decay!r} must be in [0, 1)")
        if self.holdout_iw_samples < 1:
            raise ValueError(f"TrainConfig.holdout_iw_samples={self.holdout_iw_samples!r} must be >= 1")
        if self.patience and not self.holdout:
            raise ValueError("TrainConfig.patience needs a held-out set to score: set holdout too (e.g. 10000)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule={self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")


def train_config(model_name: str, **options) -> TrainConfig:
    """``TrainConfig`` from the given options, the model's ``training_defaults`` filling the rest
    (a GAN's Adam betas (0.5, 0.999), say; a value given per data kind, {"image": ..., "vector": ...},
    is taken for the kind of the chosen data), then the generic defaults."""
    spec = DATASETS.get(options.get("data", TrainConfig.data))
    kind = spec.info.kind if spec is not None else "image"  # an unknown dataset fails in validation, by name
    defaults = {name: value[kind] if isinstance(value, dict) else value
                for name, value in model_class(model_name).training_defaults.items()}
    return TrainConfig(**{**defaults, **options})

