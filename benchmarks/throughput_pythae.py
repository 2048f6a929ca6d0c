"""Training throughput of genzoo against pythae 0.1.2 at a matched model, loss and batch size.

Both libraries train the same Bernoulli VAE on statically binarized MNIST: an MLP encoder
784-H-H-2d (mean and log-variance of q(z|x)), an MLP decoder d-H-H-784 (pixel logits), ReLU,
one reparameterised sample, closed-form KL to N(0, I), Adam at lr 1e-3, batch B. Two rows:

1. ``step``: the bare optimizer step (loss, backward, update) on identical pre-made batches.
   The two libraries run alternating blocks of steps, so machine noise hits both alike; each
   library's rate is the median over the blocks.
2. ``trainer``: each library's own training pipeline (genzoo ``train``, pythae
   ``TrainingPipeline``) over the same number of examples, timed around the training call only,
   run twice alternately and the faster kept.

The objectives agree term for term; the script checks it numerically (same weights, same noise)
before timing. Differences that remain, none of which changes the loss value in practice:

- pythae's "bce" applies ``F.binary_cross_entropy`` to sigmoid outputs (the decoder must return
  probabilities), which clamps each log-probability at -100 nats; genzoo applies
  ``F.binary_cross_entropy_with_logits`` to the logits (exact, and cheaper: no separate sigmoid
  and its backward).
- Both sum the reconstruction term over pixels and the KL over latent dimensions, and average
  the per-example sum over the batch: pythae's ``.loss`` is ``(recon + kl).mean(0)``; genzoo's
  ``loss(x)["loss"]`` is per example and its trainer takes ``.mean()``.
- Optimizer: pythae's trainer uses ``torch.optim.Adam``; genzoo's uses the fused ``AdamW`` kernel
  with ``weight_decay=0``, which is the same update in one pass over the weights. The ``step``
  row gives each library the optimizer its own trainer uses.
- Pipelines: pythae feeds a ``DataLoader`` (per-example ``__getitem__`` and collation over a float
  tensor), deep-copies the model when the epoch loss improves (no eval set: "keep best on
  train") and saves the final model; genzoo indexes one in-memory uint8 tensor per batch,
  converts it to float, logs to CSV and writes its checkpoint at the end. All of that is inside
  the timed call: it is what a user of each library pays.
- pythae's mixed precision (``amp``) is CUDA-only and switched off for "bce"; genzoo's bf16
  autocast runs on the CPU, so ``--precision bf16`` adds a genzoo-only row.

    pip install -e ".[bench]"
    python benchmarks/throughput_pythae.py --threads 2 --json throughput.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

try:
    import pythae  # noqa: F401
    from pythae.data.preprocessors import DataProcessor
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
except ImportError:
    print("this benchmark needs pythae: pip install -e .[bench]", file=sys.stderr)
    sys.exit(2)

from genzoo.data.core import DataInfo, prepare
from genzoo.data.registry import load_split
from genzoo.models.registry import build_model
from genzoo.train.loop import train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data" / "binarized_mnist"
LR = 1e-3


# --- pythae's side of the matched model --------------------------------------------------------
def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them; the same layer order as ``genzoo.networks.mlp``."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PythaeEncoder(BaseEncoder):
    """x (B, 1, 28, 28) -> mean and log-variance of q(z|x), each (B, d): one 2d-wide head, split."""

    def __init__(self, hidden_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp([784, hidden_dim, hidden_dim, 2 * latent_dim])

    def forward(self, x: Tensor) -> ModelOutput:
        mean, logvar = self.net(x.flatten(1)).chunk(2, dim=-1)
        return ModelOutput(embedding=mean, log_covariance=logvar)


class PythaeDecoder(BaseDecoder):
    """z (B, d) -> Bernoulli means (B, 1, 28, 28); pythae's "bce" wants probabilities, not logits."""

    def __init__(self, hidden_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp([latent_dim, hidden_dim, hidden_dim, 784])

    def forward(self, z: Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, 1, 28, 28))


def build_pythae(hidden_dim: int, latent_dim: int) -> PythaeVAE:
    config = PythaeVAEConfig(input_dim=(1, 28, 28), latent_dim=latent_dim, reconstruction_loss="bce")
    return PythaeVAE(config, PythaeEncoder(hidden_dim, latent_dim), PythaeDecoder(hidden_dim, latent_dim))


def genzoo_config(args: argparse.Namespace) -> dict:
    return {"hidden_dim": args.hidden_dim, "latent_dim": args.latent_dim, "num_hidden_layers": 2,
            "architecture": "mlp", "likelihood": "bernoulli"}


