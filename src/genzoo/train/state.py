"""A run's resumable training state, and the rule that one directory holds one run.

``train_state.safetensors`` holds the raw and EMA weights, the model's training state beyond its
weights (``training_state``: an EBM's replay buffer), every optimizer's and scheduler's
state, the best held-out weights when selecting, and the step and training time (JSON metadata),
so that stopping and resuming gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genzoo import checkpoint
from genzoo.train.selection import Selection


class OutputExists(FileExistsError):
    """The output directory holds another run."""


def prepare_output_dir(out: Path, resume: bool) -> None:
    """Refuse to mix two runs in one directory; create it for a new run."""
    has_state = (out / checkpoint.TRAIN_STATE_FILE).exists()
    if resume:
        if not has_state:
            raise FileNotFoundError(f"cannot resume: {out / checkpoint.TRAIN_STATE_FILE} does not exist")
        return
    if out.exists() and any(out.iterdir()):
        raise OutputExists(f"output directory {out} already exists and is not empty; pass --resume to "
                           "continue its training, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A state dict's tensors under ``prefix`` ("model.", "ema.", "best."), as one file holds several."""
    return {f"{prefix}{k}": v for k, v in state.items()}


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors stored under ``prefix``, with their own names back."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def write_train_state(path: Path, model_name: str, model: nn.Module, ema: nn.Module | None, optimizers: list,
                      schedulers: list, best: Selection, step: int, world: int, train_seconds: float) -> None:
    tensors = prefixed(model.state_dict(), "model.")
    tensors.update(prefixed(model.training_state(), "training."))
    if ema is not None:
        tensors.update(prefixed(ema.state_dict(), "ema."))
    skeleton = checkpoint.flatten_state({"optimizers": [o.state_dict() for o in optimizers],
                                         "schedulers": [s.state_dict() for s in schedulers]}, "state", tensors)
    meta = {"step": step, "model": model_name, "world_size": world, "state": skeleton, "train_seconds": train_seconds}
    if best.weights is not None:
        tensors.update(prefixed(best.weights, "best."))
        meta["selection"] = {"nats": best.nats, "step": best.step, "checks_since": best.checks_since}
    checkpoint.write_tensors(path, tensors, meta)


def read_train_state(path: Path, model_name: str, model: nn.Module, ema: nn.Module | None, optimizers: list,
                     schedulers: list) -> tuple[int, float, Selection]:
    """Load the state into the given objects; returns (step, training seconds so far, selection)."""
    tensors, meta = checkpoint.read_tensors(path)
    if meta.get("model") != model_name:
        raise checkpoint.CheckpointError(f"{path} belongs to model {meta.get('model')!r}, not {model_name!r}")

    checkpoint.load_state_dict_checked(model, unprefixed(tensors, "model."), path, f"model {model_name!r}")
    expected, saved = model.training_state(), unprefixed(tensors, "training.")
    if set(saved) != set(expected) or any(saved[k].shape != v.shape for k, v in expected.items()):
        raise checkpoint.CheckpointError(f"{path} holds training state {sorted(saved)} that does not fit this "
                                         f"model's {sorted(expected)} (was it trained with other options?): "
                                         "resume with the options it was trained with, or start a new --out")
    model.load_training_state(saved)
    if ema is not None:
        checkpoint.load_state_dict_checked(ema, unprefixed(tensors, "ema."), path, "the EMA weights")
    state = checkpoint.unflatten_state(meta["state"], tensors)
    for optimizer, saved in zip(optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
        # The state comes back contiguous; the fused kernel assumes each moment tensor has its
        # parameter's layout (channels_last conv weights), so give it that layout back.
        for param, param_state in optimizer.state.items():
            for key, value in param_state.items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    param_state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    for scheduler, saved in zip(schedulers, state["schedulers"]):
        scheduler.load_state_dict(saved)
    selection = Selection()
    if "selection" in meta:
        s = meta["selection"]
        selection = Selection(s["nats"], s["step"], s["checks_since"], unprefixed(tensors, "best."))
    return meta["step"], meta.get("train_seconds", 0.0), selection
