"""Run directories: weights as safetensors, configs as JSON, nothing pickled.

A run directory holds

    config.json              model name, model config, data info, training config (rebuilds the model)
    model.safetensors        the weights to use (the EMA weights when EMA is on)
    train_state.safetensors  everything needed to resume: raw and EMA weights, optimizer and
                             scheduler states, step counters (tensors in the file, the rest as
                             JSON in its metadata)
    metrics.json             the test metrics after training, with the run's provenance
    report.html              one self-contained page of all of it (genzoo.window.report)

Every file is written to a temporary name in the same directory and renamed into place, so a
run killed mid-write leaves the previous file intact; a full disk raises ``CheckpointError``
and also keeps the previous file.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.safetensors"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
FORMAT = "genzoo-run/1"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which file and what to do."""


def eval_file(split: str, limit: int | None = None) -> str:
    """The file `genzoo eval` writes into a run directory: eval_test.json, eval_test_limit1000.json, ..."""
    return f"eval_{split}{'' if limit is None else f'_limit{limit}'}.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    if not path.parent.is_dir():  # say so before the temporary file's name shows up in an OSError
        raise CheckpointError(f"cannot write {path}: the directory {path.parent} does not exist; create it or "
                              "give a path in an existing directory")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # including KeyboardInterrupt: never leave a partial temporary file
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on the device while writing {path}; the previous "
                                  f"{path.name} is kept. Free some space and resume the run.") from e
        raise
    return path


def write_json(path: Path, obj: dict) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: is {Path(path).parent} a genzoo run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; the file is corrupt")
    return obj


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict | None = None) -> Path:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "json": json.dumps(metadata or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_tensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    """Tensors and JSON metadata of a file written by ``write_tensors``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} not found: is {path.parent} a genzoo run directory?")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by genzoo (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r})")
    return tensors, json.loads(meta["json"])


# --- nested state dicts (optimizers, schedulers) as safetensors + JSON --------------------------
def flatten_state(obj, prefix: str, tensors: dict[str, Tensor]):
    """Move every tensor of a nested dict/list into ``tensors`` under a path key; return the rest.

    The returned skeleton is JSON: each tensor is replaced by {"__tensor__": key}.
    """
    if isinstance(obj, Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def unflatten_state(skeleton, tensors: dict[str, Tensor]):
    """Inverse of ``flatten_state`` (dict keys keep their types: optimizer states use int keys)."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    """Load weights, turning a key or shape mismatch into a message that names file and model."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        details = "; ".join(f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                            for name, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("wrong shape", wrong_shape)) if keys)
        raise CheckpointError(f"{path} does not hold weights of {what} ({details}); "
                              "was it written by another model or config?")
    module.load_state_dict(state)


# --- runs ----------------------------------------------------------------------------------------
def write_run_config(run_dir: Path, model_name: str, model_config, info, train_config: dict) -> Path:
    return write_json(Path(run_dir) / CONFIG_FILE, {
        "format": FORMAT,
        "model": model_name,
        "model_config": model_config.to_dict(),
        "data": info.to_dict(),
        "train": train_config,
    })


def read_run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    config = read_json(path)
    if config.get("format") != FORMAT or not {"model", "model_config", "data"} <= set(config):
        raise CheckpointError(f"{path} is not a genzoo run config (expected format {FORMAT!r} with "
                              "model, model_config and data)")
    return config