def build_genzoo(info: DataInfo, args: argparse.Namespace) -> nn.Module:
    return build_model("vae", info, genzoo_config(args))


# --- 0. the objectives agree --------------------------------------------------------------------
def check_matched(info: DataInfo, x: Tensor, args: argparse.Namespace) -> dict:
    """Same weights, same noise: the two batch losses must agree. Returns both and the sizes."""
    ours = build_genzoo(info, args).to(x.device)
    theirs = build_pythae(args.hidden_dim, args.latent_dim).to(x.device)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    if n_ours != n_theirs:
        raise RuntimeError(f"architectures differ: genzoo {n_ours:,} parameters, pythae {n_theirs:,}")
    theirs.encoder.net.load_state_dict(ours.encoder.head.state_dict())
    theirs.decoder.net.load_state_dict(ours.decoder.net[0].state_dict())
    with torch.no_grad():
        torch.manual_seed(0)
        loss_ours = ours.loss(x)["loss"].mean().item()
        torch.manual_seed(0)  # the same eps: both draw randn of shape (B, d) once
        loss_theirs = theirs({"data": x}).loss.item()
    if abs(loss_ours - loss_theirs) > 1e-3 * abs(loss_ours):
        raise RuntimeError(f"objectives differ: genzoo {loss_ours:.4f}, pythae {loss_theirs:.4f} nats")
    return {"parameters": n_ours, "genzoo_loss": loss_ours, "pythae_loss": loss_theirs}


