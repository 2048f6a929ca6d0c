"""Evaluation as pure functions of a model and a split: log-likelihoods in nats and bits/dim.

The one place where the data's discretisation enters the numbers: ``fixed_inputs`` turns a
split into the representation the model's likelihood is defined on (statically binarised, or
dequantised with a fixed seed), and ``likelihood_metrics`` adds ``nats_offset`` for continuous
densities on discrete data before converting to bits/dim.

Every number says what it is (``likelihood``: exact, lower_bound, estimate, numerical or
unavailable), which estimator and how many draws per example made it, and its standard error
due to the estimator's own randomness.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genzoo.data.core import (
    DataInfo,
    Split,
    batches,
    bits_per_dim,
    nats_offset,
    prepare,
    static_binarize,
)
from genzoo.data.toy2d import TOY2D
from genzoo.evaluate.arena import kl_divergence
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




@torch.no_grad()
def likelihood_metrics(model: GenerativeModel, split: Split, info: DataInfo, draws: int | None = None,
                       batch_size: int = 100, seed: int = 0, limit: int | None = None, progress: bool = False,
                       estimator: str | None = None, extra_terms: bool = True) -> dict:
    """The NLL of ``split`` under ``model`` per example, in nats and bits/dim, and what kind of number it is.

    ``draws`` per example feed an estimated likelihood (importance samples of a VAE's bound; the
    model's ``eval_defaults.draws`` when None); ``estimator`` picks among the model's declared
    estimators. ``nll_std_err`` is the standard error of the reported mean due to the estimator's
    own randomness (None when the estimator gives no variance, e.g. from a single draw; 0 when
    exact). With ``extra_terms`` the model's declared extra terms (a VAE's ELBO) are reported as
    ``neg_{name}_nats``, and the estimator it reports beside this one as ``nll_{name}_nats``
    (``companion_metrics``). On a 2-D arena dataset, ``kl_nats`` is the mean of log p_data(x) -
    log p_model(x) over the split, with its paired standard error ``kl_std_err``.

    ``limit`` evaluates a fixed random subset (see ``Split.subset``), which the result says.
    Runs in fp32 and in batches, so memory is bounded by ``batch_size`` x the model's own chunking.
    """
    x, split, seen_info = fixed_inputs(split, info, model.input_kind, limit)
    metrics = {"split": split.split, "split_source": split.source, "num_examples": len(x), "data": seen_info.name,
               "data_representation": model.input_kind, "conditional": model.conditional}
    device = model.device

    def model_batches():  # (inputs, the labels a conditional model takes) on the model's device
        for xb, yb in batches(x, split.labels, batch_size):
            yield xb.to(device), None if yb is None or not model.conditional else yb.to(device)

    if not model.estimators:
        with eval_mode(model):
            reason = model.log_likelihood(*next(model_batches())).reason
        return {**metrics, "likelihood": "unavailable", "likelihood_method": reason, "nll_nats": None,
                "bits_per_dim": None}
    estimator = model.estimator(estimator)
    draws = model.eval_defaults.draws if draws is None else draws
    if draws < 1:
        raise ValueError(f"draws per example must be >= 1, got {draws}")
    choose = {"estimator": estimator} if len(model.estimators) > 1 else {}
    generator = torch.Generator(device).manual_seed(seed)
    offset = nats_offset(seen_info, model.input_kind)
    values, variances, term_totals = [], [], {}
    with eval_mode(model):
        for xb, yb in tqdm(model_batches(), total=-(-len(x) // batch_size), disable=not progress,
                           desc=f"evaluating on {split.split}", leave=False, mininterval=progress_interval()):
            if extra_terms and model.can("extra_likelihood_terms"):  # first: the generator's draws stay in order
                for name, value in model.likelihood_terms(xb, yb, generator).items():
                    term_totals[name] = term_totals.get(name, 0.0) + value.double().sum().item()
            result = model.log_likelihood(xb, yb, num_samples=draws, generator=generator, **choose)
            values.append(result.value.double().cpu())
            variances.append(None if result.variance is None else result.variance.double().cpu())
    log_p = torch.cat(values)  # (N,) nats, on the model's input representation
    nll = -log_p.mean().item() + offset
    if result.kind == "exact":
        std_err = 0.0
    elif any(v is None for v in variances):
        std_err = None
    else:
        std_err = torch.cat(variances).sum().sqrt().item() / len(log_p)
    metrics.update(likelihood=result.kind, likelihood_method=result.reason, estimator=estimator, draws=draws,
                   nll_nats=nll, bits_per_dim=bits_per_dim(nll, seen_info), nll_std_err=std_err,
                   dequantization_nats=offset)
    for name, total in term_totals.items():
        neg = -total / len(x) + offset
        metrics.update({f"neg_{name}_nats": neg, f"neg_{name}_bits_per_dim": bits_per_dim(neg, seen_info)})
    if extra_terms and estimator in model.eval_defaults.companions:
        metrics.update(companion_metrics(model, split, info, estimator, draws, batch_size, seed, limit, progress))
    if seen_info.name in TOY2D:
        kl, kl_std_err = kl_divergence(TOY2D[seen_info.name].log_prob(x.double()), log_p)
        metrics.update(kl_nats=kl, kl_std_err=kl_std_err)
    return metrics


def companion_name(key: str) -> str | None:
    """The estimator a metrics key ``nll_{name}_nats`` reports beside the NLL (``companion_metrics``), else None."""
    return key[4:-5] if key.startswith("nll_") and key.endswith("_nats") and key != "nll_nats" else None


def companion_metrics(model: GenerativeModel, split: Split, info: DataInfo, estimator: str, draws: int,
                      batch_size: int, seed: int, limit: int | None, progress: bool) -> dict:
    """The estimator the model reports beside ``estimator`` (RAISE beside AIS), as ``nll_{name}_nats`` with its
    method, on a fixed random subset of at most its cap of the examples evaluated (said in ``{name}_subset``),
    and ``estimator``'s NLL on the same examples (``{name}_paired_nll_nats``), so that the two bracket one number."""
    name, cap = model.eval_defaults.companions[estimator]
    n = min(len(split), limit or len(split))
    beside = likelihood_metrics(model, split, info, draws, batch_size, seed, min(n, cap), progress, name,
                                extra_terms=False)
    paired = likelihood_metrics(model, split, info, draws, batch_size, seed, min(n, cap), progress, estimator,
                                extra_terms=False)
    subset = (f"a fixed random {cap:,} of the {n:,} {split.split} examples (seed 0): the whole split would take "
              "too long" if n > cap else None)
    return {f"nll_{name}_nats": beside["nll_nats"], f"nll_{name}_std_err": beside["nll_std_err"],
            f"nll_{name}_kind": beside["likelihood"], f"{name}_paired_nll_nats": paired["nll_nats"], f"{name}_method": beside["likelihood_method"], f"{name}_examples": beside["num_examples"],
            f"{name}_subset": subset}


