"""One training loop for every model, on top of Hugging Face accelerate.

The same code runs on a CPU, one GPU, or many processes (``accelerate launch``): accelerate
places the model and wraps it for distributed data parallelism; bf16 runs under ``torch.autocast``.
Each process takes its own shard of every epoch's permutation (``epoch_shard``); gradients are
averaged across processes, so the effective batch is ``batch_size x num_processes``.

Determinism: the data order depends only on (seed, epoch) and the model's noise only on
(seed, process, step) (the global RNG is re-seeded every step), so stopping and resuming gives
the same weights as an uninterrupted run.

Model selection (``holdout``): a fixed random part of the training split is held out, never
trained on, and scored at every checkpoint by the model's likelihood (the ELBO, an importance-
weighted bound, or the exact NLL); ``model.safetensors`` keeps the weights with the best score
and ``patience`` stops training once it has not improved for that many checkpoints. This is the
early stopping on a validation set that published likelihoods assume, without touching the
split that ``eval`` reports (the validation file stands in for an absent test file).

Multi-player models (GANs, adversarial autoencoders) return several ``Phase``s; each has its own
optimizer and schedule, and each iteration runs every phase's updates in order on one batch.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from genzoo import checkpoint
from genzoo.data.core import DataInfo, Split, prepare
from genzoo.data.registry import DATASETS, load_split
from genzoo.evaluate.likelihood import (
    batches,
    fixed_inputs,
    likelihood_metrics,
    progress_interval,
)
from genzoo.models.base import GenerativeModel, ModelConfig
from genzoo.models.registry import build_model, model_class
from genzoo.nn.mode import eval_mode

LR_SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("fp32", "bf16")
LOG_FILE = "log.csv"
SELECTION_FILE = "selection.csv"  # one row per held-out score
WARN_AFTER_ROWS = 3  # a model's symptom is reported once it shows in this many log rows in a row
WARNING_NUMBERS = re.compile(r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?")  # ignored when matching repeats


@dataclass
class TrainConfig:
    data: str = "digits"  # dataset name (genzoo list)
    data_root: str | None = None  # directory with the dataset files (default: a cache, downloading)
    epochs: int | None = None  # None: the dataset's default
    max_steps: int | None = None  # stop after this many optimizer steps instead
    batch_size: int = 128  # per process
    lr: float = 1e-3  # AdamW learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    lr_schedule: str = "constant"  # "constant" | "cosine" | "linear" decay to 0, after warm-up
    warmup_steps: int = 0  # linear learning-rate warm-up
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off
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
                raise ValueError(f"TrainConfig.{name}={value!r} must be >= 1")
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


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class OutputExists(FileExistsError):
    """The output directory holds another run."""


def epoch_shard(num_examples: int, batch_size: int, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """This process's example indices for ``epoch``: (steps_per_epoch * batch_size,).

    One permutation per (seed, epoch), shared by all processes; process ``rank`` takes every
    ``world``-th index, so the shards are disjoint, equally long, and together cover the epoch
    (up to the remainder dropped to keep whole batches).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    permutation = torch.randperm(num_examples, generator=generator)
    steps = num_examples // (batch_size * world)
    return permutation[rank::world][: steps * batch_size]


def lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then the schedule."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    if config.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if config.lr_schedule == "linear":
        return max(0.0, 1 - progress)
    return 1.0


