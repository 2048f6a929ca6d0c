"""genzoo's flows against normflows 1.7.3 and zuko 1.6.0: training speed, test NLL and sampling speed.

Three comparisons, each in one process, on the same data, batches, optimizer (Adam, lr 1e-3), number
of steps and seed (``torch.manual_seed(seed)`` before each model is built):

1. RealNVP on two-moons (2-D): genzoo ``realnvp`` (couplings 8, hidden 64, blocks 2) vs
   ``zuko.flows.RealNVP(2, transforms=8, hidden_features=(64, 64))`` vs normflows' RealNVP written
   from 8 ``AffineCouplingBlock``s with ``MLP([1, 64, 64, 2], init_zeros=True)`` (exp scale map).
2. MAF on two-moons: genzoo ``maf`` (layers 5, hidden 64, blocks 2, actnorm false) vs
   ``zuko.flows.MAF(2, transforms=5, hidden_features=(64, 64))`` vs normflows'
   ``Reverse(MaskedAffineAutoregressive(2, 64, num_blocks=2, use_residual_blocks=False))`` with swaps
   between layers. The ``Reverse`` makes it a true MAF (density in one pass, D passes to sample);
   normflows' own examples use the layer unwrapped, which is an IAF. Its scale is
   sigmoid(.) + 1e-3 < 1.001, so in the MAF direction each layer can only contract: a worse NLL is expected.
3. Glow on 8-bit MNIST: genzoo ``glow`` (levels 2, steps 4, hidden 64, blocks 1) vs normflows'
   ``MultiscaleFlow`` of ``GlowBlock``s (L=2, K=4, hidden 64) with ``transform=nf.transforms.Logit(0.05)``,
   the same logit genzoo's glow applies inside the flow, so both NLLs are nats of the density of the
   dequantised image scaled to [0, 1]. zuko has no convolutional or multi-scale flow, so it has no row.
   Both initialise ActNorm from the first training batch (genzoo: ``model.initialize``; normflows: on
   its first call). Architectural differences that remain: genzoo's coupling nets read the whole
   (masked) input and output parameters for every channel (2x the first and last conv's work),
   scale = exp(soft-clamped log-scale) vs normflows' sigmoid; genzoo's factored-out half has Glow's
   learned conditional prior N(mu(h), sigma(h)^2), normflows' levels a learned diagonal Gaussian.
   genzoo is also timed once under ``torch.autocast("cpu", torch.bfloat16)``: a short probe on copies
   of the trained model, reported below the table (and as a table row only if it is faster).

Columns: trainable parameters; training examples/s at the median step after ``--warmup`` (each step
timed alone: the implementations take turns step by step, in a rotating order, so machine noise hits
them alike); genzoo / peer for that rate (> 1: genzoo is faster); the test NLL after the same
steps, nats per example (two-moons: the 10,000-point test split, whose true entropy, the lowest
possible NLL, is printed; MNIST: the 1,000-image test split dequantised once with a fixed seed, also
in bits/dim = (nll + 784 ln 256) / (784 ln 2)); samples/s (10,000 points or 64 images, the median of
``--sample-reps`` alternating draws) and genzoo / peer for it. A model whose loss stops being finite
stops training and is marked "diverged".

    pip install -e ".[test]"       # normflows==1.7.3, zuko==1.6.0
    OMP_NUM_THREADS=1 python benchmarks/flows_vs_peers.py --threads 1
    OMP_NUM_THREADS=1 python benchmarks/flows_vs_peers.py --threads 1 --steps 2000 --mnist-steps 500 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

try:
    import normflows as nf
    import zuko
except ImportError:
    print("this benchmark needs normflows and zuko: pip install -e .[test]", file=sys.stderr)
    sys.exit(2)
warnings.filterwarnings("ignore", message="torch.lu is deprecated")  # normflows' Invertible1x1Conv calls Q.lu()

from genzoo.data.core import prepare
from genzoo.data.registry import dataset_info, load_split
from genzoo.data.toy2d import get_toy2d
from genzoo.models.registry import build_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
LR = 1e-3
EVAL_NOISE_SEED = 1234  # the dequantisation of the MNIST test split, the same for every model
MNIST_D = 784


@dataclass
class Contender:
    """One implementation: its model, per-example NLL (B,) nats, sampler, optimizer and timings."""

    task: str
    library: str
    label: str
    model: nn.Module
    nll: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]
    autocast: bool = False
    optimizer: torch.optim.Optimizer | None = None
    step_seconds: list[float] = field(default_factory=list)
    diverged_at: int | None = None
    test_nll: float = math.nan
    sample_seconds: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def step(self, x: Tensor) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast):
            loss = self.nll(x).float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        seconds = time.perf_counter() - start
        return seconds if torch.isfinite(loss) else math.nan


# --- the peers' models -----------------------------------------------------------------------------
def nf_realnvp(couplings: int, hidden: int) -> nn.Module:
    flows = [nf.flows.AffineCouplingBlock(nf.nets.MLP([1, hidden, hidden, 2], init_zeros=True), scale_map="exp",
                                          split_mode="channel" if i % 2 == 0 else "channel_inv")
             for i in range(couplings)]
    return nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(2, trainable=False), flows=flows)


def nf_maf(layers: int, hidden: int) -> nn.Module:
    flows = []
    for i in range(layers):
        flows.append(nf.flows.Reverse(nf.flows.MaskedAffineAutoregressive(2, hidden, num_blocks=2,
                                                                          use_residual_blocks=False)))
        if i < layers - 1:
            flows.append(nf.flows.Permute(2, mode="swap"))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def nf_glow(levels: int, steps: int, hidden: int, shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    """normflows' multiscale Glow (its example and test); level 0 is the coarsest."""
    c, h, w = shape
    q0, merges, flows = [], [], []
    for i in range(levels):
        flows.append([nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
                      for _ in range(steps)] + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), h // 2 ** levels, w // 2 ** levels)
        q0.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(alpha=0.05), class_cond=False)