def format_metrics(metrics: dict) -> str:
    """A few readable lines of a metrics dict (likelihood and/or sample quality)."""
    lines = []
    if "split" in metrics:
        count = metrics.get("num_examples", metrics.get("num_real"))
        lines.append(f"{metrics['split']} split: {count:,} examples ({metrics['split_source']})")
    if "likelihood" in metrics:
        if metrics.get("nll_nats") is None:
            lines.append(f"no likelihood: {metrics['likelihood_method']}")
        else:
            for key, value in metrics.items():  # the model's extra terms, e.g. the negative ELBO
                if key.startswith("neg_") and key.endswith("_nats") and value is not None:
                    name = "negative " + key[4:-5].upper()
                    lines.append(f"{name:<18} {value:9.2f} nats  {metrics[key[:-5] + '_bits_per_dim']:.4f} bits/dim")
            kind = {"exact": "exact", "lower_bound": "upper bound", "estimate": "estimate, not a bound",
                    "numerical": "numerical"}[metrics["likelihood"]]
            count = metrics["draws"]
            draws = f", {count} draw{'s' if count != 1 else ''}" if metrics["likelihood"] != "exact" else ""
            error = f" ± {metrics['nll_std_err']:.2g}" if metrics.get("nll_std_err") else ""
            how = kind if metrics["estimator"] == kind else f"{kind}: {metrics['estimator']}"  # not "exact: exact"
            lines.append(f"{'NLL':<18} {metrics['nll_nats']:9.2f}{error} nats  {metrics['bits_per_dim']:.4f} bits/dim  "
                         f"({how}{draws})")
            for key, value in metrics.items():  # an estimator reported beside the first (RAISE beside AIS)
                if (name := companion_name(key)) and value is not None:
                    error = f" ± {metrics[f'nll_{name}_std_err']:.2g}" if metrics.get(f"nll_{name}_std_err") else ""
                    lines.append(f"{'NLL (' + name + ')':<18} {value:9.2f}{error} nats  "
                                 f"({metrics[f'{name}_examples']:,} examples)")
            if metrics.get("kl_nats") is not None:
                lines.append(f"{'KL(data || model)':<18} {metrics['kl_nats']:9.4f} ± {metrics['kl_std_err']:.4f} nats")
    if metrics.get("active_units") is not None:
        lines.append(f"active units       {metrics['active_units']} of {metrics['latent_dim']} "
                     f"(Cov_x E_q[z_u] > {metrics['active_units_threshold']})")
    quality = [(name, metrics[key]) for name, key in (
        ("FD", "fd"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"),
        ("classifier score", "classifier_score"), ("conditional accuracy", "conditional_accuracy"),
        ("sliced W2", "sliced_wasserstein"), ("MMD^2", "mmd2"), ("histogram KL", "histogram_kl_nats"),
    ) if metrics.get(key) is not None]
    if quality:
        lines.append("  ".join(_quality_text(name, value, metrics) for name, value in quality))
        where = f"features: {metrics['feature_net']}" if "feature_net" in metrics else "against the test points"
        lines.append(f"  ({metrics['num_samples']:,} samples{sampling_text(metrics)}; {where})")
    return "\n".join(lines)


def sampling_text(metrics: dict) -> str:
    """" by ddim, 25 steps, guidance w = 2 (diffusers' scale 3), 0.12 s each" from an evaluation's sampling record."""
    sampling = metrics.get("sampling")
    if not sampling:
        return ""
    parts = [f" by {sampling['sampler']}"]
    if sampling.get("steps"):
        parts.append(f"{sampling['steps']} steps")
    if sampling.get("eta") is not None:
        parts.append(f"eta {sampling['eta']:g}")
    if sampling.get("temperature") is not None:
        parts.append(f"temperature {sampling['temperature']:g}")
    if sampling.get("guidance") is not None:
        parts.append(f"guidance w = {sampling['guidance']:g} (diffusers' scale {sampling['guidance_diffusers_scale']:g})")
    if metrics.get("seconds_per_sample") is not None:
        parts.append(f"{metrics['seconds_per_sample']:.3g} s each")
    return ", ".join(parts)


def _quality_text(name: str, value: float, metrics: dict) -> str:
    if name == "KID":  # the unbiased MMD^2 itself (cubic kernel, 128-d fc1 features), stored and shown unscaled
        return f"KID {value:.4g} ± {metrics['kid_std']:.2g} (MMD^2 of fc1 features, unscaled)"
    if name == "histogram KL":
        return f"histogram KL {value:.4g} nats"
    return f"{name} {value:.4g}"