def prepare_output_dir(out: Path, resume: bool) -> None:
    """Refuse to mix two runs in one directory; create it for a new run."""
    has_state = (out / checkpoint.TRAIN_STATE_FILE).exists()
    if resume:
        if not has_state:
            raise FileNotFoundError(f"cannot resume: {out / checkpoint.TRAIN_STATE_FILE} does not exist")
        return
    if out.exists() and any(out.iterdir()):
        raise OutputExists(f"output directory {out} already exists and is not empty; pass --resume to "
                           "continue its training, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


class Trainer:
    """Trains one model into one run directory. ``fit()`` runs to the end and returns a summary."""

    def __init__(self, model_name: str, model_config: ModelConfig | dict | None, config: TrainConfig,
                 out_dir: str | Path, resume: bool = False,
                 callbacks: Sequence[Callable[[Trainer], None]] = ()):
        self.out = Path(out_dir)
        self.callbacks = list(callbacks)  # called with the trainer after each checkpoint, main process only
        self.warnings: list[str] = []
        self.warning_streaks: dict[str, int] = {}
        if resume:  # the run's own configs; only the length of training may change
            saved = checkpoint.read_run_config(self.out)
            model_name, model_config = saved["model"], saved["model_config"]
            config = dataclasses.replace(TrainConfig(**{**saved["train"], "betas": tuple(saved["train"]["betas"])}),
                                         epochs=config.epochs or saved["train"]["epochs"],
                                         max_steps=config.max_steps or saved["train"]["max_steps"])
        config.validate()
        self.config = config
        # Launched as several processes on a machine without GPUs: run them on the CPU with gloo.
        # (accelerate's own `--cpu` launcher starts several processes only through MPI; without it,
        # `accelerate launch --multi_gpu --num_processes N` or torchrun start them, and land here.)
        cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        ddp_options = DistributedDataParallelKwargs()  # completed below, once the model's players are known
        self.accelerator = Accelerator(cpu=cpu_processes, kwargs_handlers=[ddp_options])
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process

        self.info, self.train_split = load_split(config.data, "train", config.data_root)
        self.holdout_split = None
        if config.holdout:
            self.train_split, self.holdout_split = self.train_split.hold_out(config.holdout)
        set_seed(config.seed)  # the initial weights: the same on every process
        model = build_model(model_name, self.info, model_config)
        if config.init_from and not resume:  # a resumed run's own state replaces these weights below
            path = Path(config.init_from) / checkpoint.MODEL_FILE
            checkpoint.load_state_dict_checked(model, checkpoint.read_tensors(path)[0], path,
                                               f"model {model_name!r} as configured here")
        self.model_name = model_name
        if model.conditional and self.train_split.labels is None:
            raise ValueError(f"{model_name} is conditional and dataset {config.data!r} has no labels")
        if self.holdout_split is not None:
            check_scorable(model, self.holdout_split, self.info)

        self.steps_per_epoch = len(self.train_split) // (config.batch_size * self.world)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {config.batch_size} x {self.world} process(es) exceeds the "
                             f"{len(self.train_split)} training examples")
        epochs = config.epochs or DATASETS[config.data].default_epochs
        self.total_steps = config.max_steps or epochs * self.steps_per_epoch

        if self.is_main:
            prepare_output_dir(self.out, resume)
        self.accelerator.wait_for_everyone()

        self.phases = model.phases()
        # each player's update leaves the other players' parameters without gradients
        ddp_options.find_unused_parameters = len(self.phases) > 1
        # the fused AdamW kernel: ~1.4x faster steps for the MLP VAE on this CPU (one pass over the weights)
        fused = self.accelerator.device.type in ("cpu", "cuda")
        self.optimizers = [
            torch.optim.AdamW(p.parameters, lr=p.lr or config.lr, betas=p.betas or config.betas,
                              weight_decay=config.weight_decay, fused=fused)
            for p in self.phases
        ]
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, self.total_steps, config))
            for opt in self.optimizers
        ]
        model = model.to(memory_format=torch.channels_last)  # 6x faster 3x3 convs on CPU; no-op for MLPs
        self.model, *self.optimizers = self.accelerator.prepare(model, *self.optimizers)
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(self.unwrapped, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                     use_buffers=True)
        self.images = self.train_split.images.to(self.accelerator.device)
        self.labels = None if self.train_split.labels is None else self.train_split.labels.to(self.accelerator.device)
        self.step = 0
        self.seconds_before = 0.0  # training time of earlier processes of this run (resumed runs)
        self.fit_started: float | None = None
        self.best = Selection()
        if resume:
            self.load_state()
        if self.is_main:  # on resume too: the length of training may have changed
            checkpoint.write_run_config(self.out, model_name, self.unwrapped.config, self.info,
                                        dataclasses.asdict(config))

    def autocast(self) -> torch.autocast:
        """bf16 autocast when asked for (no loss scaling is needed for bf16), else a no-op.

        Done here rather than through accelerate's process-wide mixed-precision setting, so that
        one Python process can train several models at different precisions.
        """
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16,
                              enabled=self.config.precision == "bf16")

    @property
    def unwrapped(self) -> GenerativeModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def final_model(self) -> GenerativeModel:
        """The weights to evaluate and save: the EMA average when EMA is on."""
        return self.ema.module if self.ema is not None else self.unwrapped

    # --- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        config, model = self.config, self.model
        model.train()
        log = RunningLog(self.out / LOG_FILE, enabled=self.is_main)
        progress = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main,
                        desc=f"{self.model_name} on {config.data}", dynamic_ncols=True,
                        mininterval=progress_interval())
        tick, examples, first_step = time.perf_counter(), 0, self.step
        self.fit_started = tick
        while self.step < self.total_steps:
            epoch, batch_index = divmod(self.step, self.steps_per_epoch)
            if batch_index == 0 or self.step == first_step:
                shard = epoch_shard(len(self.images), config.batch_size, epoch, config.seed, self.rank, self.world)
            idx = shard[batch_index * config.batch_size:(batch_index + 1) * config.batch_size].to(self.images.device)
            torch.manual_seed(config.seed * 1_000_003 + self.step * 1_009 + self.rank)  # noise: f(seed, step, rank)
            x, y = self.batch(idx)

            for phase, optimizer, scheduler in zip(self.phases, self.optimizers, self.schedulers):
                for update in range(phase.updates_per_step):
                    # k updates of one player (a WGAN critic's n_critic) each see a fresh real batch
                    xb, yb = (x, y) if update == 0 else self.random_batch(shard)
                    with self.autocast():
                        terms = model(xb, yb, phase=phase.name, step=self.step)
                    loss = terms["loss"].float().mean()
                    self.check_finite(loss, terms, phase.name)
                    optimizer.zero_grad(set_to_none=True)
                    self.accelerator.backward(loss)
                    if config.grad_clip:
                        self.accelerator.clip_grad_norm_(phase.parameters, config.grad_clip)
                    optimizer.step()
                    log.add(phase.name, terms)
                scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.unwrapped)
            self.step += 1
            examples += len(idx) * self.world
            progress.update(1)

            if self.step % config.log_every == 0 or self.step == self.total_steps:
                elapsed = time.perf_counter() - tick
                row = log.flush(self.step, epoch, lr=self.schedulers[0].get_last_lr()[0],
                                examples_per_s=examples / elapsed)
                progress.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "epoch", "lr")})
                self.report_warnings(row)
                tick, examples = time.perf_counter(), 0
            end_of_epoch = self.step % self.steps_per_epoch == 0
            due = self.step % config.checkpoint_every == 0 if config.checkpoint_every else end_of_epoch
            if due or self.step == self.total_steps:
                out_of_patience = self.select() if self.holdout_split is not None else False
                self.save_state()
                if self.is_main:
                    for callback in self.callbacks:
                        callback(self)
                if out_of_patience:
                    if self.is_main:
                        tqdm.write(f"genzoo: stopping at step {self.step}: no better held-out score for "
                                   f"{config.patience} checkpoints (best {self.best.nats:.2f} nats at step "
                                   f"{self.best.step})", file=sys.stderr)
                    break
        progress.close()

        if self.best.weights is not None:  # from here on (pictures, evaluation) the selected weights
            self.final_model.load_state_dict(self.best.weights)
        if hasattr(self.unwrapped, "fit_after_training"):
            x, split, _ = fixed_inputs(self.train_split, self.info, self.unwrapped.input_kind)
            self.final_model.fit_after_training(batches(x.to(self.accelerator.device), split.labels, 1000))
            self.save_model()
        summary = {"steps": self.step, "epochs": self.step / self.steps_per_epoch, "last": log.last_row,
                   "seconds": self.train_seconds(), "warnings": self.warnings}
        if self.holdout_split is not None:
            summary["selection"] = {"holdout": len(self.holdout_split), "holdout_source": self.holdout_split.source,
                                    "iw_samples": config.holdout_iw_samples, "best_nats": self.best.nats,
                                    "best_step": self.best.step, "best_epoch": self.best.step / self.steps_per_epoch,
                                    "stopped_early": self.step < self.total_steps}
        return summary

    def select(self) -> bool:
        """Score the held-out examples; keep the weights when they are the best so far.

        Every process scores the whole held-out set (same weights, same seeded noise: the same
        number), so all of them agree on stopping without communicating. The noise generator is
        re-seeded for every score, so successive checkpoints are compared on the same draws.
        Returns whether ``patience`` has run out.
        """
        model = self.final_model
        metrics = likelihood_metrics(model, self.holdout_split, self.info, self.config.holdout_iw_samples)
        nats = metrics["nll_nats"]
        if nats < self.best.nats:
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = Selection(nats, self.step, 0, weights)
        else:
            self.best.checks_since += 1
        if self.is_main:
            with open(self.out / SELECTION_FILE, "a", newline="") as f:
                if f.tell() == 0:
                    f.write("step,epoch,holdout_nats,best_nats,best_step\n")
                f.write(f"{self.step},{self.step / self.steps_per_epoch:g},{nats},{self.best.nats},{self.best.step}\n")
        return bool(self.config.patience) and self.best.checks_since >= self.config.patience

    def train_seconds(self) -> float:
        """Wall-clock training time of the whole run, across resumes."""
        started = self.fit_started
        return self.seconds_before + (0.0 if started is None else time.perf_counter() - started)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model inputs (B, C, H, W) and labels (B,) or None for training examples ``idx``."""
        x = prepare(self.images[idx], self.info, self.unwrapped.input_kind, train=True)
        return x.contiguous(memory_format=torch.channels_last), None if self.labels is None else self.labels[idx]

    def random_batch(self, shard: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch drawn uniformly from this process's shard (global RNG: seeded per step)."""
        pick = torch.randint(len(shard), (self.config.batch_size,))
        return self.batch(shard[pick].to(self.images.device))

    def report_warnings(self, row: dict[str, float]) -> None:
        """Say so when a model's symptom (``training_warnings``) persists for ``WARN_AFTER_ROWS`` log rows."""
        current = {WARNING_NUMBERS.sub("#", m): m for m in self.unwrapped.training_warnings(row)}
        self.warning_streaks = {key: self.warning_streaks.get(key, 0) + 1 for key in current}
        for key, message in current.items():
            if self.warning_streaks[key] == WARN_AFTER_ROWS:
                text = f"step {self.step}: {message} (for {WARN_AFTER_ROWS} log rows in a row)"
                self.warnings.append(text)
                if self.is_main:
                    tqdm.write(f"genzoo: warning: {text}", file=sys.stderr)

    def check_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], phase: str) -> None:
        if torch.isfinite(loss):
            return
        # name the component that broke, not the total it feeds
        bad = next((name for name, value in terms.items() if name != "loss" and not torch.isfinite(value).all()), "loss")
        saved = (f"the last good checkpoint in {self.out} is kept"
                 if (self.out / checkpoint.TRAIN_STATE_FILE).exists() else "no checkpoint had been written yet")
        raise TrainingDiverged(
            f"training stopped at step {self.step}: loss term {bad!r} (phase {phase!r}) is "
            f"{terms[bad].float().mean().item()}; {saved}. Try a lower --lr, --grad-clip 1.0, or fp32 precision.")

    # --- checkpoints ---------------------------------------------------------------------------
    def save_state(self) -> None:
        """Write the weights to use and the resumable training state (main process only)."""
        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.unwrapped.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        skeleton = checkpoint.flatten_state(
            {"optimizers": [o.state_dict() for o in self.optimizers],
             "schedulers": [s.state_dict() for s in self.schedulers]}, "state", tensors)
        if self.best.weights is not None:
            tensors.update({f"best.{k}": v for k, v in self.best.weights.items()})
        meta = {"step": self.step, "model": self.model_name, "world_size": self.world, "state": skeleton,
                "train_seconds": self.train_seconds()}
        if self.best.weights is not None:
            meta["selection"] = {"nats": self.best.nats, "step": self.best.step, "checks_since": self.best.checks_since}
        checkpoint.write_tensors(self.out / checkpoint.TRAIN_STATE_FILE, tensors, meta)
        self.save_model()

    def save_model(self) -> None:
        """Write the weights to use: the best held-out ones when selecting, else the final ones."""
        if self.is_main:
            weights = self.best.weights if self.best.weights is not None else self.final_model.state_dict()
            checkpoint.write_tensors(self.out / checkpoint.MODEL_FILE, weights)

    def load_state(self) -> None:
        path = self.out / checkpoint.TRAIN_STATE_FILE
        tensors, meta = checkpoint.read_tensors(path)
        if meta.get("model") != self.model_name:
            raise checkpoint.CheckpointError(f"{path} belongs to model {meta.get('model')!r}, not {self.model_name!r}")

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        checkpoint.load_state_dict_checked(self.unwrapped, part("model."), path, f"model {self.model_name!r}")
        if self.ema is not None:
            checkpoint.load_state_dict_checked(self.ema, part("ema."), path, "the EMA weights")
        state = checkpoint.unflatten_state(meta["state"], tensors)
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
            # The state comes back contiguous; the fused kernel assumes each moment tensor has its
            # parameter's layout (channels_last conv weights), so give it that layout back.
            for param, param_state in optimizer.state.items():
                for key, value in param_state.items():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        param_state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
        for scheduler, saved in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
        self.step = meta["step"]
        self.seconds_before = meta.get("train_seconds", 0.0)  # absent from states written before it was kept
        if self.holdout_split is not None and "selection" in meta:
            self.best = Selection(meta["selection"]["nats"], meta["selection"]["step"],
                                  meta["selection"]["checks_since"], part("best."))


