"""Samples over training: a trainer callback that keeps samples from one fixed noise batch at
every checkpoint, and the figure of one labelled row per checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from genzoo.checkpoint import read_run_config, read_tensors, write_tensors
from genzoo.figures.arena import save_points_over_training
from genzoo.figures.grids import save_rows
from genzoo.figures.model import sample_grid

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

    def __init__(self, n: int = 10, seed: int = 0, n_points: int = 1000):
        self.n, self.seed, self.n_points = n, seed, n_points

    def __call__(self, trainer) -> None:
        path = Path(trainer.out) / PROGRESS_FILE
        record = read_tensors(path)[0] if path.exists() else {}
        if trainer.info.kind == "vector":  # 2-D points: a scatter of n_points per checkpoint, as float32
            record[f"step_{trainer.step:010d}"] = sample_grid(trainer.final_model, self.n_points, self.seed)
        else:
            images = sample_grid(trainer.final_model, self.n, self.seed)  # (n, C, H, W) in [0, 1]
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
    if record[keys[0]].dim() == 2:  # points (N, 2) of the 2-D arena: scatter panels
        dataset = read_run_config(Path(run_dir))["data"]["name"]
        picked = evenly_spaced(keys, 6)
        return save_points_over_training({int(k.split("_")[1]): record[k] for k in picked}, out_path, dataset)
    picked = evenly_spaced(keys, max_rows)
    rows = [record[k].float() / 255 for k in picked]
    return save_rows(rows, out_path, [f"step {int(k.split('_')[1])}" for k in picked])


