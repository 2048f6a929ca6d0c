"""Datasets: what each one is, how to read it, and how its pixels become model inputs.

Every dataset is held in memory as a ``Split``: images as stored levels (uint8, (N, C, H, W)) and
labels (int64, (N,)) or None. Its ``DataInfo`` declares the shape, the number of classes and the
value type, so that a model picks a matching likelihood and bits/dim is computed in one place
(``nats_offset`` below).

Model inputs are float tensors in [0, 1], in one of three representations (``prepare``):

- ``"binary"``     {0, 1}. Binary data as is; 8-bit data binarised (dynamically when training,
                   statically with a fixed seed when evaluating).
- ``"discrete"``   level / (K - 1) for K levels: the grid of a discretised likelihood.
- ``"continuous"`` (level + u) / K with u ~ U[0, 1): uniform dequantisation. A continuous density
                   p on [0, 1]^D bounds the discrete likelihood: -log P(level) <= -log p + D log K
                   (Jensen), so ``nats_offset`` adds D log K before converting to bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ValueType = Literal["binary", "discrete", "continuous"]

STATIC_BINARIZATION_SEED = 0  # evaluation binarises 8-bit data once, with this seed


@dataclass(frozen=True)
class DataInfo:
    """What a dataset is: enough for a model to choose its likelihood and for bits/dim."""

    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int  # 0 when the dataset has no labels
    value_type: ValueType
    num_levels: int | None  # 2 for binary, 17 for digits, 256 for 8-bit; None if continuous

    @property
    def dim(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "value_type": self.value_type,
            "num_levels": self.num_levels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DataInfo":
        return cls(d["name"], tuple(d["shape"]), d["num_classes"], d["value_type"], d["num_levels"])
