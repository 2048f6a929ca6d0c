"""A run directory as the report and the app read it: its configuration, metrics, evaluations and figures.

Nothing here loads weights (``genzoo.models.registry.load_run`` does that); a directory that is not
a run, or runs of different datasets where one dataset is needed, fail in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genzoo import checkpoint
from genzoo.checkpoint import METRICS_FILE
from genzoo.models.registry import MODEL_FAMILY

# What each figure a run may hold shows, in the order a reader should see them. The names are the
# files written by ``genzoo.figures`` (a glob where the name carries a value: a temperature, a guidance).
FIGURES = (
    ("samples.png", "Samples: 64 draws from the model (seed 0), the default sampler."),
    ("samples_temperature_*.png", "Samples at reduced temperature, from the same noise."),
    ("class_grid.png", "One row per class label: conditional samples."),
    ("class_grid_guidance_*.png", "The same noise with classifier-free guidance."),
    ("density.png", "The true density, the learned density (where the model defines one) and samples."),
    ("latent_space.png", "Test points' codes in the latent space, coloured by position."),
    ("reconstructions.png", "Test images (top) and their reconstructions through the latent code (bottom)."),
    ("latent_traversal.png", "Traversals: one latent dimension varied at a time, the most active first."),
    ("interpolation.png", "Interpolation between two codes, one pair per row."),
    ("denoising.png", "Denoising: clean test images, corrupted, and the model's restoration."),
    ("completions.png", "Completion: the observed part of a test image and the model's fill-ins."),
    ("sampling_chain.png", "The sampler's chain, from noise to samples, at evenly spaced steps."),
    ("samples_over_training.png", "Samples from one fixed noise batch at each checkpoint of training."),
    ("loss_curves.png", "The logged training terms over steps (and the held-out score, where kept)."),
)


# What each kind of reported number is, in words: a likelihood's kind (``LIKELIHOOD_KINDS``), and the kinds a
# results record gives other metrics. The report's metrics tables and the app's density tab both say it so.
KIND_WORDS = {"exact": "exact", "lower_bound": "upper bound (from a lower bound on log p)",
              "estimate": "estimate, not a bound", "numerical": "numerical (normalised on a grid)",
              "unavailable": "unavailable", "sample": "sample quality", "diagnostic": "diagnostic"}


class NotARun(ValueError):
    """A directory given as a run is not one that ``genzoo train`` wrote."""


@dataclass(frozen=True)
class RunView:
    """What a finished (or unfinished) run directory holds, read once."""

    path: Path
    config: dict  # config.json: model, model_config, data (DataInfo), train
    metrics: dict | None  # metrics.json, written after training (None: not finished or not evaluated)
    evaluations: dict[str, dict]  # eval_*.json by file name, written by `genzoo eval`
    figures: list[tuple[Path, str]]  # (png, caption), in the order of FIGURES

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def dataset(self) -> str:
        return self.config["data"]["name"]

    @property
    def family(self) -> str:
        return MODEL_FAMILY.get(self.model, "unknown")

    @property
    def title(self) -> str:
        """'vae on digits (runs/vae-1)': a label that tells runs apart."""
        return f"{self.model} on {self.dataset} ({self.path.name})"


def open_run(path: str | Path) -> RunView:
    """Read a run directory; a path that is no run fails in one line that says what to give instead."""
    path = Path(path)
    if not path.is_dir():
        raise NotARun(f"{path} is not a directory: give a run directory written by `genzoo train`")
    if not (path / checkpoint.CONFIG_FILE).exists():
        raise NotARun(f"{path} is not a genzoo run directory (it has no {checkpoint.CONFIG_FILE}): give a "
                      "directory written by `genzoo train`")
    try:
        config = checkpoint.read_run_config(path)
        metrics = checkpoint.read_json(path / METRICS_FILE) if (path / METRICS_FILE).exists() else None
        evaluations = {p.name: checkpoint.read_json(p) for p in sorted(path.glob("eval_*.json"))}
    except checkpoint.CheckpointError as e:
        raise NotARun(str(e)) from None
    figures = [(png, caption) for pattern, caption in FIGURES for png in sorted(path.glob(pattern))]
    return RunView(path, config, metrics, evaluations, figures)


def open_runs(paths: list[str | Path], one_dataset: bool = False) -> list[RunView]:
    """Every run of ``paths``; with ``one_dataset``, runs of different datasets are refused in one line."""
    if not paths:
        raise NotARun("no run directories given: give at least one directory written by `genzoo train`")
    runs = [open_run(p) for p in paths]
    datasets = sorted({r.dataset for r in runs})
    if one_dataset and len(datasets) > 1:
        which = ", ".join(f"{r.path} ({r.dataset})" for r in runs)
        raise ValueError(f"the runs are of different datasets ({which}): give runs of one dataset at a time, "
                         "since each tab draws and scores inputs of one shape")
    return runs
