"""Evaluation as pure functions of a model and a split: likelihood bounds in nats and bits/dim.

The one place where the data's discretisation enters the numbers: ``fixed_inputs`` turns a
split into the representation the model's likelihood is defined on (statically binarised, or
dequantised with a fixed seed), and ``likelihood_metrics`` adds ``nats_offset`` for continuous
densities on discrete data before converting to bits/dim.

Sample quality is measured in the feature space of a digit classifier trained on the dataset
itself (``genzoo.feature_net``), by pure functions of two feature matrices: ``frechet_distance``,
``kernel_distance``, ``precision_recall`` and ``classifier_score``; ``sample_quality_metrics``
draws the samples and says which network, layer and sample counts were used.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genzoo.data.core import (
    DataInfo,
    Split,
    bits_per_dim,
    nats_offset,
    prepare,
    static_binarize,
)
from genzoo.models.base import GenerativeModel
from genzoo.nn.mode import eval_mode

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
    x, split, seen_info = fixed_inputs(split, info, model.input_kind, limit)
    device = model.device
    generator = torch.Generator(device).manual_seed(seed)
    offset = nats_offset(seen_info, model.input_kind)

    def model_batches():  # (inputs, the labels a conditional model takes) on the model's device
        for xb, yb in batches(x, split.labels, batch_size):
            yield xb.to(device), None if yb is None or not model.conditional else yb.to(device)

    totals = {"elbo": 0.0, "iw": 0.0}
    kind, reason = "unavailable", ""
    estimate = None
    with eval_mode(model):
        for xb, yb in tqdm(model_batches(), total=-(-len(x) // batch_size), disable=not progress,
                           desc=f"evaluating on {split.split}", leave=False, mininterval=progress_interval()):
            elbo = model.log_likelihood(xb, yb, num_samples=1, generator=generator)
            if elbo.value is None:
                kind, reason = elbo.kind, elbo.reason
                break
            totals["elbo"] += elbo.value.double().sum().item()
            exact_or_single = elbo.kind == "exact" or iw_samples <= 1
            iw = elbo if exact_or_single else model.log_likelihood(xb, yb, num_samples=iw_samples, generator=generator)
            totals["iw"] += iw.value.double().sum().item()
            kind, reason = iw.kind, iw.reason
        if kind == "unavailable" and hasattr(model, "elbo_estimate"):  # e.g. AVB: an estimate, not a bound
            estimate = sum(model.elbo_estimate(xb, yb, generator=generator).double().sum().item()
                           for xb, yb in model_batches())

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
        if estimate is not None:
            metrics.update(neg_elbo_estimate_nats=-estimate / len(x) + nats_offset(seen_info, model.input_kind),
                           neg_elbo_estimate_method="-log p(x|z) + T(x, z): the discriminator's estimate of the KL "
                                                    "term; exact only at the optimal discriminator, not a bound")
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
    """A few readable lines of a metrics dict (likelihood and/or sample quality)."""
    lines = []
    if "split" in metrics:
        count = metrics.get("num_examples", metrics.get("num_real"))
        lines.append(f"{metrics['split']} split: {count:,} examples ({metrics['split_source']})")
    if "likelihood" in metrics:
        if metrics.get("nll_nats") is None:
            lines.append(f"no likelihood: {metrics['likelihood_method']}")
            if metrics.get("neg_elbo_estimate_nats") is not None:
                lines.append(f"-ELBO estimate     {metrics['neg_elbo_estimate_nats']:9.2f} nats  "
                             f"({metrics['neg_elbo_estimate_method']})")
        else:
            if metrics.get("neg_elbo_nats") is not None:
                lines.append(f"negative ELBO      {metrics['neg_elbo_nats']:9.2f} nats  "
                             f"{metrics['neg_elbo_bits_per_dim']:.4f} bits/dim")
            label = f"NLL (IS, K={metrics['iw_samples']})" if "iw_samples" in metrics else "NLL (exact)"
            lines.append(f"{label:<18} {metrics['nll_nats']:9.2f} nats  {metrics['bits_per_dim']:.4f} bits/dim")
    quality = [(name, metrics[key]) for name, key in (
        ("FD", "fd"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"),
        ("classifier score", "classifier_score"), ("conditional accuracy", "conditional_accuracy"),
    ) if metrics.get(key) is not None]
    if quality:
        lines.append("  ".join(f"{name} {value:.4g}" + (f" ± {metrics['kid_std']:.2g}" if name == "KID" else "")
                               for name, value in quality))
        lines.append(f"  ({metrics['num_samples']:,} samples; features: {metrics['feature_net']})")
    return "\n".join(lines)


