"""Evaluation as pure functions of a model and a split: likelihood bounds in nats and bits/dim.

The one place where the data's discretisation enters the numbers: ``fixed_inputs`` turns a
split into the representation the model's likelihood is defined on (statically binarised, or
dequantised with a fixed seed), and ``likelihood_metrics`` adds ``nats_offset`` for continuous
densities on discrete data before converting to bits/dim.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genzoo.data import DataInfo, Split, bits_per_dim, nats_offset, prepare, static_binarize
from genzoo.models.base import GenerativeModel

DEQUANTIZATION_SEED = 0  # held-out data is dequantised with this fixed seed


def progress_interval() -> float:
    """Seconds between progress-bar refreshes: live on a terminal, sparse in a log file."""
    return 0.5 if sys.stderr.isatty() else 30.0


def fixed_inputs(split: Split, info: DataInfo, kind: str, limit: int | None = None) -> tuple[Tensor, Split, DataInfo]:
    """Deterministic model inputs for a split: (inputs (N, C, H, W), split, info as seen).

    8-bit data for a binary likelihood is statically binarised as a whole split, before any
    ``limit`` takes its fixed random subset, so an image is binarised the same way in every
    evaluation (the returned split and info say so). Dequantisation noise comes from a generator
    seeded ``DEQUANTIZATION_SEED``.
    """
    if kind == "binary" and info.value_type != "binary":
        info, split = static_binarize(split, info)
    split = split.subset(limit)
    generator = torch.Generator(split.images.device).manual_seed(DEQUANTIZATION_SEED)
    return prepare(split.images, info, kind, train=False, generator=generator), split, info


def batches(x: Tensor, y: Tensor | None, batch_size: int):
    """(x, y) in consecutive batches."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], None if y is None else y[start:start + batch_size]


@torch.no_grad()
def likelihood_metrics(model: GenerativeModel, split: Split, info: DataInfo, iw_samples: int = 1000,
                       batch_size: int = 100, seed: int = 0, limit: int | None = None,
                       progress: bool = False) -> dict:
    """Negative ELBO and importance-sampled NLL of ``split`` under ``model``, per example.

    ``limit`` evaluates a fixed random subset (see ``Split.subset``), which the result says.
    ``progress`` shows a progress bar on stderr.
    Returns nats and bits/dim for each bound the model has, with ``None`` for what it lacks,
    and says which split, how many examples and which data representation were used. Runs in
    fp32 and in batches, so memory is bounded by ``batch_size`` x the model's own chunking.
    """
    was_training = model.training
    model.eval()
    x, split, seen_info = fixed_inputs(split, info, model.input_kind, limit)
    device = model.device
    generator = torch.Generator(device).manual_seed(seed)
    offset = nats_offset(seen_info, model.input_kind)
    totals = {"elbo": 0.0, "iw": 0.0}
    kind, reason = "unavailable", ""
    for xb, yb in tqdm(batches(x, split.labels, batch_size), total=-(-len(x) // batch_size), disable=not progress,
                       desc=f"evaluating on {split.split}", leave=False, mininterval=progress_interval()):
        xb = xb.to(device)
        yb = None if yb is None or not model.conditional else yb.to(device)
        elbo = model.log_likelihood(xb, yb, num_samples=1, generator=generator)
        if elbo.value is None:
            kind, reason = elbo.kind, elbo.reason
            break
        totals["elbo"] += elbo.value.double().sum().item()
        exact_or_single = elbo.kind == "exact" or iw_samples <= 1
        iw = elbo if exact_or_single else model.log_likelihood(xb, yb, num_samples=iw_samples, generator=generator)
        totals["iw"] += iw.value.double().sum().item()
        kind, reason = iw.kind, iw.reason
    model.train(was_training)

    n = len(x)
    metrics = {
        "split": split.split,
        "split_source": split.source,
        "num_examples": n,
        "data": seen_info.name,
        "data_representation": model.input_kind,
        "likelihood": kind,
        "likelihood_method": reason,
        "conditional": model.conditional,
    }
    if kind == "unavailable":
        metrics.update(nll_nats=None, bits_per_dim=None, neg_elbo_nats=None, neg_elbo_bits_per_dim=None)
        return metrics
    nll = -totals["iw"] / n + offset
    metrics.update(nll_nats=nll, bits_per_dim=bits_per_dim(nll, seen_info), dequantization_nats=offset)
    if kind == "lower_bound":  # a latent-variable model: report the ELBO beside the IS estimate
        neg_elbo = -totals["elbo"] / n + offset
        metrics.update(neg_elbo_nats=neg_elbo, neg_elbo_bits_per_dim=bits_per_dim(neg_elbo, seen_info),
                       iw_samples=iw_samples)
    else:
        metrics.update(neg_elbo_nats=None, neg_elbo_bits_per_dim=None)
    return metrics


def format_metrics(metrics: dict) -> str:
    """A few readable lines of a metrics dict."""
    lines = [f"{metrics['split']} split: {metrics['num_examples']:,} examples ({metrics['split_source']})"]
    if metrics.get("nll_nats") is None:
        lines.append(f"no likelihood: {metrics['likelihood_method']}")
        return "\n".join(lines)
    if metrics.get("neg_elbo_nats") is not None:
        lines.append(f"negative ELBO      {metrics['neg_elbo_nats']:9.2f} nats  {metrics['neg_elbo_bits_per_dim']:.4f} bits/dim")
    label = f"NLL (IS, K={metrics['iw_samples']})" if "iw_samples" in metrics else "NLL (exact)"
    lines.append(f"{label:<18} {metrics['nll_nats']:9.2f} nats  {metrics['bits_per_dim']:.4f} bits/dim")
    return "\n".join(lines)

