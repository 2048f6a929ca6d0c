"""Pure image functions: tile images into a grid, stack labelled rows, write PNGs.

``image_grid`` turns a batch (N, C, H, W) in [0, 1] into a Pillow image; ``rows_image`` stacks rows
of images with labels at the left and above, and white gaps between groups of rows or columns;
``save_image_grid``, ``save_rows`` and ``save_inpainting`` write PNGs atomically (temp file +
``os.replace``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from genzoo.checkpoint import atomic_write

PAD_VALUE = 128  # mid-gray between cells
MIN_CELL_PX = 56  # default scale makes each cell at least this many pixels on its long side

# ------------------------------------------------------------------------------------------------
# Pure image functions
# ------------------------------------------------------------------------------------------------


def default_scale(height: int, width: int) -> int:
    """Nearest-neighbour factor that makes a cell at least ~56 px: 8x8 -> 7, 28x28 -> 2."""
    return max(1, math.ceil(MIN_CELL_PX / max(height, width)))


def image_grid(images: Tensor, nrow: int, padding: int = 2, scale: int | None = None,
               pad_value: int = PAD_VALUE) -> Image.Image:
    """Tile images into one picture, ``nrow`` images per row.

    images: (N, C, H, W) float, clamped to [0, 1]; C is 1 (grayscale "L" output) or 3 ("RGB").
    Each image is upsampled by ``scale`` with nearest neighbour (default ``default_scale``), and
    ``padding`` pixels of gray level ``pad_value`` (default mid-gray) separate the cells and frame
    the grid, so the picture is ``ncol * W * scale + (ncol + 1) * padding`` wide with
    ``ncol = min(nrow, N)``. Missing cells in the last row stay ``pad_value``. Non-finite values
    raise ``ValueError``.
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
    canvas = np.full((nrows * ch + (nrows + 1) * padding, ncol * cw + (ncol + 1) * padding, c), pad_value, np.uint8)
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


GAP_PX = 8  # white band that separates groups of rows or columns (``rows_image``)
WHITE, BLACK = 255, 0  # label margins and text


def _insert_gaps(grid: np.ndarray, after: Sequence[int], pitch: int, padding: int, pad_value: int,
                 axis: int) -> np.ndarray:
    """Insert a white band of ``GAP_PX`` and a padding line after each cell index in ``after`` along
    ``axis`` of a grid (rows: axis 0, columns: axis 1) whose cells repeat every ``pitch`` pixels."""
    def band(width: int, value: int) -> np.ndarray:
        shape = list(grid.shape)
        shape[axis] = width
        return np.full(shape, value, grid.dtype)

    pieces, start = [], 0
    for i in sorted(set(after)):
        cut = padding + (i + 1) * pitch  # just past cell i and the padding after it
        pieces += [grid.take(range(start, cut), axis), band(GAP_PX, WHITE), band(padding, pad_value)]
        start = cut
    return np.concatenate([*pieces, grid.take(range(start, grid.shape[axis]), axis)], axis)


def _label_spans(labels: list[str]) -> list[tuple[str, int, int]]:
    """(text, first, last) column of each non-empty label; an empty label extends the one before it."""
    starts = [k for k, text in enumerate(labels) if text]
    return [(labels[k], k, end - 1) for k, end in zip(starts, [*starts[1:], len(labels)])]