# --- 1. the optimizer step ----------------------------------------------------------------------
def step_rates(info: DataInfo, x: Tensor, args: argparse.Namespace) -> dict[str, list[float]]:
    """Examples/s of each library's step, one value per block; blocks alternate between libraries."""
    batches = x[: len(x) // args.batch_size * args.batch_size].split(args.batch_size)  # (B, 1, 28, 28) each
    torch.manual_seed(0)
    ours = build_genzoo(info, args).to(x.device).train()
    theirs = build_pythae(args.hidden_dim, args.latent_dim).to(x.device).train()
    steps = {
        # each library with the optimizer its trainer uses: genzoo's fused AdamW (weight decay 0,
        # the same update as Adam in one pass over the weights), pythae's torch.optim.Adam
        "genzoo": (ours, torch.optim.AdamW(ours.parameters(), lr=LR, weight_decay=0.0, fused=True),
                   lambda model, xb: model.loss(xb)["loss"].mean()),
        "pythae": (theirs, torch.optim.Adam(theirs.parameters(), lr=LR),
                   lambda model, xb: model({"data": xb}).loss),  # already the batch mean
    }
    cursor = {name: 0 for name in steps}

    def block(name: str, n: int) -> float:
        model, optimizer, loss_fn = steps[name]
        start = time.perf_counter()
        for _ in range(n):
            xb = batches[cursor[name] % len(batches)]
            cursor[name] += 1
            loss = loss_fn(model, xb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()  # wait for the last step (a no-op on the CPU, a sync on a GPU)
        return n * args.batch_size / (time.perf_counter() - start)

    for name in steps:  # warm-up: allocator, kernels, Adam state
        block(name, args.warmup)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for round_ in range(args.rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:  # alternate who goes first
            rates[name].append(block(name, args.steps))
    return rates


# --- 2. each library's own trainer --------------------------------------------------------------
def run_genzoo_trainer(args: argparse.Namespace, precision: str) -> float:
    """Seconds for genzoo's ``train`` over ``epochs x examples`` examples (it draws from the full split)."""
    max_steps = args.epochs * (args.examples // args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train("vae", Path(tmp) / "run", genzoo_config(args), data="binarized_mnist", data_root=str(args.data_root),
              max_steps=max_steps, batch_size=args.batch_size, lr=LR, precision=precision,
              log_every=max(1, max_steps // 10))
        return time.perf_counter() - start


def run_pythae_trainer(x: Tensor, args: argparse.Namespace) -> float:
    """Seconds for pythae's ``TrainingPipeline`` over ``epochs x examples`` examples, no eval set."""
    dataset = DataProcessor.to_dataset(x)  # in memory already, as genzoo's split is
    model = build_pythae(args.hidden_dim, args.latent_dim)
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(output_dir=tmp, num_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                                   learning_rate=LR, no_cuda=not torch.cuda.is_available(),
                                   steps_saving=None, steps_predict=None)
        pipeline = TrainingPipeline(model=model, training_config=config)
        start = time.perf_counter()
        pipeline(train_data=dataset, eval_data=None)
        return time.perf_counter() - start


def trainer_seconds(x: Tensor, args: argparse.Namespace) -> dict[str, float]:
    """The faster of ``--trainer-runs`` alternating runs of each pipeline."""
    runs = {"genzoo": lambda: run_genzoo_trainer(args, "fp32"), "pythae": lambda: run_pythae_trainer(x, args)}
    if args.precision == "bf16":
        runs["genzoo bf16"] = lambda: run_genzoo_trainer(args, "bf16")
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.trainer_runs):
        for name, run in runs.items():
            seconds[name].append(run())
    return {name: min(values) for name, values in seconds.items()}


# --- report -------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = ["| library | measurement | examples/s | genzoo / pythae |", "|---|---|---:|---:|"]
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        lines.append(f"| {row['library']} | {row['measurement']} | {row['examples_per_s']:,.0f} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="directory with binarized_mnist_train.amat[.gz]")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--examples", type=int, default=10_000, help="examples per trainer epoch (a fixed subset)")
    p.add_argument("--epochs", type=int, default=1, help="trainer epochs over --examples")
    p.add_argument("--rounds", type=int, default=5, help="alternating blocks of optimizer steps per library")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps per block")
    p.add_argument("--warmup", type=int, default=20, help="untimed optimizer steps per library first")
    p.add_argument("--trainer-runs", type=int, default=2, help="alternating runs of each trainer; the faster is kept")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16 adds a genzoo-only trainer row (pythae's amp is CUDA-only)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    for name in ("batch_size", "hidden_dim", "latent_dim", "examples", "epochs", "rounds", "steps", "trainer_runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.examples < args.batch_size:
        p.error(f"--examples {args.examples} is smaller than --batch-size {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.getLogger("pythae").setLevel(logging.WARNING)  # its INFO banners, not its progress bars

    info, split = load_split("binarized_mnist", "train", str(args.data_root), download=False)
    if args.examples > len(split):
        raise SystemExit(f"--examples {args.examples} exceeds the {len(split):,} training images")
    n = args.examples // args.batch_size * args.batch_size  # whole batches: neither side trains a partial one
    x = prepare(split.images[:n], info, "binary", train=True)  # (n, 1, 28, 28) float32 in {0, 1}

    device = "cuda" if torch.cuda.is_available() else "cpu"  # where both trainers run
    matched = check_matched(info, x[: args.batch_size].to(device), args)
    rates = step_rates(info, x.to(device), args)
    step = {name: statistics.median(values) for name, values in rates.items()}
    seconds = trainer_seconds(x, args)
    trainer = {name: args.epochs * n / s for name, s in seconds.items()}

    rows = [
        {"library": "genzoo", "measurement": "step", "examples_per_s": step["genzoo"],
         "ratio": step["genzoo"] / step["pythae"]},
        {"library": "pythae", "measurement": "step", "examples_per_s": step["pythae"], "ratio": None},
        {"library": "genzoo", "measurement": "trainer", "examples_per_s": trainer["genzoo"],
         "ratio": trainer["genzoo"] / trainer["pythae"]},
        {"library": "pythae", "measurement": "trainer", "examples_per_s": trainer["pythae"], "ratio": None},
    ]
    if "genzoo bf16" in trainer:
        rows.append({"library": "genzoo bf16 (genzoo only)", "measurement": "trainer",
                     "examples_per_s": trainer["genzoo bf16"], "ratio": trainer["genzoo bf16"] / trainer["pythae"]})
    settings = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "hidden_dim": args.hidden_dim,
        "latent_dim": args.latent_dim, "examples": args.examples, "epochs": args.epochs, "rounds": args.rounds,
        "steps": args.steps, "warmup": args.warmup, "trainer_runs": args.trainer_runs, "precision": args.precision,
        "device": device, "torch": torch.__version__,
        "pythae": importlib.metadata.version("pythae"), "genzoo": importlib.metadata.version("genzoo"),
        "parameters": matched["parameters"],
    }
    result = {"settings": settings, "rows": rows, "step_blocks": rates, "trainer_seconds": seconds,
              "matched_loss": {k: matched[k] for k in ("genzoo_loss", "pythae_loss")}}

    print()
    print(table(rows))
    print()
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"matched objective on one batch (same weights and noise): genzoo {matched['genzoo_loss']:.4f}, "
          f"pythae {matched['pythae_loss']:.4f} nats")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
