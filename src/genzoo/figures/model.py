"""Model figures: samples, reconstructions, latent traversals, interpolations, class grids,
denoising and completions; ``write_run_figures`` writes every figure a model supports.

The figure functions return tensors (rows of images) and never write files, so they can be
checked numerically. They use only the model protocol (``sample``, optional
``encode``/``decode``/``corrupt``/``complete``, ``conditional``, ``info``), run under
``torch.no_grad()`` in eval mode (the previous train/eval flags are restored), and draw
randomness only from an explicit ``torch.Generator`` seeded from ``seed``: torch's global RNG
is never touched.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.evaluate.completion import HIDDEN_GRAY, parse_mask
from genzoo.evaluate.latent import ACTIVE_THRESHOLD, kl_per_dim, latent_activity
from genzoo.figures.grids import WHITE, save_image_grid, save_rows
from genzoo.nn.mode import eval_mode, module_device

REDUCED_TEMPERATURE = 0.7  # the second sample grid of a model whose sampler takes a temperature (Kingma & Dhariwal 2018)
GUIDANCE = 2.0  # the second class grid of a model whose sampler takes a guidance weight (Ho & Salimans 2022)

# ------------------------------------------------------------------------------------------------
# Model figures: tensors only, no files
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad inside; every submodule's train/eval flag restored after."""
    with eval_mode(model), torch.no_grad():
        yield


def seeded_generator(model: nn.Module, seed: int) -> torch.Generator:
    return torch.Generator(device=module_device(model)).manual_seed(seed)


def _labels(model: nn.Module, y: Tensor | None, n: int) -> Tensor | None:
    """Labels to pass on: y for conditional models (required), None otherwise."""
    if not model.conditional:
        return None
    if y is None:
        raise ValueError(f"{type(model).__name__} is conditional: figures need labels y")
    return y.to(module_device(model)).reshape(n)


def decoded(model: nn.Module, z: Tensor, y: Tensor | None) -> Tensor:
    return model.decode(z, y).detach().float().cpu()  # (B, C, H, W)


def sample_grid(model: nn.Module, n: int = 64, seed: int = 0, **options) -> Tensor:
    """n samples (n, C, H, W) with the default sampler and ``options`` (e.g. temperature=0.7);
    conditional models get labels cycling 0..K-1."""
    with evaluating(model):
        labels = None
        if model.conditional:
            labels = torch.arange(n, device=module_device(model)) % model.info.num_classes
        return model.generate(n, labels, seeded_generator(model, seed), **options).detach().float().cpu()