def rows_image(
    rows: list[Tensor], row_labels: list[str] | None = None, padding: int = 2, scale: int | None = None,
    column_labels: list[str] | None = None, row_gaps: Sequence[int] = (), column_gaps: Sequence[int] = (),
    pad_value: int = PAD_VALUE,
) -> Image.Image:
    """Stack rows of images into one grid, one row per entry, with optional labels at the left and on top.

    rows: each (n, C, H, W) with the same n, C, H, W. Labels are drawn in black on a white margin
    with Pillow's default font: ``row_labels`` one per row at its left ("data", "recon", "0", ...;
    "\\n" starts another line), ``column_labels`` n texts above the columns, where an empty text
    extends the label before it, which is centred over all its columns ("completions", "", "").
    ``row_gaps`` / ``column_gaps``: indices of rows / columns after which a white band of ``GAP_PX``
    separates two groups. ``pad_value``: the gray level between cells (see ``image_grid``).
    """
    if not rows:
        raise ValueError("rows_image: no rows")
    shape = tuple(rows[0].shape)
    for i, row in enumerate(rows):
        if tuple(row.shape) != shape:
            raise ValueError(f"rows_image: row {i} has shape {tuple(row.shape)}, row 0 has {shape}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"rows_image: {len(row_labels)} labels for {len(rows)} rows")
    if column_labels is not None and len(column_labels) != shape[0]:
        raise ValueError(f"rows_image: {len(column_labels)} column labels for {shape[0]} columns")
    for name, gaps, count in (("row_gaps", row_gaps, len(rows)), ("column_gaps", column_gaps, shape[0])):
        if any(not 0 <= i < count - 1 for i in gaps):
            raise ValueError(f"rows_image: {name} {list(gaps)} must lie in 0..{count - 2} (a gap goes between two)")
    s = default_scale(*shape[-2:]) if scale is None else scale
    pitch_y, pitch_x = shape[-2] * s + padding, shape[-1] * s + padding  # cell plus the padding after it
    grid = np.asarray(image_grid(torch.cat(rows), nrow=shape[0], padding=padding, scale=s, pad_value=pad_value))
    grid = _insert_gaps(_insert_gaps(grid, row_gaps, pitch_y, padding, pad_value, 0),
                        column_gaps, pitch_x, padding, pad_value, 1)
    grid = Image.fromarray(grid, mode="L" if grid.ndim == 2 else "RGB")
    if not row_labels and not column_labels:
        return grid

    def cell_start(k: int, pitch: int, gaps: Sequence[int]) -> int:  # first pixel of row/column k in the grid
        return padding + k * pitch + sum(i < k for i in set(gaps)) * (GAP_PX + padding)

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    row_boxes = [measure.multiline_textbbox((0, 0), text, font=font) for text in row_labels or []]  # (l, t, r, b)
    spans = _label_spans(column_labels or [])
    column_boxes = [measure.multiline_textbbox((0, 0), text, font=font) for text, _, _ in spans]
    left = max((b[2] - b[0] for b in row_boxes), default=-8) + 8
    top = max((b[3] - b[1] for b in column_boxes), default=-6) + 6
    colour = (lambda v: v) if grid.mode == "L" else (lambda v: (v, v, v))
    out = Image.new(grid.mode, (grid.width + left, grid.height + top), colour(WHITE))
    out.paste(grid, (left, top))
    draw = ImageDraw.Draw(out)
    for i, (text, box) in enumerate(zip(row_labels or [], row_boxes)):
        centre = top + cell_start(i, pitch_y, row_gaps) + (pitch_y - padding) / 2
        draw.multiline_text((4, centre - (box[1] + box[3]) / 2), text, fill=colour(BLACK), font=font)
    for (text, first, last), box in zip(spans, column_boxes):
        centre = left + (cell_start(first, pitch_x, column_gaps) + cell_start(last, pitch_x, column_gaps)
                         + pitch_x - padding) / 2
        draw.multiline_text((centre - (box[0] + box[2]) / 2, 3 - box[1]), text, fill=colour(BLACK), font=font,
                            align="center")
    return out


def save_rows(
    rows: list[Tensor], path: str | os.PathLike, row_labels: list[str] | None = None, **kw
) -> Path:
    """``rows_image(rows, row_labels, **kw)`` written as a PNG at ``path``; returns the path."""
    return save_png(rows_image(rows, row_labels, **kw), path)


def inpainting_image(image: Tensor, masked: Tensor, completions: Tensor) -> Image.Image:
    """One row under the labels "data", "observed" and "completions", each group set apart: the image
    (C, H, W), the same with its hidden pixels gray (C, H, W), and the completions (n, C, H, W).

    White padding: the hidden pixels' gray would otherwise run into the mid-gray between cells.
    """
    row = torch.cat([image[None].cpu(), masked[None].cpu(), completions.cpu()])  # (n + 2, C, H, W)
    labels = ["data", "observed", "completions", *[""] * (len(completions) - 1)]
    return rows_image([row], column_labels=labels, column_gaps=(0, 1), pad_value=WHITE)


def save_inpainting(image: Tensor, masked: Tensor, completions: Tensor, path: str | os.PathLike) -> Path:
    """``inpainting_image(image, masked, completions)`` written as a PNG at ``path``; returns the path."""
    return save_png(inpainting_image(image, masked, completions), path)


