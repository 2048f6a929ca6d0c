"""The pictures a training run writes: image grids, model figures and loss curves.

Three layers, each usable alone:

- pure image functions: ``image_grid`` turns a batch (N, C, H, W) in [0, 1] into a Pillow image;
  ``save_image_grid`` and ``save_rows`` write PNGs atomically (temp file + ``os.replace``);
- model figures: ``sample_grid``, ``reconstructions``, ``latent_traversal``, ``interpolation``,
  ``class_grid``, ``denoising_triples``, ``completions`` (inpainting) return tensors (rows of images) and never write files, so
  they can be checked numerically. They use only the model protocol (``sample``, optional
  ``encode``/``decode``/``corrupt``/``complete``, ``conditional``, ``info``), run under ``torch.no_grad()`` in
  eval mode (the previous train/eval flags are restored), and draw randomness only from an
  explicit ``torch.Generator`` seeded from ``seed``: torch's global RNG is never touched;
- ``write_run_figures`` writes every figure a model supports; ``save_loss_curves`` plots the
  trainer's CSV log.

Plots use matplotlib's object API with the Agg canvas (no pyplot), so importing this module
changes no global matplotlib state.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from genzoo.checkpoint import read_tensors, write_tensors
from genzoo.figures.grids import save_rows
from genzoo.figures.model import sample_grid

PAD_VALUE = 128  # mid-gray between cells
MIN_CELL_PX = 56  # default scale makes each cell at least this many pixels on its long side
NOT_PLOTTED = ("step", "epoch", "lr", "examples_per_s")  # CSV columns that are not loss terms

# ------------------------------------------------------------------------------------------------
# Samples over training
# ------------------------------------------------------------------------------------------------
PROGRESS_FILE = "samples_over_training.safetensors"


class SamplesOverTraining:
    """Trainer callback: after each checkpoint, ``n`` samples from one fixed noise batch (the same
    seed every time), so the rows show how one set of codes develops during training.

    The samples are kept as uint8 in RUN_DIR/samples_over_training.safetensors, keyed by step,
    rewritten atomically, so a resumed run continues the same record.
    """

    def __init__(self, n: int = 10, seed: int = 0):
        self.n, self.seed = n, seed

    def __call__(self, trainer) -> None:
        images = sample_grid(trainer.final_model, self.n, self.seed)  # (n, C, H, W) in [0, 1]
        path = Path(trainer.out) / PROGRESS_FILE
        record = read_tensors(path)[0] if path.exists() else {}
        record[f"step_{trainer.step:010d}"] = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        write_tensors(path, record)


def evenly_spaced(items: list, count: int) -> list:
    """At most ``count`` items, evenly spaced, the first and the last always among them."""
    count = min(count, len(items))
    if count <= 1:
        return items[-count:] if count else []
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def save_samples_over_training(run_dir: str | os.PathLike, out_path: str | os.PathLike,
                               max_rows: int = 12) -> Path | None:
    """Draw the record ``SamplesOverTraining`` kept: one labelled row per checkpoint (at most
    ``max_rows``, evenly spaced, always the last). None when there is no record."""
    path = Path(run_dir) / PROGRESS_FILE
    if not path.exists():
        return None
    record = read_tensors(path)[0]
    keys = sorted(record)
    picked = evenly_spaced(keys, max_rows)
    rows = [record[k].float() / 255 for k in picked]
    return save_rows(rows, out_path, [f"step {int(k.split('_')[1])}" for k in picked])