def reconstructions(model: nn.Module, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
    """Rows [data, decode(encode(x, y), y)], each (B, C, H, W)."""
    with evaluating(model):
        x = x.to(module_device(model))
        y = _labels(model, y, len(x))
        return [x.detach().float().cpu(), decoded(model, model.encode(x, y), y)]


def traversal_values(steps: int = 9, span: float = 3.0) -> Tensor:
    """The values a latent traversal sets its coordinate to: linspace(-span, span, steps)."""
    return torch.linspace(-span, span, steps)


def latent_traversal(
    model: nn.Module, x0: Tensor, y0: Tensor | int | None = None, dims: int | Sequence[int] = 10, steps: int = 9,
    span: float = 3.0
) -> list[Tensor]:
    """One row per latent dimension d (the first ``dims``, or those listed): decode(z) with
    z = encode(x0) and z_d set to each of ``traversal_values(steps, span)``, the other coordinates
    held fixed ("latent perturbation").

    x0: one image (C, H, W) or (1, C, H, W); y0: its label (conditional models). Rows (steps, C, H, W).
    """
    with evaluating(model):
        device = module_device(model)
        x0 = x0.to(device).reshape(1, *x0.shape[-3:])  # (1, C, H, W)
        y = None if y0 is None else torch.as_tensor(y0, device=device).reshape(1)
        y = _labels(model, y, 1)
        z0 = model.encode(x0, y)  # (1, latent_dim)
        flat = z0.reshape(1, -1)  # (1, D)
        values = traversal_values(steps, span).to(device, flat.dtype)  # (steps,)
        ys = None if y is None else y.expand(steps)
        rows = []
        for d in range(min(dims, flat.shape[1])) if isinstance(dims, int) else dims:
            z = flat.repeat(steps, 1)  # (steps, D)
            z[:, d] = values
            rows.append(decoded(model, z.reshape(steps, *z0.shape[1:]), ys))
        return rows


def interpolation(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    y_a: Tensor | None = None,
    y_b: Tensor | None = None,
    steps: int = 10,
) -> list[Tensor]:
    """One row per pair (x_a[i], x_b[i]): decode((1 - t) encode(x_a) + t encode(x_b)) for t in
    linspace(0, 1, steps). Conditional models decode every step with the label of a.

    x_a, x_b: (P, C, H, W); rows (steps, C, H, W). y_b is accepted for symmetry and only checked.
    """
    if x_a.shape != x_b.shape:
        raise ValueError(f"interpolation: x_a {tuple(x_a.shape)} and x_b {tuple(x_b.shape)} differ")
    with evaluating(model):
        device = module_device(model)
        x_a, x_b = x_a.to(device), x_b.to(device)
        y_a = _labels(model, y_a, len(x_a))
        y_b = _labels(model, y_b, len(x_b))
        z_a, z_b = model.encode(x_a, y_a), model.encode(x_b, y_b)  # (P, latent_dim)
        t = torch.linspace(0, 1, steps, device=device, dtype=z_a.dtype).reshape(steps, *[1] * (z_a.dim() - 1))
        rows = []
        for i in range(len(x_a)):
            z = (1 - t) * z_a[i : i + 1] + t * z_b[i : i + 1]  # (steps, latent_dim)
            rows.append(decoded(model, z, None if y_a is None else y_a[i].expand(steps)))
        return rows


def slerp(z_a: Tensor, z_b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between codes (P, D) at fractions t (T,): (T, P, D).

    Under a Gaussian prior the straight line between two typical codes passes through codes of
    atypically small norm; the great circle keeps the norm typical (White 2016, arXiv:1609.04468).
    """
    cos = (F.normalize(z_a, dim=-1) * F.normalize(z_b, dim=-1)).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7)  # (P,)
    omega = torch.acos(cos)
    t = t.reshape(-1, 1)  # (T, 1)
    return (torch.sin((1 - t) * omega)[..., None] * z_a + torch.sin(t * omega)[..., None] * z_b) / torch.sin(omega)[..., None]


def prior_interpolation(model: nn.Module, pairs: int = 4, steps: int = 10, seed: int = 0) -> list[Tensor]:
    """One row per pair of prior codes z_a, z_b ~ N(0, I): decode(slerp(z_a, z_b, t)), t in [0, 1].

    For models with a decoder and no encoder (GANs); conditional models keep label i on row i.
    Rows (steps, C, H, W).
    """
    with evaluating(model):
        device = module_device(model)
        g = seeded_generator(model, seed)
        z = torch.randn((2, pairs, model.latent_dim), generator=g, device=g.device).to(device)  # (2, P, D)
        codes = slerp(z[0], z[1], torch.linspace(0, 1, steps, device=device))  # (steps, P, D)
        labels = torch.arange(pairs, device=device) % model.info.num_classes if model.conditional else None
        return [decoded(model, codes[:, i], None if labels is None else labels[i].expand(steps)) for i in range(pairs)]


def class_grid(model: nn.Module, per_class: int = 10, seed: int = 0, **options) -> list[Tensor]:
    """One row of ``per_class`` samples for each class 0..K-1 of a conditional model, drawn with the
    default sampler and ``options`` (e.g. guidance=2.0)."""
    if not model.conditional:
        raise ValueError(f"class_grid: {type(model).__name__} is not conditional")
    k = model.info.num_classes
    with evaluating(model):
        labels = torch.arange(k, device=module_device(model)).repeat_interleave(per_class)  # (K * per_class,)
        x = model.generate(k * per_class, labels, seeded_generator(model, seed), **options)
        return list(x.detach().float().cpu().reshape(k, per_class, *x.shape[1:]).unbind(0))


def sampling_chain_rows(model: nn.Module, n: int = 4, snapshots: int = 10, seed: int = 0) -> dict[str, Tensor]:
    """{"sample 1: x_t": (snapshots, C, H, W), "sample 1: predicted x_0": ..., ...}: the model's
    ``sampling_chain``, one row per sample and state."""
    with evaluating(model):
        states = model.sampling_chain(n, snapshots, seeded_generator(model, seed))
    return {f"{i + 1}: {name}": values[i].detach().float().cpu() for i in range(n) for name, values in states.items()}


def denoising_triples(model: nn.Module, x: Tensor, seed: int = 0, y: Tensor | None = None) -> list[Tensor]:
    """Rows [clean, corrupted, denoised] with corrupted = model.corrupt(x) and
    denoised = decode(encode(corrupted)), each (B, C, H, W)."""
    with evaluating(model):
        x = x.to(module_device(model))
        y = _labels(model, y, len(x))
        noisy = model.corrupt(x, generator=seeded_generator(model, seed))
        return [x.detach().float().cpu(), noisy.detach().float().cpu(), decoded(model, model.encode(noisy, y), y)]


def completions(model: nn.Module, x: Tensor, y: Tensor | None = None, seed: int = 0) -> list[Tensor]:
    """[data, observed (hidden half gray), completed] rows for x (B, C, H, W) with its bottom half
    hidden: the model draws the hidden pixels given the top half (``complete``)."""
    with evaluating(model):
        x = x.to(module_device(model))
        observed = parse_mask("bottom-half", *x.shape[-2:])
        completed = model.complete(x, observed, _labels(model, y, len(x)), seeded_generator(model, seed))
        masked = torch.where(observed.to(x.device), x, torch.full_like(x, HIDDEN_GRAY))
        return [t.detach().float().cpu() for t in (x, masked, completed)]


def traversal_labels(dims: Sequence[int], activity: Tensor, kl: Tensor | None) -> list[str]:
    """A row label for each traversed latent dimension: its name, its KL(q(z_u|x) || p(z_u)) in nats
    (``kl_per_dim``), or where the model has none its activity Var_x E_q[z_u] (``latent_activity``),
    and "inactive" when its activity is at most Burda et al.'s 0.01: traversing it changes nothing."""
    labels = []
    for d in dims:
        amount = f"KL {kl[d]:.2f} nats" if kl is not None else f"var {activity[d]:.2g}"
        labels.append(f"z{d}\n{amount}" + ("\ninactive" if activity[d] <= ACTIVE_THRESHOLD else ""))
    return labels


def write_run_figures(
    model: nn.Module, x: Tensor, y: Tensor | None, out_dir: str | os.PathLike, seed: int = 0
) -> list[Path]:
    """Write every figure the model supports into ``out_dir``; returns the paths written.

    x: held-out batch (B, C, H, W) in [0, 1], y: its labels or None. Uses the first 16 examples for
    reconstructions, the first 8 for denoising, x[0] for the traversal and pairs (x[i], x[i+P]) for
    interpolation (between prior codes for a decoder without an encoder). Capabilities are read from
    the model (``encode``/``decode``/``latent_dim``, ``conditional``, ``corrupt``), never from its name.
    """
    out_dir = Path(out_dir)
    paths = [save_image_grid(sample_grid(model, 64, seed), out_dir / "samples.png", nrow=8)]
    if "temperature" in model.samplers[0].options:  # Glow's reduced-temperature samples, same noise
        paths.append(save_image_grid(sample_grid(model, 64, seed, temperature=REDUCED_TEMPERATURE),
                                     out_dir / f"samples_temperature_{REDUCED_TEMPERATURE:g}.png", nrow=8))
    if model.can("encode"):
        xs, ys = x[:16], None if y is None else y[:16]
        paths.append(save_rows(reconstructions(model, xs, ys), out_dir / "reconstructions.png", ["data", "recon"]))
        activity, kl = latent_activity(model, x, y), kl_per_dim(model, x, y)  # (latent_dim,) each
        dims = activity.argsort(descending=True)[:10].tolist()  # the most active: the others show nothing
        rows = latent_traversal(model, x[0], None if y is None else y[0], dims=dims)
        paths.append(save_rows(rows, out_dir / "latent_traversal.png", traversal_labels(dims, activity, kl),
                               column_labels=[f"z={v:g}" for v in traversal_values().tolist()]))
    if model.can("encode") or model.can("invert"):  # interpolate between encoded test images (a flow's z: exact)
        pairs = min(4, len(x) // 2)
        if pairs:
            ya, yb = (None, None) if y is None else (y[:pairs], y[pairs : 2 * pairs])
            rows = interpolation(model, x[:pairs], x[pairs : 2 * pairs], ya, yb)
            paths.append(save_rows(rows, out_dir / "interpolation.png"))
    elif model.can("decode"):  # a generator of prior codes, without an encoder
        paths.append(save_rows(prior_interpolation(model, 4, 10, seed), out_dir / "interpolation.png"))
    if model.conditional:
        rows = class_grid(model, 10, seed)
        paths.append(save_rows(rows, out_dir / "class_grid.png", [str(k) for k in range(len(rows))]))
        if model.can("guide"):  # the same noise with classifier-free guidance
            rows = class_grid(model, 10, seed, guidance=GUIDANCE)
            paths.append(save_rows(rows, out_dir / f"class_grid_guidance_{GUIDANCE:g}.png",
                                   [str(k) for k in range(len(rows))]))
    if model.can("corrupt"):
        rows = denoising_triples(model, x[:8], seed, None if y is None else y[:8])
        paths.append(save_rows(rows, out_dir / "denoising.png", ["clean", "corrupted", "denoised"]))
    if model.can("chain"):  # from noise to samples: each sample's states at evenly spaced steps
        chain = sampling_chain_rows(model, 4, 10, seed)
        paths.append(save_rows(list(chain.values()), out_dir / "sampling_chain.png", list(chain)))
    if model.can("complete"):
        rows = completions(model, x[:8], None if y is None else y[:8], seed)
        # white padding and a gap: the hidden pixels' gray would run into mid-gray padding and the row above
        paths.append(save_rows(rows, out_dir / "completions.png", ["data", "observed", "completions"],
                               row_gaps=(0,), pad_value=WHITE))
    return paths