def genzoo_contender(task: str, label: str, name: str, dataset: str, config: dict, seed: int,
                     autocast: bool = False) -> Contender:
    torch.manual_seed(seed)
    model = build_model(name, dataset_info(dataset), config)
    return Contender(task, "genzoo", label, model, lambda x: model.loss(x)["loss"],
                     lambda n: model.sample(n, generator=torch.Generator().manual_seed(seed)), autocast)


def zuko_contender(task: str, label: str, flow: nn.Module) -> Contender:
    return Contender(task, "zuko", label, flow, lambda x: -flow().log_prob(x), lambda n: flow().sample((n,)))


def nf_contender(task: str, label: str, model: nn.Module, image: bool = False) -> Contender:
    if image:
        return Contender(task, "normflows", label, model, lambda x: -model.log_prob(x, None),
                         lambda n: model.sample(n)[0])
    return Contender(task, "normflows", label, model, lambda x: -model.log_prob(x), lambda n: model.sample(n)[0])


# --- the shared protocol -------------------------------------------------------------------------
def batch_indices(n: int, batch: int, steps: int, seed: int) -> list[Tensor]:
    """``steps`` batches of indices into n examples, epoch after epoch of fixed-seed permutations."""
    generator = torch.Generator().manual_seed(seed)
    order, out = torch.empty(0, dtype=torch.long), []
    for _ in range(steps):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        out.append(order[:batch])
        order = order[batch:]
    return out


def train_interleaved(contenders: list[Contender], batches: Callable[[int], Tensor], steps: int, warmup: int) -> None:
    """Every contender takes step i on the same batch before anyone takes step i + 1; the order rotates."""
    for i in range(steps):
        x = batches(i)
        k = i % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            if c.diverged_at is not None:
                continue
            seconds = c.step(x)
            if math.isnan(seconds):
                c.diverged_at = i
            elif i >= warmup:
                c.step_seconds.append(seconds)


