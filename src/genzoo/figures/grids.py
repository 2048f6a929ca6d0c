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

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from genzoo.checkpoint import atomic_write

PAD_VALUE = 128  # mid-gray between cells
MIN_CELL_PX = 56  # default scale makes each cell at least this many pixels on its long side
NOT_PLOTTED = ("step", "epoch", "lr", "examples_per_s")  # CSV columns that are not loss terms

# ------------------------------------------------------------------------------------------------
# Pure image functions
# ------------------------------------------------------------------------------------------------


def default_scale(height: int, width: int) -> int:
    """Nearest-neighbour factor that makes a cell at least ~56 px: 8x8 -> 7, 28x28 -> 2."""
    return max(1, math.ceil(MIN_CELL_PX / max(height, width)))


def image_grid(images: Tensor, nrow: int, padding: int = 2, scale: int | None = None) -> Image.Image:
    """Tile images into one picture, ``nrow`` images per row.

    images: (N, C, H, W) float, clamped to [0, 1]; C is 1 (grayscale "L" output) or 3 ("RGB").
    Each image is upsampled by ``scale`` with nearest neighbour (default ``default_scale``), and
    ``padding`` mid-gray pixels separate the cells and frame the grid, so the picture is
    ``ncol * W * scale + (ncol + 1) * padding`` wide with ``ncol = min(nrow, N)``.
    Missing cells in the last row stay mid-gray. Non-finite values raise ``ValueError``.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid: expected (N, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("image_grid: no images")
    if nrow < 1 or padding < 0:
        raise ValueError(f"image_grid: nrow={nrow} must be >= 1 and padding={padding} >= 0")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise ValueError("image_grid: images contain NaN or inf")
    n, c, h, w = images.shape
    s = default_scale(h, w) if scale is None else scale
    if s < 1:
        raise ValueError(f"image_grid: scale={s} must be >= 1")

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    pixels = pixels.repeat(s, axis=1).repeat(s, axis=2)  # (N, H*s, W*s, C)
    ch, cw = h * s, w * s
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    canvas = np.full((nrows * ch + (nrows + 1) * padding, ncol * cw + (ncol + 1) * padding, c), PAD_VALUE, np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = padding + r * (ch + padding), padding + k * (cw + padding)
        canvas[top : top + ch, left : left + cw] = pixels[i]
    return Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temp file in the same folder, then ``os.replace``); creates folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def save_image_grid(images: Tensor, path: str | os.PathLike, nrow: int, **kw) -> Path:
    """``image_grid(images, nrow, **kw)`` written as a PNG at ``path``; returns the path."""
    return save_png(image_grid(images, nrow, **kw), path)


def rows_image(
    rows: list[Tensor], row_labels: list[str] | None = None, padding: int = 2, scale: int | None = None
) -> Image.Image:
    """Stack rows of images into one grid, one row per entry, with optional labels at the left.

    rows: each (n, C, H, W) with the same n, C, H, W. Labels ("data", "recon", "0", ...) are
    drawn in black on a white margin with Pillow's default font.
    """
    if not rows:
        raise ValueError("rows_image: no rows")
    shape = tuple(rows[0].shape)
    for i, row in enumerate(rows):
        if tuple(row.shape) != shape:
            raise ValueError(f"rows_image: row {i} has shape {tuple(row.shape)}, row 0 has {shape}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"rows_image: {len(row_labels)} labels for {len(rows)} rows")
    grid = image_grid(torch.cat(rows), nrow=shape[0], padding=padding, scale=scale)
    if not row_labels:
        return grid

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    boxes = [measure.textbbox((0, 0), label, font=font) for label in row_labels]  # (l, t, r, b)
    margin = max(b[2] - b[0] for b in boxes) + 8
    white = 255 if grid.mode == "L" else (255, 255, 255)
    black = 0 if grid.mode == "L" else (0, 0, 0)
    out = Image.new(grid.mode, (grid.width + margin, grid.height), white)
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    cell = (grid.height - padding) / len(rows)  # row pitch: image height + padding
    for i, (label, box) in enumerate(zip(row_labels, boxes)):
        centre = padding + i * cell + (cell - padding) / 2
        draw.text((4, centre - (box[1] + box[3]) / 2), label, fill=black, font=font)
    return out


def save_rows(
    rows: list[Tensor], path: str | os.PathLike, row_labels: list[str] | None = None, **kw
) -> Path:
    """``rows_image(rows, row_labels, **kw)`` written as a PNG at ``path``; returns the path."""
    return save_png(rows_image(rows, row_labels, **kw), path)


