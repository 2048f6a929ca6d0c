"""A run from start to finish: train into a run directory, evaluate on the test split, draw the figures.

``genzoo train`` and ``genzoo bench`` both go through ``train_run``, so a benchmarked run is the
same as one trained by hand: the same files, the same ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path

from genzoo import checkpoint, figures
from genzoo.checkpoint import METRICS_FILE
from genzoo.data.registry import load_split
from genzoo.evaluate.likelihood import fixed_inputs, format_metrics
from genzoo.evaluate.metrics import run_metrics
from genzoo.models.base import ModelConfig
from genzoo.models.recipes import Recipe
from genzoo.provenance import environment
from genzoo.train.closed_form import fit_text
from genzoo.train.config import TrainConfig
from genzoo.train.loop import Trainer

TRAIN_EVAL_DRAWS = 100  # draws per example of an estimated test NLL after training (at most the model's default)


def train_run(model_name: str, model_options: ModelConfig | dict | None, config: TrainConfig, out: str | Path,
              resume: bool = False, draws: int | None = None, eval_metrics: list[str] = (),
              recipe: Recipe | None = None, quiet: bool = False) -> dict:
    """Train, then write ``metrics.json`` (the test metrics, the run's provenance) and the figures.

    Returns the metrics written. ``eval_metrics`` are computed on the test split (none by default: the
    command line passes every metric of the data's kind); ``draws=0`` leaves out the NLL.
    """
    trainer = Trainer(model_name, model_options, config, out, resume=resume,
                      callbacks=[figures.SamplesOverTraining()])
    summary = trainer.fit()
    if not trainer.is_main:
        return {}
    return report_run(trainer, summary, draws, list(eval_metrics), recipe, quiet)


def report_run(trainer: Trainer, summary: dict, draws: int | None, eval_metrics: list[str], recipe: Recipe | None,
               quiet: bool) -> dict:
    """After training: metrics on the test split, pictures, and a short summary."""
    model, out = trainer.final_model.eval(), trainer.out
    info, test = load_split(trainer.config.data, "test", trainer.config.data_root)
    metrics = {"model": trainer.model_name, "data": trainer.config.data, "train_steps": summary["steps"],
               "train_epochs": summary["epochs"], "train_seconds": summary["seconds"],
               "time_capped": summary["time_capped"], "final_train_terms": summary["last"],
               "training_warnings": summary["warnings"], "seed": trainer.config.seed,
               "recipe": None if recipe is None else {"name": recipe.name, "version": recipe.version},
               "environment": environment(trainer.accelerator.device)}
    if "selection" in summary:  # the weights evaluated below are the held-out best, not the last
        metrics["selection"] = summary["selection"]
    if "fit" in summary:  # a closed-form fit: its starts, iterations and convergence
        metrics["fit"] = summary["fit"]
    if draws == 0:
        eval_metrics = [m for m in eval_metrics if m != "nll"]
    draws = min(TRAIN_EVAL_DRAWS, model.eval_defaults.draws) if draws is None else draws
    metrics.update(run_metrics(model, test, info, eval_metrics, draws))
    checkpoint.write_json(out / METRICS_FILE, metrics)
    if info.kind == "vector":
        written = figures.write_arena_figures(model, test.images, out)
    else:
        x, split, _ = fixed_inputs(test, info, model.input_kind, limit=32)
        written = figures.write_run_figures(model, x.to(model.device),
                                            None if split.labels is None else split.labels.to(model.device), out)
    curves = figures.save_loss_curves(out / "log.csv", out / "loss_curves.png")
    progress = figures.save_samples_over_training(out, out / "samples_over_training.png")
    written += [path for path in (progress, curves) if path]
    if quiet:
        return metrics
    if "fit" in summary:
        print(f"trained {trainer.model_name} on {trainer.config.data} by EM: {fit_text(summary['fit'])} -> {out}")
    else:
        print(f"trained {trainer.model_name} on {trainer.config.data}: {summary['steps']} steps "
              f"({summary['epochs']:.1f} epochs) -> {out}")
    if "selection" in summary:
        best = summary["selection"]
        print(f"selected the weights of step {best['best_step']} (epoch {best['best_epoch']:.1f}): best held-out "
              f"score {best['best_nats']:.2f} nats on {best['holdout']:,} held-out training examples")
    if eval_metrics:
        print(format_metrics(metrics))
    print("wrote: " + ", ".join([METRICS_FILE, *(p.name for p in written)]))
    return metrics
