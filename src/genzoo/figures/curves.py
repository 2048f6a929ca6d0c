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

import csv
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genzoo.checkpoint import atomic_write

PAD_VALUE = 128  # mid-gray between cells
MIN_CELL_PX = 56  # default scale makes each cell at least this many pixels on its long side
NOT_PLOTTED = ("step", "epoch", "lr", "examples_per_s")  # CSV columns that are not loss terms

# ------------------------------------------------------------------------------------------------
# Loss curves
# ------------------------------------------------------------------------------------------------


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over ``window`` values (shrinking at the ends), so the line does not lag."""
    csum = np.cumsum(np.insert(values, 0, 0.0))  # csum[i] = sum(values[:i])
    i = np.arange(len(values))
    lo, hi = np.maximum(i - window // 2, 0), np.minimum(i + window // 2 + 1, len(values))
    return (csum[hi] - csum[lo]) / (hi - lo)


def read_log_terms(csv_path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The trainer's CSV as ``{term: (steps, values)}``, skipping empty cells.

    Plots every numeric column except step, epoch, lr and examples_per_s; a column with a
    non-numeric value is not a term and is left out. None when the CSV has no rows.
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    terms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in rows[0]:
        if name is None or name in NOT_PLOTTED:
            continue
        steps, values = [], []
        try:
            for row in rows:
                cell = (row.get(name) or "").strip()
                if cell:
                    values.append(float(cell))
                    steps.append(float(row["step"]))
        except ValueError:
            continue  # not a numeric column
        if values:
            terms[name] = (np.asarray(steps), np.asarray(values))
    return terms


def save_loss_curves(csv_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Plot each logged term against step, one subplot per term sharing x; returns the path.

    The raw values are a faint line, a centred moving average (window ~5% of the points) a solid
    one. A multi-player model (columns "discriminator/loss", "generator/loss", ...) gets a first
    panel with every player's loss together. None, and nothing written, when the CSV has no rows
    or no numeric term.
    """
    terms = read_log_terms(csv_path)
    if not terms:
        return None
    panels = [[name] for name in terms]
    player_losses = [name for name in terms if name.endswith("/loss")]
    if len(player_losses) > 1:
        panels.insert(0, player_losses)
    fig = Figure(figsize=(7, 2.0 * len(panels) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, names in zip(axes, panels):
        for color, name in enumerate(names):
            steps, values = terms[name]
            window = max(1, len(values) // 20)
            ax.plot(steps, values, color=f"C{color}", alpha=0.3, linewidth=0.8)
            ax.plot(steps, _moving_average(values, window), color=f"C{color}", linewidth=1.5, label=name)
        ax.set_ylabel(names[0] if len(names) == 1 else "players' losses")
        if len(names) > 1:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(Path(out_path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))


