"""The closed-form training mode: a model fitted by its own update rule (EM) under the one trainer.

No optimizer: every iteration each process sums the model's sufficient statistics over its share
of the training set, the sums are all-reduced, and every process applies the same update, so a
fit on several processes equals a fit on one (up to the order of float64 additions). A start runs
until the objective (the mean log-likelihood, before the update) changes by less than the model's
``tol`` or for ``max_iter`` iterations; of ``restarts`` starts the best final objective is kept
(scikit-learn's ``n_init``). ``--max-steps`` caps the iterations of all starts together.

The trainer's progress bar, log (one row per iteration), checkpoints (``checkpoint_every``
iterations, else every one), time cap and resume work as in gradient training: the state holds
the current and the best start's parameters, the start and iteration, and the objectives, and EM
is deterministic given them, so a resumed fit equals an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genzoo import checkpoint
from genzoo.data.core import prepare
from genzoo.models.base import ClosedFormModel
from genzoo.train.state import prefixed, unprefixed

CHUNK_ELEMENTS = 2**20  # examples x dimensions per statistics call: bounds the temporaries, and on this CPU float64
# products of (4096, 784) chunks ran 1.4x slower than of (1024, 784) ones, while 2-D data wants long chunks


@dataclass
class FitState:
    """Where a closed-form fit stands, saved with the parameters (JSON in the checkpoint's metadata)."""

    restart: int = 0  # the start in progress (== restarts when all are done)
    iteration: int = 0  # iterations done in this start (0: it has not been initialised yet)
    objective: float = -math.inf  # this start's last objective, per example
    converged: bool = False  # whether this start's last change was below tol
    best_objective: float = -math.inf  # the best finished start's final objective
    best_restart: int = -1
    best_iterations: int = 0
    best_converged: bool = False

    def to_json(self) -> dict:  # JSON has no infinities
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> FitState:
        return cls(**{k: (-math.inf if v is None and k.endswith("objective") else v) for k, v in d.items()})


def check_closed_form_options(model_name: str, config, epochs_given: bool) -> None:
    """Options of gradient training that a closed-form fit cannot honour, refused in one line each."""
    if epochs_given:
        raise ValueError(f"{model_name} is fitted by EM, which runs to its own convergence: set --set max_iter=N "
                         "or --set tol=T (or cap all iterations with --max-steps N), not --epochs")
    if config.holdout:
        raise ValueError(f"{model_name} is fitted by EM to its training set: --holdout selects among gradient "
                         "checkpoints and does not apply; compare fits with genzoo eval --split valid")
    if config.init_from:
        raise ValueError(f"{model_name} is fitted by EM from its own k-means++ start: --init-from does not apply")


def fit_inputs(trainer) -> torch.Tensor:
    """The whole training set as model inputs, prepared once: dequantised (or binarised) with the run's
    seed, so that EM's objective is one fixed function of the parameters. The same on every process."""
    generator = torch.Generator(trainer.data.device).manual_seed(trainer.config.seed)
    return prepare(trainer.data, trainer.info, trainer.unwrapped.input_kind, train=True, generator=generator)


def fit_chunk(dim: int) -> int:
    """Examples per statistics call for D-dimensional inputs."""
    return max(256, CHUNK_ELEMENTS // dim)


def process_share(n: int, rank: int, world: int) -> slice:
    """This process's contiguous share of n examples (the shares cover all of them, once)."""
    return slice(n * rank // world, n * (rank + 1) // world)


def summed_statistics(trainer, model: ClosedFormModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's statistics summed over this process's share of x, then over every process."""
    share = x[process_share(len(x), trainer.rank, trainer.world)]
    chunk = fit_chunk(model.info.dim)
    totals: dict[str, torch.Tensor] = {}
    for start in range(0, len(share), chunk):
        for name, value in model.statistics(share[start:start + chunk]).items():
            totals[name] = totals[name] + value if name in totals else value
    if trainer.world > 1:
        totals = {name: trainer.accelerator.reduce(value, "sum") for name, value in totals.items()}
    return totals


def fit_closed_form(trainer, log, progress) -> dict:
    """Run the fit from ``trainer.fit_state`` on; returns the fit's summary (its starts and convergence)."""
    model: ClosedFormModel = trainer.unwrapped
    settings, state = model.config, trainer.fit_state
    x = fit_inputs(trainer)
    while state.restart < settings.restarts and trainer.step < trainer.total_steps:
        if state.iteration == 0:
            generator = torch.Generator(x.device).manual_seed(trainer.config.seed * 1_000_003 + state.restart)
            model.initialize_fit(x, generator)
        totals = summed_statistics(trainer, model, x)
        objective = model.objective(totals, len(x))
        if not math.isfinite(objective):
            raise FloatingPointError(
                f"{trainer.model_name}: the objective became {objective} at iteration {state.iteration + 1} of start "
                f"{state.restart}; {trainer.saved_sentence()}. Raise reg_covar (or pseudo_count) with --set.")
        model.update(totals)
        change, state.objective, state.iteration = objective - state.objective, objective, state.iteration + 1
        state.converged = abs(change) < settings.tol
        trainer.step += 1
        progress.update(1)
        log.flush(trainer.step, state.restart, objective=objective, log_likelihood=totals["log_likelihood"].item() / len(x),
                  change=change if math.isfinite(change) else math.nan, iteration=state.iteration)
        progress.set_postfix({"start": state.restart, "objective": f"{objective:.5g}", "change": f"{change:.3g}"})
        finished = state.converged or state.iteration == settings.max_iter
        if finished:
            finish_start(trainer, state, progress, settings.max_iter)
        trainer.time_capped = trainer.step < trainer.total_steps and trainer.over_time_cap(every_step=True)
        due = trainer.config.checkpoint_every == 0 or trainer.step % trainer.config.checkpoint_every == 0
        if due or finished or trainer.time_capped or trainer.step == trainer.total_steps:
            trainer.checkpoint()
        if trainer.time_capped:
            tqdm.write(f"genzoo: stopping at iteration {trainer.step:,}: the {trainer.config.max_minutes:g}-minute "
                       "cap on training time is reached", file=sys.stderr)
            break
    stopped_inside = state.restart < settings.restarts and state.iteration > 0  # by --max-steps or the time cap
    if stopped_inside and (state.objective > state.best_objective or state.best_restart < 0):
        kept = {"best_restart": state.restart, "iterations": state.iteration, "converged": False,
                "objective": state.objective}  # the state stays as saved: a resumed run continues this start
    else:
        model.load_state_dict(trainer.best_fit)
        kept = {"best_restart": state.best_restart, "iterations": state.best_iterations,
                "converged": state.best_converged, "objective": state.best_objective}
    trainer.save_model()
    return {"restarts": settings.restarts, "starts_finished": state.restart, **kept, "tol": settings.tol,
            "max_iter": settings.max_iter}


def finish_start(trainer, state: FitState, progress, max_iter: int) -> None:
    """Keep this start's parameters if its final objective is the best so far; move to the next start."""
    if state.objective > state.best_objective or state.best_restart < 0:
        state.best_objective, state.best_restart = state.objective, state.restart
        state.best_iterations, state.best_converged = state.iteration, state.converged
        trainer.best_fit = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    if state.converged:  # the bar counts max_iter per start
        progress.update(max(0, min(max_iter - state.iteration, trainer.total_steps - progress.n)))
    state.restart, state.iteration, state.objective, state.converged = state.restart + 1, 0, -math.inf, False


def write_fit_state(path: Path, trainer) -> None:
    tensors = {**prefixed(trainer.unwrapped.state_dict(), "model."), **prefixed(trainer.best_fit or {}, "best.")}
    meta = {"step": trainer.step, "model": trainer.model_name, "world_size": trainer.world, "mode": "closed_form",
            "fit": trainer.fit_state.to_json(), "train_seconds": trainer.train_seconds()}
    checkpoint.write_tensors(path, tensors, meta)


def read_fit_state(path: Path, trainer) -> tuple[int, float]:
    """Load a closed-form fit's state into the trainer; returns (iterations so far, training seconds)."""
    tensors, meta = checkpoint.read_tensors(path)
    if meta.get("model") != trainer.model_name or meta.get("mode") != "closed_form":
        raise checkpoint.CheckpointError(f"{path} is not a closed-form fit of {trainer.model_name!r}: it belongs to "
                                         f"{meta.get('model')!r}")
    model = trainer.unwrapped
    checkpoint.load_state_dict_checked(model, unprefixed(tensors, "model."), path, f"model {trainer.model_name!r}")
    trainer.best_fit = {k: v.to(model.device) for k, v in unprefixed(tensors, "best.").items()} or None
    trainer.fit_state = FitState.from_json(meta["fit"])
    return meta["step"], meta.get("train_seconds", 0.0)


def fit_text(fit: dict) -> str:
    """A closed-form fit in words: "38 iterations, converged (tol 0.001); best of 3 starts"."""
    state = f"converged (tol {fit['tol']:g})" if fit["converged"] else f"not converged (tol {fit['tol']:g})"
    starts = f"; best of {fit['restarts']} starts" if fit["restarts"] > 1 else ""
    return f"{fit['iterations']} iterations, {state}{starts}"
