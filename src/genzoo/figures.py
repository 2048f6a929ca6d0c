"""The pictures a training run writes: image grids, model figures and loss curves.

Three layers, each usable alone:

- pure image functions: ``image_grid`` turns a batch (N, C, H, W) in [0, 1] into a Pillow image;
  ``save_image_grid`` and ``save_rows`` write PNGs atomically (temp file + ``os.replace``);
- model figures: ``sample_grid``, ``reconstructions``, ``latent_traversal``, ``interpolation``,
  ``class_grid``, ``denoising_triples``, ``completions`` (inpainting) return tensors (rows of images) and never write files, so
  they can be checked numerically. They use only the model protocol (``sample``, optional
  ``encode``/``decode``/``corrupt``/``complete``, ``conditional``, ``info``), run under ``torch.no_grad()`` in
  eval mode (the previous train/eval flags are restored), and draw randomness only from an
  explicit ``torch.Generator`` seeded from ``seed``: torch's global RNG is never touched;
- ``write_run_figures`` writes every figure a model supports; ``save_loss_curves`` plots the
  trainer's CSV log.

Plots use matplotlib's object API with the Agg canvas (no pyplot), so importing this module
changes no global matplotlib state.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.checkpoint import atomic_write, read_tensors, write_tensors
from genzoo.inpainting import HIDDEN_GRAY, parse_mask
from genzoo.models.base import eval_mode

PAD_VALUE = 128  # mid-gray between cells
MIN_CELL_PX = 56  # default scale makes each cell at least this many pixels on its long side
NOT_PLOTTED = ("step", "epoch", "lr", "examples_per_s")  # CSV columns that are not loss terms

# ------------------------------------------------------------------------------------------------
# Pure image functions
# ------------------------------------------------------------------------------------------------


def default_scale(height: int, width: int) -> int:
    """Nearest-neighbour factor that makes a cell at least ~56 px: 8x8 -> 7, 28x28 -> 2."""
    return max(1, math.ceil(MIN_CELL_PX / max(height, width)))


def image_grid(images: Tensor, nrow: int, padding: int = 2, scale: int | None = None) -> Image.Image:
    """Tile images into one picture, ``nrow`` images per row.

    images: (N, C, H, W) float, clamped to [0, 1]; C is 1 (grayscale "L" output) or 3 ("RGB").
    Each image is upsampled by ``scale`` with nearest neighbour (default ``default_scale``), and
    ``padding`` mid-gray pixels separate the cells and frame the grid, so the picture is
    ``ncol * W * scale + (ncol + 1) * padding`` wide with ``ncol = min(nrow, N)``.
    Missing cells in the last row stay mid-gray. Non-finite values raise ``ValueError``.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid: expected (N, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("image_grid: no images")
    if nrow < 1 or padding < 0:
        raise ValueError(f"image_grid: nrow={nrow} must be >= 1 and padding={padding} >= 0")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise ValueError("image_grid: images contain NaN or inf")
    n, c, h, w = images.shape
    s = default_scale(h, w) if scale is None else scale
    if s < 1:
        raise ValueError(f"image_grid: scale={s} must be >= 1")

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    pixels = pixels.repeat(s, axis=1).repeat(s, axis=2)  # (N, H*s, W*s, C)
    ch, cw = h * s, w * s
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    canvas = np.full((nrows * ch + (nrows + 1) * padding, ncol * cw + (ncol + 1) * padding, c), PAD_VALUE, np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = padding + r * (ch + padding), padding + k * (cw + padding)
        canvas[top : top + ch, left : left + cw] = pixels[i]
    return Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temp file in the same folder, then ``os.replace``); creates folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def save_image_grid(images: Tensor, path: str | os.PathLike, nrow: int, **kw) -> Path:
    """``image_grid(images, nrow, **kw)`` written as a PNG at ``path``; returns the path."""
    return save_png(image_grid(images, nrow, **kw), path)


def rows_image(
    rows: list[Tensor], row_labels: list[str] | None = None, padding: int = 2, scale: int | None = None
) -> Image.Image:
    """Stack rows of images into one grid, one row per entry, with optional labels at the left.

    rows: each (n, C, H, W) with the same n, C, H, W. Labels ("data", "recon", "0", ...) are
    drawn in black on a white margin with Pillow's default font.
    """
    if not rows:
        raise ValueError("rows_image: no rows")
    shape = tuple(rows[0].shape)
    for i, row in enumerate(rows):
        if tuple(row.shape) != shape:
            raise ValueError(f"rows_image: row {i} has shape {tuple(row.shape)}, row 0 has {shape}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"rows_image: {len(row_labels)} labels for {len(rows)} rows")
    grid = image_grid(torch.cat(rows), nrow=shape[0], padding=padding, scale=scale)
    if not row_labels:
        return grid

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    boxes = [measure.textbbox((0, 0), label, font=font) for label in row_labels]  # (l, t, r, b)
    margin = max(b[2] - b[0] for b in boxes) + 8
    white = 255 if grid.mode == "L" else (255, 255, 255)
    black = 0 if grid.mode == "L" else (0, 0, 0)
    out = Image.new(grid.mode, (grid.width + margin, grid.height), white)
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    cell = (grid.height - padding) / len(rows)  # row pitch: image height + padding
    for i, (label, box) in enumerate(zip(row_labels, boxes)):
        centre = padding + i * cell + (cell - padding) / 2
        draw.text((4, centre - (box[1] + box[3]) / 2), label, fill=black, font=font)
    return out


def save_rows(
    rows: list[Tensor], path: str | os.PathLike, row_labels: list[str] | None = None, **kw
) -> Path:
    """``rows_image(rows, row_labels, **kw)`` written as a PNG at ``path``; returns the path."""
    return save_png(rows_image(rows, row_labels, **kw), path)


# ------------------------------------------------------------------------------------------------
# Loss curves
# ------------------------------------------------------------------------------------------------


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over ``window`` values (shrinking at the ends), so the line does not lag."""
    csum = np.cumsum(np.insert(values, 0, 0.0))  # csum[i] = sum(values[:i])
    i = np.arange(len(values))
    lo, hi = np.maximum(i - window // 2, 0), np.minimum(i + window // 2 + 1, len(values))
    return (csum[hi] - csum[lo]) / (hi - lo)


def read_log_terms(csv_path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The trainer's CSV as ``{term: (steps, values)}``, skipping empty cells.

    Plots every numeric column except step, epoch, lr and examples_per_s; a column with a
    non-numeric value is not a term and is left out. None when the CSV has no rows.
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    terms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in rows[0]:
        if name is None or name in NOT_PLOTTED:
            continue
        steps, values = [], []
        try:
            for row in rows:
                cell = (row.get(name) or "").strip()
                if cell:
                    values.append(float(cell))
                    steps.append(float(row["step"]))
        except ValueError:
            continue  # not a numeric column
        if values:
            terms[name] = (np.asarray(steps), np.asarray(values))
    return terms


def save_loss_curves(csv_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Plot each logged term against step, one subplot per term sharing x; returns the path.

    The raw values are a faint line, a centred moving average (window ~5% of the points) a solid
    one. A multi-player model (columns "discriminator/loss", "generator/loss", ...) gets a first
    panel with every player's loss together. None, and nothing written, when the CSV has no rows
    or no numeric term.
    """
    terms = read_log_terms(csv_path)
    if not terms:
        return None
    panels = [[name] for name in terms]
    player_losses = [name for name in terms if name.endswith("/loss")]
    if len(player_losses) > 1:
        panels.insert(0, player_losses)
    fig = Figure(figsize=(7, 2.0 * len(panels) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, names in zip(axes, panels):
        for color, name in enumerate(names):
            steps, values = terms[name]
            window = max(1, len(values) // 20)
            ax.plot(steps, values, color=f"C{color}", alpha=0.3, linewidth=0.8)
            ax.plot(steps, _moving_average(values, window), color=f"C{color}", linewidth=1.5, label=name)
        ax.set_ylabel(names[0] if len(names) == 1 else "players' losses")
        if len(names) > 1:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(Path(out_path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# ------------------------------------------------------------------------------------------------
# Samples over training
# ------------------------------------------------------------------------------------------------
PROGRESS_FILE = "samples_over_training.safetensors"


class SamplesOverTraining:
    """Trainer callback: after each checkpoint, ``n`` samples from one fixed noise batch (the same
    seed every time), so the rows show how one set of codes develops during training.

    The samples are kept as uint8 in RUN_DIR/samples_over_training.safetensors, keyed by step,
    rewritten atomically, so a resumed run continues the same record.
    """

    def __init__(self, n: int = 10, seed: int = 0):
        self.n, self.seed = n, seed

    def __call__(self, trainer) -> None:
        images = sample_grid(trainer.final_model, self.n, self.seed)  # (n, C, H, W) in [0, 1]
        path = Path(trainer.out) / PROGRESS_FILE
        record = read_tensors(path)[0] if path.exists() else {}
        record[f"step_{trainer.step:010d}"] = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        write_tensors(path, record)


def evenly_spaced(items: list, count: int) -> list:
    """At most ``count`` items, evenly spaced, the first and the last always among them."""
    count = min(count, len(items))
    if count <= 1:
        return items[-count:] if count else []
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def save_samples_over_training(run_dir: str | os.PathLike, out_path: str | os.PathLike,
                               max_rows: int = 12) -> Path | None:
    """Draw the record ``SamplesOverTraining`` kept: one labelled row per checkpoint (at most
    ``max_rows``, evenly spaced, always the last). None when there is no record."""
    path = Path(run_dir) / PROGRESS_FILE
    if not path.exists():
        return None
    record = read_tensors(path)[0]
    keys = sorted(record)
    picked = evenly_spaced(keys, max_rows)
    rows = [record[k].float() / 255 for k in picked]
    return save_rows(rows, out_path, [f"step {int(k.split('_')[1])}" for k in picked])


# ------------------------------------------------------------------------------------------------
# Model figures: tensors only, no files
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad inside; every submodule's train/eval flag restored after."""
    with eval_mode(model), torch.no_grad():
        yield


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _generator(model: nn.Module, seed: int) -> torch.Generator:
    return torch.Generator(device=_device(model)).manual_seed(seed)


def _labels(model: nn.Module, y: Tensor | None, n: int) -> Tensor | None:
    """Labels to pass on: y for conditional models (required), None otherwise."""
    if not model.conditional:
        return None
    if y is None:
        raise ValueError(f"{type(model).__name__} is conditional: figures need labels y")
    return y.to(_device(model)).reshape(n)


def _decode(model: nn.Module, z: Tensor, y: Tensor | None) -> Tensor:
    return model.decode(z, y).detach().float().cpu()  # (B, C, H, W)


def sample_grid(model: nn.Module, n: int = 64, seed: int = 0) -> Tensor:
    """n samples (n, C, H, W); conditional models get labels cycling 0..K-1."""
    with _evaluating(model):
        labels = None
        if model.conditional:
            labels = torch.arange(n, device=_device(model)) % model.info.num_classes
        return model.sample(n, labels=labels, generator=_generator(model, seed)).detach().float().cpu()


def reconstructions(model: nn.Module, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
    """Rows [data, decode(encode(x, y), y)], each (B, C, H, W)."""
    with _evaluating(model):
        x = x.to(_device(model))
        y = _labels(model, y, len(x))
        return [x.detach().float().cpu(), _decode(model, model.encode(x, y), y)]


def latent_traversal(
    model: nn.Module, x0: Tensor, y0: Tensor | int | None = None, dims: int | Sequence[int] = 10, steps: int = 9,
    span: float = 3.0
) -> list[Tensor]:
    """One row per latent dimension d (the first ``dims``, or those listed): decode(z) with
    z = encode(x0) and z_d set to each of linspace(-span, span, steps), the other coordinates held
    fixed ("latent perturbation").

    x0: one image (C, H, W) or (1, C, H, W); y0: its label (conditional models). Rows (steps, C, H, W).
    """
    with _evaluating(model):
        device = _device(model)
        x0 = x0.to(device).reshape(1, *x0.shape[-3:])  # (1, C, H, W)
        y = None if y0 is None else torch.as_tensor(y0, device=device).reshape(1)
        y = _labels(model, y, 1)
        z0 = model.encode(x0, y)  # (1, latent_dim)
        flat = z0.reshape(1, -1)  # (1, D)
        values = torch.linspace(-span, span, steps, device=device, dtype=flat.dtype)  # (steps,)
        ys = None if y is None else y.expand(steps)
        rows = []
        for d in range(min(dims, flat.shape[1])) if isinstance(dims, int) else dims:
            z = flat.repeat(steps, 1)  # (steps, D)
            z[:, d] = values
            rows.append(_decode(model, z.reshape(steps, *z0.shape[1:]), ys))
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
    with _evaluating(model):
        device = _device(model)
        x_a, x_b = x_a.to(device), x_b.to(device)
        y_a = _labels(model, y_a, len(x_a))
        y_b = _labels(model, y_b, len(x_b))
        z_a, z_b = model.encode(x_a, y_a), model.encode(x_b, y_b)  # (P, latent_dim)
        t = torch.linspace(0, 1, steps, device=device, dtype=z_a.dtype).reshape(steps, *[1] * (z_a.dim() - 1))
        rows = []
        for i in range(len(x_a)):
            z = (1 - t) * z_a[i : i + 1] + t * z_b[i : i + 1]  # (steps, latent_dim)
            rows.append(_decode(model, z, None if y_a is None else y_a[i].expand(steps)))
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
    with _evaluating(model):
        device = _device(model)
        g = _generator(model, seed)
        z = torch.randn((2, pairs, model.latent_dim), generator=g, device=g.device).to(device)  # (2, P, D)
        codes = slerp(z[0], z[1], torch.linspace(0, 1, steps, device=device))  # (steps, P, D)
        labels = torch.arange(pairs, device=device) % model.info.num_classes if model.conditional else None
        return [_decode(model, codes[:, i], None if labels is None else labels[i].expand(steps)) for i in range(pairs)]


def class_grid(model: nn.Module, per_class: int = 10, seed: int = 0) -> list[Tensor]:
    """One row of ``per_class`` samples for each class 0..K-1 of a conditional model."""
    if not model.conditional:
        raise ValueError(f"class_grid: {type(model).__name__} is not conditional")
    k = model.info.num_classes
    with _evaluating(model):
        labels = torch.arange(k, device=_device(model)).repeat_interleave(per_class)  # (K * per_class,)
        x = model.sample(k * per_class, labels=labels, generator=_generator(model, seed))
        return list(x.detach().float().cpu().reshape(k, per_class, *x.shape[1:]).unbind(0))


def denoising_triples(model: nn.Module, x: Tensor, seed: int = 0, y: Tensor | None = None) -> list[Tensor]:
    """Rows [clean, corrupted, denoised] with corrupted = model.corrupt(x) and
    denoised = decode(encode(corrupted)), each (B, C, H, W)."""
    with _evaluating(model):
        x = x.to(_device(model))
        y = _labels(model, y, len(x))
        noisy = model.corrupt(x, generator=_generator(model, seed))
        return [x.detach().float().cpu(), noisy.detach().float().cpu(), _decode(model, model.encode(noisy, y), y)]


def completions(model: nn.Module, x: Tensor, y: Tensor | None = None, seed: int = 0) -> list[Tensor]:
    """[data, observed (hidden half gray), completed] rows for x (B, C, H, W) with its bottom half
    hidden: the model draws the hidden pixels given the top half (``complete``)."""
    with _evaluating(model):
        x = x.to(_device(model))
        observed = parse_mask("bottom-half", *x.shape[-2:])
        completed = model.complete(x, observed, _labels(model, y, len(x)), _generator(model, seed))
        masked = torch.where(observed.to(x.device), x, torch.full_like(x, HIDDEN_GRAY))
        return [t.detach().float().cpu() for t in (x, masked, completed)]


def most_active_dims(model: nn.Module, x: Tensor, y: Tensor | None, n: int) -> list[int]:
    """The ``n`` latent dimensions whose posterior mean varies most over the batch x.

    Cov_x(E_q[z_d]) is the activity measure of Burda et al. 2016; a VAE leaves many dimensions
    inactive (their codes equal the prior whatever the input), and traversing those shows nothing.
    """
    with _evaluating(model):
        x = x.to(_device(model))
        codes = model.encode(x, _labels(model, y, len(x)))  # (B, latent_dim)
        activity = codes.reshape(len(x), -1).var(0) if len(x) > 1 else codes.new_ones(codes[0].numel())
        return activity.argsort(descending=True)[:n].tolist()


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
    if hasattr(model, "encode") and hasattr(model, "decode"):
        xs, ys = x[:16], None if y is None else y[:16]
        paths.append(save_rows(reconstructions(model, xs, ys), out_dir / "reconstructions.png", ["data", "recon"]))
        dims = most_active_dims(model, x, y, 10)
        rows = latent_traversal(model, x[0], None if y is None else y[0], dims=dims)
        paths.append(save_rows(rows, out_dir / "latent_traversal.png", [f"z{d}" for d in dims]))
        pairs = min(4, len(x) // 2)
        if pairs:
            ya = yb = None
            if y is not None:
                ya, yb = y[:pairs], y[pairs : 2 * pairs]
            rows = interpolation(model, x[:pairs], x[pairs : 2 * pairs], ya, yb)
            paths.append(save_rows(rows, out_dir / "interpolation.png"))
    elif hasattr(model, "decode") and hasattr(model, "latent_dim"):  # a generator without an encoder
        paths.append(save_rows(prior_interpolation(model, 4, 10, seed), out_dir / "interpolation.png"))
    if model.conditional:
        rows = class_grid(model, 10, seed)
        paths.append(save_rows(rows, out_dir / "class_grid.png", [str(k) for k in range(len(rows))]))
    if hasattr(model, "corrupt") and hasattr(model, "encode") and hasattr(model, "decode"):
        rows = denoising_triples(model, x[:8], seed, None if y is None else y[:8])
        paths.append(save_rows(rows, out_dir / "denoising.png", ["clean", "corrupted", "denoised"]))
    if hasattr(model, "complete"):
        rows = completions(model, x[:8], None if y is None else y[:8], seed)
        paths.append(save_rows(rows, out_dir / "completions.png", ["data", "observed", "completed"]))
    return paths
