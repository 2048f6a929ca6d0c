"""Where a number came from: the code (genzoo version, git commit) and the machine that made it."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

import genzoo


@functools.lru_cache(maxsize=1)
def git_commit() -> tuple[str | None, bool | None]:
    """(the checkout's commit, whether it has uncommitted changes), or (None, None) outside a git checkout."""
    root = Path(genzoo.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {cpu_name()}"


def environment(device: torch.device | str = "cpu") -> dict:
    """The code and machine behind a result: written into every run's metrics and results record."""
    commit, dirty = git_commit()
    return {"genzoo_version": genzoo.__version__, "git_commit": commit, "git_dirty": dirty,
            "torch_version": torch.__version__, "threads": torch.get_num_threads(), "device": device_name(device)}
