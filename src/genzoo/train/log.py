"""The training log: averaged loss terms per row (CSV, TensorBoard if installed), and symptom warnings."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

LOG_FILE = "log.csv"
WARN_AFTER_ROWS = 3  # a model's symptom is reported once it shows in this many log rows in a row
WARNING_NUMBERS = re.compile(r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?")  # ignored when matching repeats


class RunningLog:
    """Averages loss terms between log rows and appends rows to a CSV (and TensorBoard if installed)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.sums: dict[str, torch.Tensor] = {}  # kept as tensors: no device sync per step
        self.counts: dict[str, int] = {}
        self.last_row: dict[str, float] = {}
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                pass

    def add(self, phase: str, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            key = name if phase == "model" else f"{phase}/{name}"
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float().mean()
            self.counts[key] = self.counts.get(key, 0) + 1

    def flush(self, step: int, epoch: int, **extra: float) -> dict[str, float]:
        row = {"step": step, "epoch": epoch, **{k: self.sums[k].item() / self.counts[k] for k in self.sums}, **extra}
        self.sums, self.counts, self.last_row = {}, {}, row
        if not self.enabled:
            return row
        new_file = not self.path.exists()
        fields = list(row) if new_file else self._header()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.writer.add_scalar(k, v, step)
        return row

    def _header(self) -> list[str]:
        with open(self.path, newline="") as f:
            return next(csv.reader(f))




class SymptomWatch:
    """Reports a model's symptom (``training_warnings``) once it persists for ``WARN_AFTER_ROWS`` log rows."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.warnings: list[str] = []
        self.streaks: dict[str, int] = {}

    def update(self, messages: list[str], step: int) -> None:
        current = {WARNING_NUMBERS.sub("#", m): m for m in messages}  # the same symptom with other numbers
        self.streaks = {key: self.streaks.get(key, 0) + 1 for key in current}
        for key, message in current.items():
            if self.streaks[key] == WARN_AFTER_ROWS:
                text = f"step {step}: {message} (for {WARN_AFTER_ROWS} log rows in a row)"
                self.warnings.append(text)
                if self.enabled:
                    tqdm.write(f"genzoo: warning: {text}", file=sys.stderr)