@dataclass
class Selection:
    """The best held-out score so far, where it was reached, and the weights that reached it."""

    nats: float = math.inf
    step: int = 0
    checks_since: int = 0  # held-out scores since the best
    weights: dict[str, torch.Tensor] | None = None


def check_scorable(model: GenerativeModel, holdout: Split, info: DataInfo) -> None:
    """Refuse model selection for a model without a likelihood (GANs): there is nothing to score."""
    x, split, _ = fixed_inputs(holdout, info, model.input_kind, limit=1)
    labels = split.labels if model.conditional else None
    with torch.no_grad(), eval_mode(model):
        score = model.log_likelihood(x, labels)
    if score.value is None:
        raise ValueError(f"holdout: model selection scores the held-out likelihood, and {model.name} has none "
                         f"({score.reason}); train without --holdout")


class RunningLog:
    """Averages loss terms between log rows and appends rows to a CSV (and TensorBoard if installed)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.sums: dict[str, torch.Tensor] = {}  # kept as tensors: no device sync per step
        self.counts: dict[str, int] = {}
        self.last_row: dict[str, float] = {}
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                pass

    def add(self, phase: str, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            key = name if phase == "model" else f"{phase}/{name}"
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float().mean()
            self.counts[key] = self.counts.get(key, 0) + 1

    def flush(self, step: int, epoch: int, **extra: float) -> dict[str, float]:
        row = {"step": step, "epoch": epoch, **{k: self.sums[k].item() / self.counts[k] for k in self.sums}, **extra}
        self.sums, self.counts, self.last_row = {}, {}, row
        if not self.enabled:
            return row
        new_file = not self.path.exists()
        fields = list(row) if new_file else self._header()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.writer.add_scalar(k, v, step)
        return row

    def _header(self) -> list[str]:
        with open(self.path, newline="") as f:
            return next(csv.reader(f))


def train_config(model_name: str, **options) -> TrainConfig:
    """``TrainConfig`` from the given options, the model's ``training_defaults`` filling the rest
    (a GAN's Adam betas (0.5, 0.999), say), then the generic defaults."""
    return TrainConfig(**{**model_class(model_name).training_defaults, **options})


def train(model_name: str, out_dir: str | Path, model_config: dict | ModelConfig | None = None,
          resume: bool = False, callbacks: Sequence[Callable[[Trainer], None]] = (),
          **train_options) -> tuple[Trainer, dict]:
    """Train ``model_name`` into ``out_dir``; keyword options are ``TrainConfig`` fields."""
    trainer = Trainer(model_name, model_config, train_config(model_name, **train_options), out_dir, resume, callbacks)
    return trainer, trainer.fit()