@torch.no_grad()
def evaluate(contenders: list[Contender], x: Tensor, chunk: int) -> None:
    for c in contenders:
        c.model.eval()
        c.test_nll = torch.cat([c.nll(part).double() for part in x.split(chunk)]).mean().item()


@torch.no_grad()
def time_sampling(contenders: list[Contender], n: int, reps: int) -> None:
    for c in contenders:  # one untimed draw each: first-call overheads
        c.sample(n)
    for r in range(reps):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            start = time.perf_counter()
            s = c.sample(n)
            c.sample_seconds.append(time.perf_counter() - start)
            if s.shape[0] != n:
                raise SystemExit(f"{c.label} drew {s.shape[0]} samples, not {n}")


def rate(c: Contender, batch: int) -> float:
    """Examples per second at the median timed step (robust to a busy machine's spikes)."""
    return batch / statistics.median(c.step_seconds) if c.step_seconds else math.nan


def rows_of(contenders: list[Contender], batch: int, samples: int, image: bool) -> list[dict]:
    genzoo = contenders[0]
    g_train, g_sample = rate(genzoo, batch), samples / statistics.median(genzoo.sample_seconds)
    rows = []
    for c in contenders:
        train = rate(c, batch)
        sample = samples / statistics.median(c.sample_seconds)
        peer = c is not genzoo
        rows.append({"task": c.task, "library": c.library, "model": c.label, "params": c.params,
                     "train_examples_per_s": train, "train_ratio": g_train / train if peer else None,
                     "test_nll": c.test_nll,
                     "bits_per_dim": (c.test_nll + MNIST_D * math.log(256)) / (MNIST_D * math.log(2)) if image else None,
                     "samples_per_s": sample, "sample_ratio": g_sample / sample if peer else None,
                     "diverged_at": c.diverged_at, "timed_steps": len(c.step_seconds)})
    return rows


# --- the three comparisons -----------------------------------------------------------------------
def moons_data(args) -> tuple[Tensor, Tensor]:
    _, train = load_split("two-moons", "train")
    _, test = load_split("two-moons", "test")
    return train.images, test.images


def compare_2d(task: str, contenders: list[Contender], args, train: Tensor, test: Tensor) -> list[dict]:
    index = batch_indices(len(train), args.batch_size, args.steps, args.seed)
    train_interleaved(contenders, lambda i: train[index[i]], args.steps, args.warmup)
    evaluate(contenders, test, len(test))
    time_sampling(contenders, args.samples_2d, args.sample_reps)
    return rows_of(contenders, args.batch_size, args.samples_2d, image=False)


def realnvp_2d(args, train: Tensor, test: Tensor) -> list[dict]:
    task = "RealNVP, two-moons"
    config = {"couplings": 8, "hidden": 64, "blocks": 2}
    contenders = [genzoo_contender(task, "genzoo realnvp (8 couplings, MLP 2-64-64-4)", "realnvp", "two-moons",
                                   config, args.seed)]
    torch.manual_seed(args.seed)
    contenders.append(zuko_contender(task, "zuko RealNVP(2, transforms=8, hidden (64, 64))",
                                     zuko.flows.RealNVP(2, transforms=8, hidden_features=(64, 64))))
    torch.manual_seed(args.seed)
    contenders.append(nf_contender(task, "normflows 8 AffineCouplingBlock, MLP [1,64,64,2] zero-init, exp",
                                   nf_realnvp(8, 64)))
    return compare_2d(task, contenders, args, train, test)


