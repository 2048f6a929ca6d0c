"""The 2-D density arena: every family that trains on vectors, on the four datasets, one ruler.

Each run is `genzoo train MODEL --data DATASET --epochs E --cosine schedule`; `genzoo train`
then evaluates on the whole 10,000-point test split: the test NLL and KL(data || model) where
the model has a likelihood (exact for MADE/NADE, an importance-weighted bound with 100 draws for
the VAE family), and the sample metrics of 10,000 samples for all. Prints a markdown table with
the budget of each row.

    OMP_NUM_THREADS=1 python benchmarks/arena_2d.py --models made,nade,vae,iwae,ae,gan,wgan-gp --data eight-gaussians
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from genzoo.cli import main as genzoo

ARENA_MODELS = ("made", "nade", "vae", "iwae", "ae", "gan", "wgan-gp")
DATASETS = ("eight-gaussians", "checkerboard", "two-moons", "rings")


def run(model: str, data: str, epochs: int, out: Path) -> dict:
    """Train (unless already trained in ``out``) and return its metrics.json with the wall time."""
    run_dir = out / f"{model}-{data}"
    if not (run_dir / "metrics.json").exists():
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            code = genzoo(["train", model, "--data", data, "--epochs", str(epochs), "--lr-schedule", "cosine",
                           "--out", str(run_dir)])
        if code != 0:
            raise SystemExit(f"training {model} on {data} failed")
        (run_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_seconds"] = float((run_dir / "wall_seconds.txt").read_text())
    return metrics


def number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ARENA_MODELS))
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="runs/arena")
    args = parser.parse_args()
    print("| dataset | model | likelihood | test NLL (nats) | KL(data‖model) (nats) | sliced W2 | MMD² | histogram KL (nats) | budget |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for data in args.data.split(","):
        for model in args.models.split(","):
            m = run(model, data, args.epochs, Path(args.out))
            kl = "-" if m.get("kl_nats") is None else f"{m['kl_nats']:.3f} ± {m['kl_std_err']:.3f}"
            print(f"| {data} | {model} | {m['likelihood']} | {number(m.get('nll_nats'))} | {kl} | "
                  f"{number(m['sliced_wasserstein'])} | {number(m['mmd2'], 4)} | {number(m['histogram_kl_nats'])} | "
                  f"{args.epochs} epochs, {m['train_steps']:,} steps, {m['wall_seconds'] / 60:.1f} min |", flush=True)


if __name__ == "__main__":
    main()
