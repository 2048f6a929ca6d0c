"""Which metrics a run is judged by, by the kind of its data, and one call that computes them.

Images: ``nll`` (``likelihood_metrics``) and the sample metrics in a digit classifier's feature
space (``fd``, ``kid``, ``pr``, ``score``: ``sample_quality_metrics``). Vectors of the 2-D arena:
``nll`` (with ``kl_nats`` against the exact data density) and the sample metrics against the
test points (``sw``: sliced Wasserstein, ``mmd``: MMD^2, ``hist``: histogram KL;
``genzoo.evaluate.arena``), on ``ARENA_SAMPLES`` samples. No digit network judges 2-D points.
"""

from __future__ import annotations

import torch

from genzoo.data.core import DataInfo, Split
from genzoo.data.toy2d import TOY2D
from genzoo.evaluate.arena import ARENA_METRICS, arena_sample_metrics
from genzoo.evaluate.latent import active_units
from genzoo.evaluate.likelihood import fixed_inputs, likelihood_metrics
from genzoo.evaluate.sample_quality import SAMPLE_METRICS, sample_quality_metrics
from genzoo.models.base import GenerativeModel
from genzoo.nn.mode import eval_mode

METRICS = {
    "image": ("nll", *SAMPLE_METRICS),
    "vector": ("nll", "sw", "mmd", "hist"),
}
ARENA_KEYS = dict(zip(("sw", "mmd", "hist"), ARENA_METRICS))  # metric name -> result key
ARENA_SAMPLES = 10_000


def default_metrics(info: DataInfo) -> tuple[str, ...]:
    return METRICS[info.kind]


def parse_metrics(text: str | None, info: DataInfo) -> list[str]:
    """"nll,fd" -> ["nll", "fd"] for this data's kind; None -> its defaults; "" -> none.

    An unknown name, or one for another kind of data, fails listing the valid ones.
    """
    if text is None:
        return list(default_metrics(info))
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS[info.kind]]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)} for {info.kind} data ({info.name}); "
                         f"choose from: {', '.join(METRICS[info.kind])}")
    return names


@torch.no_grad()
def arena_metrics(model: GenerativeModel, split: Split, info: DataInfo, metrics: list[str], seed: int = 0,
                  num_samples: int = ARENA_SAMPLES, sampling: dict | None = None) -> dict:
    """The 2-D sample metrics of ``num_samples`` samples of ``model`` against ``split``'s points."""
    generator = torch.Generator(model.device).manual_seed(seed)
    with eval_mode(model):
        samples = model.generate(num_samples, None, generator, **(sampling or {})).float().cpu()  # (M, 2)
    if not torch.isfinite(samples).all():
        raise ValueError(f"the samples of {model.name} contain NaN or infinite values (did training diverge?)")
    wanted = tuple(ARENA_KEYS[m] for m in ARENA_KEYS if m in metrics)
    return arena_sample_metrics(info.name, samples, split.images.float().cpu(), wanted)


def sampling_record(model: GenerativeModel, sampling: dict, chosen: bool) -> dict:
    """How the samples of the sample metrics were drawn: the sampler and its options as used (None: the
    model's default), whether they were chosen on the command line, and, with classifier-free guidance,
    diffusers' ``guidance_scale`` s = w + 1 beside genzoo's weight w."""
    record = {"sampler": model.sampler_spec(sampling.get("sampler")).name, "chosen": chosen,
              **{k: v for k, v in sampling.items() if k != "sampler" and v is not None}}
    if record.get("guidance") is not None:
        record["guidance_diffusers_scale"] = record["guidance"] + 1
    return record


def run_metrics(model: GenerativeModel, split: Split, info: DataInfo, metrics: list[str], draws: int | None = None,
                batch_size: int = 100, seed: int = 0, limit: int | None = None, estimator: str | None = None,
                sampling: dict | None = None) -> dict:
    """The requested ``metrics`` of ``model`` on ``split`` (see the module docstring for the names).

    ``sampling`` (sampler and options) drives the sample metrics; without a sampler, the model's
    ``eval_defaults`` give the sampler and, unless given, its steps.
    """
    sampling = dict(sampling or {})
    chosen = any(v is not None for v in sampling.values())
    if sampling.get("sampler") is None:
        defaults = model.eval_defaults
        sampling.update(sampler=defaults.sampler, steps=sampling.get("steps") or defaults.steps)
    results: dict = {}
    if metrics and model.can("encode"):  # a latent diagnostic: how many dimensions the codes use
        x, seen, _ = fixed_inputs(split, info, model.input_kind, limit)
        units = active_units(model, x.to(model.device), seen.labels.to(model.device) if model.conditional else None)
        results.update(active_units=units["active_units"], latent_dim=units["latent_dim"],
                       active_units_threshold=units["threshold"], activity=units["activity"])
    if "nll" in metrics:
        results.update(likelihood_metrics(model, split, info, draws, batch_size=batch_size, seed=seed, limit=limit,
                                          progress=True, estimator=estimator))
    samples = [m for m in metrics if m != "nll"]
    if samples:
        results["sampling"] = sampling_record(model, sampling, chosen)
    if samples and info.kind == "vector":
        if info.name not in TOY2D:
            raise ValueError(f"sample metrics of vector data need the arena's exact densities; {info.name} is none")
        results.update(arena_metrics(model, split.subset(limit), info, samples, seed, sampling=sampling))
    elif samples:
        real = split.subset(limit)
        count = model.eval_defaults.samples  # a slow sampler's cap; at most as many samples as real images
        results.update(sample_quality_metrics(model, real, info, samples, seed=seed, sampling=sampling,
                                              num_samples=None if count is None else min(count, len(real))))
    return results