def maf_2d(args, train: Tensor, test: Tensor) -> list[dict]:
    task = "MAF, two-moons"
    config = {"layers": 5, "hidden": 64, "blocks": 2, "actnorm": False}
    contenders = [genzoo_contender(task, "genzoo maf (5 layers, MADE 64-64, no actnorm)", "maf", "two-moons",
                                   config, args.seed)]
    torch.manual_seed(args.seed)
    contenders.append(zuko_contender(task, "zuko MAF(2, transforms=5, hidden (64, 64))",
                                     zuko.flows.MAF(2, transforms=5, hidden_features=(64, 64))))
    torch.manual_seed(args.seed)
    contenders.append(nf_contender(task, "normflows 5 Reverse(MaskedAffineAutoregressive, nb=2): true MAF",
                                   nf_maf(5, 64)))
    return compare_2d(task, contenders, args, train, test)


def bf16_probe(genzoo: Contender, images: Tensor, index: list[Tensor], args) -> dict:
    """Copies of the trained genzoo glow, fp32 and under bf16 autocast, take turns for a few steps."""
    probes = []
    for autocast in (False, True):
        model = copy.deepcopy(genzoo.model).train()
        probes.append(Contender(genzoo.task, "genzoo", f"genzoo glow ({'bf16 autocast' if autocast else 'fp32'})",
                                model, lambda x, m=model: m.loss(x)["loss"], genzoo.sample, autocast))
    info = dataset_info("mnist")
    generator = torch.Generator().manual_seed(args.seed + 1)
    steps = args.warmup + args.bf16_steps
    batches = [prepare(images[index[i % len(index)]], info, "continuous", train=True, generator=generator)
               for i in range(steps)]
    train_interleaved(probes, lambda i: batches[i], steps, args.warmup)
    fp32, bf16 = (rate(p, args.mnist_batch_size) for p in probes)
    return {"fp32_examples_per_s": fp32, "bf16_examples_per_s": bf16, "bf16_over_fp32": bf16 / fp32,
            "timed_steps": len(probes[1].step_seconds), "bf16_diverged_at": probes[1].diverged_at}


