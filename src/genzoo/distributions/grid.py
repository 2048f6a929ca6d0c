"""A square grid of cell centres: where a 2-D density is drawn, checked to integrate to 1, or normalised."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def grid_centres(extent: tuple[float, float], resolution: int) -> Tensor:
    """The ``resolution`` cell centres (float64) along one side of the box extent x extent."""
    lo, hi = extent
    return lo + (torch.arange(resolution, dtype=torch.float64) + 0.5) * ((hi - lo) / resolution)


def log_cell_area(extent: tuple[float, float], resolution: int) -> float:
    """log of one cell's area: sum over cells of exp(log f + this) is the midpoint rule's integral of f."""
    return 2 * math.log((extent[1] - extent[0]) / resolution)


def grid_points(extent: tuple[float, float], resolution: int) -> Tensor:
    """The resolution^2 cell centres (resolution^2, 2) float64, row by row in y, x varying fastest."""
    centres = grid_centres(extent, resolution)
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # (res, res) each; row i is y = centres[i]
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)
