"""One training loop for every model, on top of Hugging Face accelerate.

The same code runs on a CPU, one GPU, or many processes (``accelerate launch``): accelerate
places the model and wraps it for distributed data parallelism; bf16 runs under ``torch.autocast``.
Each process takes its own shard of every epoch's permutation (``epoch_shard``); gradients are
averaged across processes, so the effective batch is ``batch_size x num_processes``.

Determinism: the data order depends only on (seed, epoch) and the model's noise only on
(seed, process, step) (the global RNG is re-seeded every step), so stopping and resuming gives
the same weights as an uninterrupted run (``genzoo.train.state``).

Multi-player models (GANs, adversarial autoencoders) return several ``Phase``s; each has its own
optimizer and schedule, and each iteration runs every phase's updates in order on one batch.
Model selection on held-out examples is ``genzoo.train.selection``; the log and symptom
warnings are ``genzoo.train.log``; the schedules ``genzoo.train.schedules``. A model fitted by
its own update rule (EM: ``training_mode = "closed_form"``) runs ``genzoo.train.closed_form``
instead of optimizer steps, with the same data, log, progress bar, checkpoints and resume.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast, set_seed
from tqdm.auto import tqdm

from genzoo import checkpoint
from genzoo.data.core import batches, epoch_shard, prepare
from genzoo.data.registry import DATASETS, load_split
from genzoo.evaluate.likelihood import fixed_inputs, progress_interval
from genzoo.models.base import GenerativeModel, ModelConfig
from genzoo.models.registry import build_model
from genzoo.train.closed_form import (
    FitState,
    check_closed_form_options,
    fit_closed_form,
    read_fit_state,
    write_fit_state,
)
from genzoo.train.config import TrainConfig, train_config
from genzoo.train.ema import ema_model
from genzoo.train.log import LOG_FILE, RunningLog, SymptomWatch
from genzoo.train.schedules import lr_factor
from genzoo.train.selection import SELECTION_FILE, Selection, check_scorable
from genzoo.train.state import prepare_output_dir, read_train_state, write_train_state
from genzoo.train.symptoms import final_sample_symptoms


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class Trainer:
    """Trains one model into one run directory. ``fit()`` runs to the end and returns a summary."""

    def __init__(self, model_name: str, model_config: ModelConfig | dict | None, config: TrainConfig,
                 out_dir: str | Path, resume: bool = False, callbacks: Sequence[Callable[[Trainer], None]] = ()):
        self.out = Path(out_dir)
        self.callbacks = list(callbacks)  # called with the trainer after each checkpoint, main process only
        if resume:  # the run's own configs; only the length of training and where the data lies may change
            saved = checkpoint.read_run_config(self.out)
            model_name, model_config = saved["model"], saved["model_config"]
            config = dataclasses.replace(TrainConfig(**{**saved["train"], "betas": tuple(saved["train"]["betas"])}),
                                         data_root=config.data_root or saved["train"].get("data_root"),
                                         epochs=config.epochs or saved["train"]["epochs"],
                                         max_steps=config.max_steps or saved["train"]["max_steps"],
                                         max_minutes=config.max_minutes or saved["train"].get("max_minutes"))
        config.validate()
        self.config, self.model_name = config, model_name
        # Several processes on a machine without GPUs (torchrun, `accelerate launch --multi_gpu`): gloo on the CPU.
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
        if model.conditional and self.train_split.labels is None:
            raise ValueError(f"{model_name} is conditional and dataset {config.data!r} has no labels")
        self.closed_form = model.training_mode == "closed_form"  # fitted by its own update rule: genzoo.train.closed_form
        if self.closed_form:
            check_closed_form_options(model_name, config, epochs_given=config.epochs is not None)
            self.steps_per_epoch = 1  # an iteration is one pass over the training set
            self.total_steps = min(config.max_steps or math.inf, model.config.max_iter * model.config.restarts)
        else:
            if self.holdout_split is not None:
                check_scorable(model, self.holdout_split, self.info)
            self.steps_per_epoch = len(self.train_split) // (config.batch_size * self.world)
            if self.steps_per_epoch == 0:
                raise ValueError(f"batch_size {config.batch_size} x {self.world} process(es) exceeds the "
                                 f"{len(self.train_split)} training examples")
            self.total_steps = (config.max_steps
                                or (config.epochs or DATASETS[config.data].default_epochs) * self.steps_per_epoch)
        if self.is_main:
            prepare_output_dir(self.out, resume)
        self.accelerator.wait_for_everyone()

        if model.can("initialize") and not resume and not config.init_from:
            self.initialize(model)
        self.phases = model.phases()
        ddp_options.find_unused_parameters = len(self.phases) > 1  # one player's update leaves the others' unused
        fused = self.accelerator.device.type in ("cpu", "cuda")  # fused AdamW: ~1.4x faster MLP VAE steps here
        self.optimizers = [torch.optim.AdamW(p.parameters, lr=p.lr or config.lr, betas=p.betas or config.betas,
                                             weight_decay=config.weight_decay, fused=fused) for p in self.phases]
        schedule = lambda step: lr_factor(step, self.total_steps, config.warmup_steps, config.lr_schedule)  # noqa: E731
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in self.optimizers]
        self.memory_format = self.info.memory_format
        if self.closed_form:  # no gradients to synchronise: nothing for accelerate to wrap
            self.model = model.to(self.accelerator.device)
        else:
            model = model.to(memory_format=self.memory_format)
            self.model, *self.optimizers = self.accelerator.prepare(model, *self.optimizers)
        self.unwrapped: GenerativeModel = self.accelerator.unwrap_model(self.model)  # once: ~0.5 ms a call, every step
        self.ema = ema_model(self.unwrapped, config.ema_decay, config.ema_warmup) if config.ema_decay else None
        self.data = self.train_split.images.to(self.accelerator.device)
        self.labels = None if self.train_split.labels is None else self.train_split.labels.to(self.accelerator.device)
        self.step, self.seconds_before, self.fit_started, self.time_capped = 0, 0.0, None, False
        self.best = Selection()
        self.fit_state, self.best_fit = FitState(), None
        self.symptoms = SymptomWatch(enabled=self.is_main)
        if resume:
            state_path = self.out / checkpoint.TRAIN_STATE_FILE
            if self.closed_form:
                self.step, self.seconds_before = read_fit_state(state_path, self)
            else:
                self.step, self.seconds_before, best = read_train_state(
                    state_path, model_name, self.unwrapped, self.ema, self.optimizers, self.schedulers)
                self.best = best if self.holdout_split is not None else Selection()
            if self.is_main:
                print(f"genzoo: resuming {self.out} from step {self.step:,} of {self.total_steps:,}", file=sys.stderr)
        if self.is_main:  # on resume too: the length of training may have changed
            checkpoint.write_run_config(self.out, model_name, self.unwrapped.config, self.info, dataclasses.asdict(config))

    def initialize(self, model: GenerativeModel) -> None:
        """The model's data-dependent initialisation (Glow's ActNorm) from the first batch of epoch 0,
        on the main process, then broadcast: every process starts from the same weights, and a resumed
        run from its saved ones (this is skipped)."""
        model.to(self.accelerator.device)
        if self.is_main:
            idx = epoch_shard(len(self.train_split), self.config.batch_size, 0, self.config.seed)[:self.config.batch_size]
            generator = torch.Generator().manual_seed(self.config.seed)
            x = prepare(self.train_split.images[idx], self.info, model.input_kind, train=True, generator=generator)
            y = None if self.train_split.labels is None or not model.conditional else self.train_split.labels[idx]
            model.initialize(x.to(self.accelerator.device), None if y is None else y.to(self.accelerator.device))
        if self.world > 1:
            for tensor in model.state_dict().values():
                broadcast(tensor, from_process=0)

    @property
    def final_model(self) -> GenerativeModel:
        """The weights to evaluate and save: the EMA average when EMA is on."""
        return self.ema.module if self.ema is not None else self.unwrapped

    def fit(self) -> dict:
        config = self.config
        self.model.train()
        log = RunningLog(self.out / LOG_FILE, enabled=self.is_main)
        progress = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, dynamic_ncols=True,
                        desc=f"{self.model_name} on {config.data}", mininterval=progress_interval())
        self.fit_started = time.perf_counter()
        fit_summary = None
        try:
            if self.closed_form:
                fit_summary = fit_closed_form(self, log, progress)
            else:
                self.gradient_steps(log, progress)
        finally:  # also on Ctrl-C: the bar ends its line before any message
            progress.close()

        if self.best.weights is not None:  # from here on (pictures, evaluation) the selected weights
            self.final_model.load_state_dict(self.best.weights)
        if self.unwrapped.can("fit_after_training"):  # a closed-form step on the training data (the AE's latent mixture)
            x, split, _ = fixed_inputs(self.train_split, self.info, self.unwrapped.input_kind)
            self.final_model.fit_after_training(batches(x.to(self.accelerator.device), split.labels, 1000))
            self.save_model()
        if self.is_main:  # what the final samples look like: none alike, none noise (a small budget misleads)
            for message in final_sample_symptoms(self.final_model, self.data, self.labels, self.info,
                                                 self.step / self.steps_per_epoch,
                                                 DATASETS[self.config.data].default_epochs):
                self.symptoms.warnings.append(message)
                tqdm.write(f"genzoo: warning: {message}", file=sys.stderr)
        summary = {"steps": self.step, "epochs": self.step / self.steps_per_epoch, "last": log.last_row,
                   "seconds": self.train_seconds(), "warnings": self.symptoms.warnings, "time_capped": self.time_capped}
        if self.holdout_split is not None:
            summary["selection"] = {"holdout": len(self.holdout_split), "holdout_source": self.holdout_split.source,
                                    "iw_samples": config.holdout_iw_samples, "best_nats": self.best.nats,
                                    "best_step": self.best.step, "best_epoch": self.best.step / self.steps_per_epoch,
                                    "stopped_early": self.step < self.total_steps}
        if fit_summary is not None:
            summary["fit"] = fit_summary
        return summary

    def gradient_steps(self, log: RunningLog, progress: tqdm) -> None:
        """Optimizer steps from ``self.step`` to the budget, the time cap, or the held-out patience."""
        config, model = self.config, self.model
        # bf16 autocast per call, not accelerate's process-wide setting: one process may train several precisions
        autocast = torch.autocast(self.accelerator.device.type, torch.bfloat16, enabled=config.precision == "bf16")
        tick, examples, first_step = time.perf_counter(), 0, self.step
        while self.step < self.total_steps:
            epoch, batch_index = divmod(self.step, self.steps_per_epoch)
            if batch_index == 0 or self.step == first_step:
                shard = epoch_shard(len(self.data), config.batch_size, epoch, config.seed, self.rank, self.world)
            idx = shard[batch_index * config.batch_size:(batch_index + 1) * config.batch_size]
            torch.manual_seed(config.seed * 1_000_003 + self.step * 1_009 + self.rank)  # noise: f(seed, step, rank)
            x, y = self.batch(idx)
            for phase, optimizer, scheduler in zip(self.phases, self.optimizers, self.schedulers):
                for update in range(phase.updates_per_step):
                    # k updates of one player (a WGAN critic's n_critic) each see a fresh real batch
                    xb, yb = (x, y) if update == 0 else self.batch(shard[torch.randint(len(shard), (len(idx),))])
                    with autocast:
                        terms = model(xb, yb, phase=phase.name, step=self.step)
                    loss = terms["loss"].float().mean()
                    self.check_finite(loss, terms, phase.name, xb, yb)
                    self.check_divergence(terms, phase.name)
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
                row = log.flush(self.step, epoch, lr=self.schedulers[0].get_last_lr()[0],
                                examples_per_s=examples / (time.perf_counter() - tick))
                progress.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "epoch", "lr")})
                self.symptoms.update(self.unwrapped.training_warnings(row), self.step)
                tick, examples = time.perf_counter(), 0
            due = (self.step % config.checkpoint_every == 0 if config.checkpoint_every
                   else self.step % self.steps_per_epoch == 0)
            self.time_capped = self.step < self.total_steps and self.over_time_cap()
            if (due or self.time_capped or self.step == self.total_steps) and self.checkpoint():
                break
            if self.time_capped:
                tqdm.write(f"genzoo: stopping at step {self.step:,} of {self.total_steps:,}: the "
                           f"{config.max_minutes:g}-minute cap on training time is reached", file=sys.stderr)
                break

    def checkpoint(self) -> bool:
        """Score the held-out set (when selecting), save the state, run the callbacks; True: out of patience."""
        if self.holdout_split is not None:
            nats = self.best.update(self.final_model, self.holdout_split, self.info, self.config.holdout_iw_samples,
                                    self.step)
            if self.is_main:
                self.best.append_row(self.out / SELECTION_FILE, self.step, self.step / self.steps_per_epoch, nats)
        self.save_state()
        if self.is_main:
            for callback in self.callbacks:
                callback(self)
        stop = bool(self.config.patience) and self.best.checks_since >= self.config.patience
        if stop and self.is_main:
            tqdm.write(f"genzoo: stopping at step {self.step}: no better held-out score for {self.config.patience} "
                       f"checkpoints (best {self.best.nats:.2f} nats at step {self.best.step})", file=sys.stderr)
        return stop

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model inputs (B, *shape) and labels (B,) or None for training examples ``idx``."""
        idx = idx.to(self.data.device)
        x = prepare(self.data[idx], self.info, self.unwrapped.input_kind, train=True)
        return x.contiguous(memory_format=self.memory_format), None if self.labels is None else self.labels[idx]

    def over_time_cap(self, every_step: bool = False) -> bool:
        """Whether the training time passed ``max_minutes`` on any process (so that all stop together).

        Checked at log rows only (or ``every_step``: an EM iteration is a whole pass): the check is a
        collective, which would sync a GPU every step.
        """
        if not self.config.max_minutes or (self.step % self.config.log_every and not every_step):
            return False
        over = torch.tensor(float(self.train_seconds() > 60 * self.config.max_minutes), device=self.accelerator.device)
        return self.accelerator.reduce(over, "sum").item() > 0

    def train_seconds(self) -> float:
        """Wall-clock training time of the whole run, across resumes."""
        return self.seconds_before + (0.0 if self.fit_started is None else time.perf_counter() - self.fit_started)

    def check_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], phase: str, x: torch.Tensor,
                     y: torch.Tensor | None) -> None:
        if torch.isfinite(loss):
            return
        # name the component that broke, not the total it feeds, and the part of the model, where it can tell
        bad = next((name for name, value in terms.items() if name != "loss" and not torch.isfinite(value).all()), "loss")
        where = self.unwrapped.locate_nonfinite(x, y)
        where = f" (first non-finite in {where})" if where else ""
        raise TrainingDiverged(
            f"training stopped at step {self.step}: loss term {bad!r} (phase {phase!r}) is "
            f"{terms[bad].float().mean().item()}{where}; {self.saved_sentence()}. Try a lower --lr, --grad-clip 1.0, or fp32 precision.")

    def check_divergence(self, terms: dict[str, torch.Tensor], phase: str) -> None:
        """Stop, keeping the last good checkpoint, where the model sees divergence in this step's terms
        (its reason names the remedy)."""
        reason = self.unwrapped.divergence(terms)
        if reason:
            raise TrainingDiverged(f"training stopped at step {self.step} (phase {phase!r}): {reason}; "
                                   f"{self.saved_sentence()}")

    def saved_sentence(self) -> str:
        """What a stopped run keeps, for its error message."""
        return (f"the last good checkpoint in {self.out} is kept" if (self.out / checkpoint.TRAIN_STATE_FILE).exists()
                else "no checkpoint had been written yet")

    def save_state(self) -> None:
        """Write the weights to use and the resumable training state (main process only)."""
        self.accelerator.wait_for_everyone()
        if self.is_main and self.closed_form:
            write_fit_state(self.out / checkpoint.TRAIN_STATE_FILE, self)
            self.save_model()
        elif self.is_main:
            write_train_state(self.out / checkpoint.TRAIN_STATE_FILE, self.model_name, self.unwrapped, self.ema,
                              self.optimizers, self.schedulers, self.best, self.step, self.world, self.train_seconds())
            self.save_model()

    def save_model(self) -> None:
        """Write the weights to use: the best held-out ones when selecting, else the final ones."""
        if self.is_main:
            weights = self.best.weights if self.best.weights is not None else self.final_model.state_dict()
            checkpoint.write_tensors(self.out / checkpoint.MODEL_FILE, weights)


def train(model_name: str, out_dir: str | Path, model_config: dict | ModelConfig | None = None,
          resume: bool = False, callbacks: Sequence[Callable[[Trainer], None]] = (),
          **train_options) -> tuple[Trainer, dict]:
    """Train ``model_name`` into ``out_dir``; keyword options are ``TrainConfig`` fields."""
    trainer = Trainer(model_name, model_config, train_config(model_name, **train_options), out_dir, resume, callbacks)
    return trainer, trainer.fit()