def glow_mnist(args) -> tuple[list[dict], dict]:
    task = "Glow, MNIST 8-bit"
    info, train = load_split("mnist", "train", str(args.data_root))
    _, test = load_split("mnist", "test", str(args.data_root))
    config = {"levels": 2, "steps": 4, "hidden": 64, "blocks": 1}
    genzoo = genzoo_contender(task, "genzoo glow (L=2, K=4, hidden 64)", "glow", "mnist", config, args.seed)
    torch.manual_seed(args.seed)
    peer = nf_contender(task, "normflows MultiscaleFlow of GlowBlock (L=2, K=4, hidden 64) + Logit(0.05)",
                        nf_glow(2, 4, 64), image=True)
    contenders = [genzoo, peer]
    index = batch_indices(len(train.images), args.mnist_batch_size, args.mnist_steps, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    first = prepare(train.images[index[0]], info, "continuous", train=True, generator=generator)
    cache = {0: first}

    def batch(i: int) -> Tensor:  # each batch dequantised once, the same tensor for both libraries
        if i not in cache:
            cache.clear()
            cache[i] = prepare(train.images[index[i]], info, "continuous", train=True, generator=generator)
        return cache[i]

    genzoo.model.initialize(first)  # ActNorm from batch 0; normflows' ActNorm initialises on that batch too
    train_interleaved(contenders, batch, args.mnist_steps, args.warmup)
    x_test = prepare(test.images, info, "continuous", train=False,
                     generator=torch.Generator().manual_seed(EVAL_NOISE_SEED))
    evaluate(contenders, x_test, 250)
    time_sampling(contenders, args.samples_mnist, args.sample_reps)
    rows = rows_of(contenders, args.mnist_batch_size, args.samples_mnist, image=True)
    probe = bf16_probe(genzoo, train.images, index, args) if args.bf16_steps > 0 else {}
    if probe and probe["bf16_over_fp32"] > 1:  # a throughput-only row: bf16 is worth using here
        rows.insert(1, {**rows[0], "model": "genzoo glow, bf16 autocast (throughput probe only)",
                        "train_examples_per_s": probe["bf16_examples_per_s"], "test_nll": math.nan,
                        "bits_per_dim": None, "samples_per_s": math.nan, "timed_steps": probe["timed_steps"]})
    return rows, probe


# --- output --------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec)


def table(rows: list[dict]) -> str:
    header = "| task | model | params | train ex/s | genzoo / peer | test NLL (nats) | bits/dim | samples/s | genzoo / peer |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        nll = fmt(r["test_nll"], ".3f") + (f" (diverged at step {r['diverged_at']})" if r["diverged_at"] is not None
                                           else "")
        lines.append(f"| {r['task']} | {r['model']} | {r['params']:,} | {fmt(r['train_examples_per_s'], ',.0f')} | "
                     f"{fmt(r['train_ratio'], '.2f')} | {nll} | {fmt(r['bits_per_dim'], '.3f')} | "
                     f"{fmt(r['samples_per_s'], ',.0f')} | {fmt(r['sample_ratio'], '.2f')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, batch order and dequantisation")
    p.add_argument("--steps", type=int, default=1000, help="Adam steps of each 2-D model")
    p.add_argument("--batch-size", type=int, default=256, help="2-D batch size")
    p.add_argument("--mnist-steps", type=int, default=100, help="Adam steps of each Glow")
    p.add_argument("--mnist-batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3, help="steps trained but not timed, at the start")
    p.add_argument("--bf16-steps", type=int, default=4,
                   help="timed steps of the genzoo glow bf16-autocast probe (after --warmup); 0 skips it")
    p.add_argument("--samples-2d", type=int, default=10_000)
    p.add_argument("--samples-mnist", type=int, default=64)
    p.add_argument("--sample-reps", type=int, default=3, help="timed draws per model; the median is shown")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="directory holding mnist/")
    p.add_argument("--only", default="realnvp,maf,glow", help="comma-separated subset of realnvp,maf,glow")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.steps <= args.warmup or args.mnist_steps <= args.warmup:
        p.error(f"--steps and --mnist-steps must exceed --warmup ({args.warmup})")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = set(args.only.split(","))
    started = time.perf_counter()
    rows, probe = [], {}
    if chosen & {"realnvp", "maf"}:
        train, test = moons_data(args)
        if "realnvp" in chosen:
            rows += realnvp_2d(args, train, test)
        if "maf" in chosen:
            rows += maf_2d(args, train, test)
    if "glow" in chosen:
        glow_rows, probe = glow_mnist(args)
        rows += glow_rows
    versions = {lib: importlib.metadata.version(lib) for lib in ("torch", "normflows", "zuko")}
    settings = {"threads": args.threads, "seed": args.seed, "2-D steps": args.steps, "2-D batch": args.batch_size,
                "MNIST steps": args.mnist_steps, "MNIST batch": args.mnist_batch_size, "warmup": args.warmup,
                "optimizer": f"Adam lr {LR}", **versions}
    print()
    print(table(rows))
    print()
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    if chosen & {"realnvp", "maf"}:
        print(f"two-moons: true entropy {get_toy2d('two-moons').entropy:.3f} nats, the lowest test NLL possible")
    if probe:
        print(f"genzoo glow bf16 autocast probe ({probe['timed_steps']} timed steps on copies of the trained model): "
              f"{probe['bf16_examples_per_s']:.0f} ex/s vs fp32 {probe['fp32_examples_per_s']:.0f} ex/s, "
              f"bf16 / fp32 = {probe['bf16_over_fp32']:.2f}"
              + (" (faster: a row above)" if probe["bf16_over_fp32"] > 1 else " (slower: no row)"))
    print(f"total {time.perf_counter() - started:.0f} s")
    result = {"settings": settings, "rows": rows, "bf16_probe": probe}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
