"""genzoo's Bernoulli RBM against scikit-learn's ``BernoulliRBM`` on binarized MNIST: time per epoch, exact test NLL.

Both train by persistent contrastive divergence (PCD-1, Tieleman 2008), scikit-learn's only algorithm, with the
same H hidden units, batch size B, number of epochs (an epoch: 50,000 // B steps) and persistent chains (B: the
size of scikit-learn's ``h_samples_``), on one thread each, each library at its own usual optimiser:

- genzoo: ``genzoo.train.train("rbm", ...)`` with ``training=pcd``, Adam at the ``rbm-25-exact`` recipe's rate
  (3e-3, cosine decay to 0), visible biases started at the first batch's pixel logits, a fresh permutation of the
  data every epoch. Its time is the trainer's own clock (``Trainer.train_seconds``) read after the last epoch's
  checkpoint: the optimizer steps, the log rows and one small checkpoint per epoch (weights, Adam state, chains),
  not the setup, nor what ``fit`` does after the last step (the base-rate fit for AIS, 64 final samples of 1,000
  Gibbs steps checked for symptoms), which ``summary["seconds"]`` includes (in the JSON as ``summary_seconds``).
  ``train`` writes no figures and evaluates nothing (``genzoo.runs.train_run`` does both, after training).
- scikit-learn: ``BernoulliRBM(n_components=H, learning_rate=0.1, batch_size=B, n_iter=epochs).fit(x)``, plain
  SGD at its documented default rate 0.1 on the batch-mean gradient, zero biases, batches in file order every
  epoch; timed with ``time.perf_counter`` around ``fit``, which also validates x (float32, kept as such: the
  dtype genzoo trains in; float64 input makes it train in float64) and draws its start.

So the times compare the same algorithm (one Gibbs step, one gradient step a batch) with different updates: an
Adam step costs a little more than SGD's, and genzoo's trainer adds its per-step bookkeeping (finite checks, the
running log, reseeding). The NLL compares the two libraries' recipes, not the algorithm: Adam 3e-3 and SGD 0.1
are each library's default, not tuned against each other, and 5 epochs is short for both.

The ruler is the same for both: the mean -log p(v) = F(v) + log Z over the whole test split, in float64, with
genzoo's ``free_energy`` and ``exact_log_partition`` (2^H hidden states enumerated; H <= 25) applied to each
trained model's weights (scikit-learn's ``components_`` (H, D), ``intercept_visible_``, ``intercept_hidden_``).
The test file is absent from the data directory, so genzoo's loader lets the validation split stand in (10,000
images, never trained on); its source sentence is printed. scikit-learn's own ``score_samples`` is a
pseudo-likelihood (one flipped pixel per example, times D), not log p(v), and is not comparable: it is not used.

Measured on the 2-core machine with nothing else running, torch 2.13, scikit-learn 1.9.1, after the trainer
stopped unwrapping its model every step (with it, and two other jobs running: 3.09 s an epoch, 0.30x):

    OMP_NUM_THREADS=1 python benchmarks/rbm_vs_sklearn.py --epochs 5

    | library      | H  | epochs | steps | optimiser         | s/epoch | test NLL (exact, nats) | log Z  | sklearn / genzoo |
    | genzoo       | 20 | 5      | 2,500 | Adam 3e-3, cosine | 1.984   | 158.73                 | 159.10 | 1.00x            |
    | scikit-learn | 20 | 5      | 2,500 | SGD 0.1           | 0.740   | 207.23                 | 228.52 | 0.37x            |

genzoo is 2.7x slower a step (4.0 ms against 1.5 ms). At H = 20 the arithmetic is tiny and the trainer's
per-step overhead dominates: ``torch.manual_seed`` (~0.25 ms: it also seeds CUDA, XPU and MTIA lazily, capturing a
stack each time; it makes resume bit-exact), ``torch.bernoulli`` on (100, 784) (~1 ms, twice ``torch.rand(...) <
p``), autograd's backward, ``zero_grad`` and the AdamW step, where scikit-learn does three small matrix products and
one uniform draw.

scikit-learn's model is no better than independent pixels (206.32 nats on this split): its 20 hidden units are
nearly copies of one another (mean cosine 0.997 between rows of ``components_``). Every unit starts at N(0, 0.01^2)
weights, zero biases and zero persistent hidden states, and the same-sized SGD steps on nearly equal gradients do
not break that symmetry in 2,500 steps (rates 0.01 and 0.03 give 206.8 and 206.6). At its default batch of 10
(25,000 steps, 10 chains) the units differ (mean cosine 0.34) and it reaches 196.4 nats, still far from genzoo's
158.7, whose Adam rescales each weight's step and whose visible biases start at the pixel logits.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_info, threadpool_limits
from torch import Tensor

from genzoo.data.core import prepare
from genzoo.data.registry import load_split
from genzoo.evaluate.likelihood import fixed_inputs
from genzoo.models.energy.partition import (
    MAX_ENUMERATED,
    exact_log_partition,
    free_energy,
)
from genzoo.train import train

DATA = "binarized_mnist"
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repository
GENZOO_LR = 3e-3  # Adam, the rbm-25-exact recipe's rate (genzoo.models.energy.recipes), with its cosine decay
GENZOO_SCHEDULE = "cosine"
SKLEARN_LR = 0.1  # BernoulliRBM's default learning_rate


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def exact_nll(weight: Tensor, visible_bias: Tensor, hidden_bias: Tensor, v: Tensor) -> tuple[float, float]:
    """(mean -log p(v) in nats over v (N, D), log Z), in float64, log Z by enumerating the 2^H hidden states."""
    w, b, c = (t.double() for t in (weight, visible_bias, hidden_bias))
    log_z = exact_log_partition(w, b, c)
    return free_energy(v.double(), w, b, c).mean().item() + log_z, log_z


def run_genzoo(args: argparse.Namespace) -> dict:
    checkpoints = []  # the trainer's training seconds at each end-of-epoch checkpoint
    with tempfile.TemporaryDirectory() as out:
        trainer, summary = train(
            "rbm", out, {"hidden_dim": args.hidden, "training": "pcd", "chains": args.batch_size},
            data=DATA, data_root=str(args.data_root), batch_size=args.batch_size, epochs=args.epochs,
            lr=args.genzoo_lr, lr_schedule=GENZOO_SCHEDULE,
            callbacks=[lambda t: checkpoints.append(t.train_seconds())])
    model = trainer.final_model
    return {"seconds": checkpoints[-1], "epoch_seconds": np.diff([0.0, *checkpoints]).tolist(),
            "summary_seconds": summary["seconds"], "steps": summary["steps"],
            "weights": (model.weight.detach(), model.visible_bias.detach(), model.hidden_bias.detach())}


def run_sklearn(x: np.ndarray, args: argparse.Namespace) -> dict:
    rbm = BernoulliRBM(n_components=args.hidden, learning_rate=args.sklearn_lr, batch_size=args.batch_size,
                       n_iter=args.epochs, random_state=args.seed)
    began = time.perf_counter()
    rbm.fit(x)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "steps": args.epochs * -(-len(x) // args.batch_size),
            "weights": tuple(torch.from_numpy(a) for a in (rbm.components_, rbm.intercept_visible_,
                                                           rbm.intercept_hidden_))}


def results_table(rows: list[dict]) -> str:
    header = "| library | H | epochs | steps | optimiser | s/epoch | test NLL (exact, nats) | log Z | sklearn / genzoo |"
    lines = [header, "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['library']} | {r['hidden']} | {r['epochs']} | {r['steps']:,} | {r['optimiser']} | "
                     f"{r['seconds_per_epoch']:.3f} | {r['test_nll']:.2f} | {r['log_z']:.2f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="holds binarized_mnist/")
    p.add_argument("--hidden", type=int, default=20, help=f"H, hidden units (at most {MAX_ENUMERATED}: exact log Z)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the 50,000 training images, both libraries")
    p.add_argument("--batch-size", type=int, default=100, help="B, both libraries; also genzoo's persistent chains")
    p.add_argument("--genzoo-lr", type=float, default=GENZOO_LR, help=f"genzoo's Adam rate ({GENZOO_SCHEDULE} decay)")
    p.add_argument("--sklearn-lr", type=float, default=SKLEARN_LR, help="scikit-learn's SGD rate")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads and threadpoolctl's limit")
    p.add_argument("--seed", type=int, default=0, help="scikit-learn's random_state (genzoo's seed is its default, 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not 1 <= args.hidden <= MAX_ENUMERATED:
        p.error(f"--hidden {args.hidden}: exact log Z enumerates 2^H states, H in 1..{MAX_ENUMERATED}")
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--epochs, --batch-size and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(limits=args.threads):  # every BLAS and OpenMP pool, numpy's included
            return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    info, train_split = load_split(DATA, "train", str(args.data_root))
    _, test_split = load_split(DATA, "test", str(args.data_root))
    x_train = prepare(train_split.images, info, "binary", train=True).reshape(len(train_split), -1)  # (N, D) {0, 1}
    x_test = fixed_inputs(test_split, info, "binary")[0].reshape(len(test_split), -1)
    progress(f"train: {train_split.source}\ntest: {test_split.source}")

    progress(f"genzoo: {args.epochs} epochs of PCD-1, H = {args.hidden}, B = {args.batch_size}")
    genzoo = run_genzoo(args)
    progress(f"scikit-learn: {args.epochs} epochs of PCD-1, H = {args.hidden}, B = {args.batch_size}")
    sklearn = run_sklearn(x_train.numpy(), args)

    optimisers = {"genzoo": f"Adam {args.genzoo_lr:g}, {GENZOO_SCHEDULE}", "scikit-learn": f"SGD {args.sklearn_lr:g}"}
    rows = []
    for library, result in (("genzoo", genzoo), ("scikit-learn", sklearn)):
        progress(f"exact NLL of {library}'s model: log Z over 2^{args.hidden} hidden states")
        nll, log_z = exact_nll(*result.pop("weights"), x_test)
        rows.append({"library": library, "hidden": args.hidden, "epochs": args.epochs, "optimiser": optimisers[library],
                     "seconds_per_epoch": result["seconds"] / args.epochs,
                     "ratio": result["seconds"] / genzoo["seconds"], "test_nll": nll, "log_z": log_z, **result})

    settings = {"threads": args.threads, "batch_size": args.batch_size, "chains": args.batch_size,
                "train": train_split.source, "test": test_split.source, "test_images": len(test_split),
                **{lib: importlib.metadata.version(lib) for lib in ("genzoo", "torch", "scikit-learn", "numpy")}}
    print(f"\n## PCD-1 on binarized MNIST: genzoo against scikit-learn BernoulliRBM, H = {args.hidden}\n")
    print(results_table(rows))
    print()
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"sklearn / genzoo > 1: genzoo is faster. The NLL is -log p(v) on the {len(test_split):,} test images, "
          "log Z enumerated in float64, the same code for both models.")
    pools = [{key: pool.get(key) for key in ("user_api", "internal_api", "num_threads", "version")}
             for pool in threadpool_info()]
    result = {"settings": settings, "rows": rows, "threadpools": pools, "seconds": time.perf_counter() - started}
    print(f"total {result['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
