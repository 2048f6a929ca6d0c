"""Module modes, and where a module lives."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside (batch norm uses running statistics, no dropout); each submodule's flag restored."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's parameters; the CPU for a module without any."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
