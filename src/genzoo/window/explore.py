"""What the browser app does, as plain functions of loaded runs: sample, move through a latent space, turn a
drawing into data, complete images, score densities, rank bench results.

No Gradio here: ``genzoo.window.app`` wires these functions to widgets, and the tests call them directly.
Nothing the browser sends is a path: a model is picked by its run's title among the runs loaded at start,
a test example by its index, and a drawing is an array whose size, shape and values are checked before use.
Every refusal is a ``ValueError`` of one line.

A drawing or a 2-D point enters a model the way a test example does: as one example in the dataset's stored
form (``drawing_to_levels``), then through ``fixed_inputs``, which binarises or dequantises it as evaluation
does, so that its NLL is comparable with the test split's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from genzoo.bench.records import RESULTS_FILE, read_results
from genzoo.bench.tables import default_view, markdown, select
from genzoo.data.core import DataInfo, Split, bits_per_dim, check_finite, nats_offset
from genzoo.data.registry import load_split
from genzoo.data.toy2d import get_toy2d
from genzoo.evaluate.completion import check_can_inpaint, inpaint, parse_mask
from genzoo.evaluate.latent import kl_per_dim, latent_activity
from genzoo.evaluate.likelihood import fixed_inputs
from genzoo.figures.arena import (
    draw_heatmap,
    draw_scatter,
    learned_log_density,
    new_figure,
)
from genzoo.figures.grids import image_grid
from genzoo.figures.model import (
    decoded,
    evaluating,
    interpolation,
    seeded_generator,
    slerp,
    traversal_labels,
    traversal_values,
)
from genzoo.models.base import GenerativeModel
from genzoo.models.registry import load_run
from genzoo.nn.mode import eval_mode
from genzoo.window.run_view import KIND_WORDS, RunView, open_runs

MAX_SAMPLES = 64  # draws per request: one grid the page shows at once
MAX_STEPS = 1000  # sampling steps per request (a diffusion model's full chain)
MAX_COMPLETIONS = 16  # completions per request
MAX_DRAWING_SIDE = 2048  # pixels: a canvas, not a photograph
INK_THRESHOLD = 0.1  # ink (0..1) above which a pixel counts towards the drawing's bounding box
INK_FRACTION = 20 / 28  # MNIST centres each digit's 20x20 box in a 28x28 frame
LATENT_SLIDERS = 10  # latent dimensions offered, the most active first, as the traversal figure
ACTIVITY_EXAMPLES = 1000  # test examples whose codes rank the latent dimensions (a variance: a subset suffices)
INTERPOLATION_PATHS = ("linear", "spherical")


@dataclass(eq=False)  # identity hash: the per-run caches below key on the object
class LoadedRun:
    """A run's model and its test split, as the model's likelihood sees it."""

    view: RunView
    model: GenerativeModel  # in eval mode, on the CPU
    inputs: Tensor  # (N, *shape): the test split in the model's representation (``fixed_inputs``)
    labels: Tensor | None  # (N,) int64, None for unlabelled data
    seen: DataInfo  # the data as ``inputs`` are (binary after static binarisation): units for nats and bits

    @property
    def title(self) -> str:
        return self.view.title

    @property
    def info(self) -> DataInfo:
        """The dataset as stored: what a drawing is converted to."""
        return self.model.info


def load_runs(paths: list[str | Path]) -> dict[str, LoadedRun]:
    """The runs at ``paths`` by title, each with its weights (safetensors) and test split.

    Not a run, runs of different datasets, or two runs of one title: one line each.
    """
    runs: dict[str, LoadedRun] = {}
    for view in open_runs(paths, one_dataset=True):
        if view.title in runs:
            raise ValueError(f"{runs[view.title].view.path} and {view.path} share the title {view.title!r}: "
                             "give each run once, from directories of different names")
        model, config = load_run(view.path)
        info, split = load_split(view.dataset, "test", config["train"].get("data_root"))
        inputs, split, seen = fixed_inputs(split, info, model.input_kind)
        runs[view.title] = LoadedRun(view, model, inputs, split.labels, seen)
    return runs


def find_run(runs: dict[str, LoadedRun], title: str) -> LoadedRun:
    """The loaded run called ``title``; any other name is refused (the page offers only these)."""
    if title not in runs:
        raise ValueError(f"no loaded run is called {title!r}; choose one of: {', '.join(runs)}")
    return runs[title]


# --- inputs: test examples, drawings, labels -----------------------------------------------------
def check_index(run: LoadedRun, index: int) -> int:
    if not 0 <= index < len(run.inputs):
        raise ValueError(f"test example {index} does not exist: the test split of {run.view.dataset} has "
                         f"{len(run.inputs):,} (0..{len(run.inputs) - 1})")
    return int(index)


def model_input(run: LoadedRun, index: int | None = None, stored: Tensor | None = None) -> Tensor:
    """One input (*shape) as the run's model sees it: test example ``index``, or ``stored``, one example in
    the dataset's stored form (a drawing's levels, a 2-D point), given the test split's treatment."""
    if (index is None) == (stored is None):
        raise ValueError("give either a test example's index or a drawing")
    if index is not None:
        return run.inputs[check_index(run, index)]
    if tuple(stored.shape) != run.info.shape:
        raise ValueError(f"the input has shape {tuple(stored.shape)}; {run.view.dataset} examples are {run.info.shape}")
    check_finite(stored.float(), "the input")
    inputs, _, _ = fixed_inputs(Split(stored[None], None, "test", "given in the app"), run.info, run.model.input_kind)
    return inputs[0]


def conditioning(run: LoadedRun, label: int | None, index: int | None = None) -> int | None:
    """The class a conditional model is given: ``label``, else test example ``index``'s own; None for an
    unconditional model, which takes none."""
    if not run.model.conditional:
        return None
    if label is None and index is not None and run.labels is not None:
        label = int(run.labels[check_index(run, index)])
    classes = run.info.num_classes
    if label is None or not 0 <= label < classes:
        raise ValueError(f"{run.title} is conditional: give a label from 0 to {classes - 1}")
    return int(label)


def drawing_to_levels(drawing: np.ndarray, info: DataInfo) -> Tensor:
    """A drawing (dark strokes on a light canvas) as one example of the dataset in its stored form (C, H, W).

    1. Check: a 2-D (H, W) or 3-D (H, W, 1 | 3 | 4) array (gray, RGB, RGBA) of at most 2,048 pixels a side,
       uint8 levels 0..255 or finite floats in [0, 1].
    2. Gray: luma 0.299 R + 0.587 G + 0.114 B (ITU-R 601, Pillow's "L"), its alpha composited on white:
       gray = alpha * luma + (1 - alpha), in [0, 1].
    3. Invert: ink = 1 - gray, so strokes are bright on black, as in MNIST.
    4. Crop to the bounding box of the pixels with ink above 0.1 (an empty canvas is refused), pad it with
       black, centred, to the data's aspect ratio, then by a margin so that the ink's box spans 20/28 of each
       side, as MNIST centres a 20x20 digit in its 28x28 frame.
    5. Resize to the data's H x W with Pillow's Lanczos filter (antialiasing), clipped to [0, 1].
    6. To the data's value type: binary data thresholded at 0.5 (uint8 0 or 1), K-level data rounded to the
       nearest of its K levels (uint8 0..K-1), continuous data kept as floats in [0, 1]; every channel the same.
    """
    if info.kind != "image":
        raise ValueError(f"{info.name} holds {info.dim}-D points, not images: give a point instead of a drawing")
    # 1. check
    if drawing.ndim not in (2, 3) or (drawing.ndim == 3 and drawing.shape[2] not in (1, 3, 4)):
        raise ValueError(f"a drawing must be (H, W) gray or (H, W, 1|3|4) gray/RGB/RGBA, got {drawing.shape}")
    if max(drawing.shape[:2]) > MAX_DRAWING_SIDE or min(drawing.shape[:2]) < 1:
        raise ValueError(f"a drawing of {drawing.shape[1]}x{drawing.shape[0]} pixels: draw on a canvas of at most "
                         f"{MAX_DRAWING_SIDE}x{MAX_DRAWING_SIDE}")
    if drawing.dtype == np.uint8:
        pixels = drawing.astype(np.float32) / 255
    elif np.issubdtype(drawing.dtype, np.floating):
        pixels = drawing.astype(np.float32)
        if not np.isfinite(pixels).all():
            raise ValueError("the drawing contains NaN or infinite values")
        if pixels.min() < 0 or pixels.max() > 1:
            raise ValueError("a drawing of floats must lie in [0, 1]")
    else:
        raise ValueError(f"a drawing must be uint8 or float, got {drawing.dtype}")
    # 2. gray, on white
    pixels = pixels.reshape(*pixels.shape[:2], -1)  # (H, W, channels)
    colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
    luma = colour @ np.array([0.299, 0.587, 0.114], np.float32) if colour.shape[2] == 3 else colour[..., 0]
    alpha = pixels[..., 3] if pixels.shape[2] == 4 else 1.0
    # 3. invert
    ink = 1 - (alpha * luma + (1 - alpha))  # (H, W)
    # 4. crop to the ink, centre it with MNIST's margin
    rows, columns = np.nonzero(ink > INK_THRESHOLD)
    if not len(rows):
        raise ValueError("the drawing is empty: draw something first")
    ink = ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    _, height, width = info.shape
    box_h, box_w = ink.shape
    frame_h = math.ceil(max(box_h, box_w * height / width) / INK_FRACTION)
    frame_w = math.ceil(max(box_w, box_h * width / height) / INK_FRACTION)
    framed = np.zeros((frame_h, frame_w), np.float32)
    top, left = (frame_h - box_h) // 2, (frame_w - box_w) // 2
    framed[top:top + box_h, left:left + box_w] = ink
    # 5. resize
    small = np.asarray(Image.fromarray(framed).resize((width, height), Image.Resampling.LANCZOS)).clip(0, 1)
    # 6. the data's values
    if info.value_type == "continuous":
        values = torch.from_numpy(small.astype(np.float32))
    elif info.value_type == "binary":
        values = torch.from_numpy((small >= 0.5).astype(np.uint8))
    else:
        values = torch.from_numpy(np.rint(small * (info.num_levels - 1)).astype(np.uint8))
    return values.expand(info.shape[0], height, width).clone()  # (C, H, W)


# --- pictures ------------------------------------------------------------------------------------
def figure_image(fig: Figure) -> Image.Image:
    """A Matplotlib figure (with its Agg canvas) rendered as an RGB picture."""
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")


def picture(run: LoadedRun, examples: Tensor, title: str = "") -> Image.Image:
    """Examples (n, *shape) as a picture: an image grid of about sqrt(n) columns, or for 2-D points a scatter
    plot on the dataset's extent."""
    if run.info.kind == "image":
        return image_grid(examples, nrow=max(1, round(math.sqrt(len(examples)))))
    fig, (ax,) = new_figure(1, 4.0)
    draw_scatter(ax, examples, get_toy2d(run.view.dataset).extent, title or f"{len(examples):,} points")
    return figure_image(fig)


# --- the sample tab ------------------------------------------------------------------------------
def sample(run: LoadedRun, n: int, seed: int, sampler: str | None = None, label: int | None = None,
           **options: float | None) -> Tensor:
    """``n`` draws (n, *shape) in the model's representation (images in [0, 1]) by ``sampler`` (None: the
    model's default) with its ``options`` (``SAMPLING_OPTIONS``; None: the sampler's default), from a
    generator seeded ``seed``. A conditional model draws class ``label``, or classes 0..K-1 in turn.
    An option the sampler lacks is refused by ``generate``, in one line."""
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"draw 1 to {MAX_SAMPLES} samples at a time, not {n}")
    if options.get("steps") is not None and not 1 <= options["steps"] <= MAX_STEPS:
        raise ValueError(f"sampling steps must lie in 1..{MAX_STEPS}, not {options['steps']}")
    model = run.model
    if label is not None and not model.conditional:
        raise ValueError(f"{run.title} is unconditional: it takes no label")
    labels = None
    if model.conditional:
        labels = torch.arange(n) % model.info.num_classes if label is None else torch.full((n,), label)
        labels = labels.to(model.device)
    with evaluating(model):
        return model.generate(n, labels, seeded_generator(model, seed), sampler=sampler, **options).float().cpu()


# --- the latent explorer -------------------------------------------------------------------------
def check_can_encode(run: LoadedRun) -> None:
    if not run.model.can("encode"):
        raise ValueError(f"{run.title} has no latent code to explore: the latent explorer needs an encoder "
                         "(the VAE family, AAE); a flow's z is as large as the image")
    if run.info.kind != "image":
        raise ValueError(f"the latent explorer shows decoded images; {run.view.dataset} holds {run.info.dim}-D points")


@functools.cache
def latent_ranking(run: LoadedRun) -> tuple[list[int], list[str]]:
    """(the ``LATENT_SLIDERS`` most active latent dimensions, most active first; a label for each), ranked and
    labelled as the traversal figure does (``latent_activity``, ``kl_per_dim``, ``traversal_labels``)."""
    check_can_encode(run)
    x = run.inputs[:ACTIVITY_EXAMPLES]
    y = None if run.labels is None else run.labels[:ACTIVITY_EXAMPLES]
    activity, kl = latent_activity(run.model, x, y), kl_per_dim(run.model, x, y)  # (latent_dim,) each
    dims = activity.argsort(descending=True)[:LATENT_SLIDERS].tolist()
    return dims, [label.replace("\n", ", ") for label in traversal_labels(dims, activity, kl)]


def _encoded(run: LoadedRun, index: int) -> tuple[Tensor, Tensor | None]:
    """(the code of test example ``index`` (1, *latent shape), its label (1,) or None); call under ``evaluating``."""
    check_can_encode(run)
    label = conditioning(run, None, index)
    y = None if label is None else torch.tensor([label], device=run.model.device)
    return run.model.encode(run.inputs[check_index(run, index)][None].to(run.model.device), y), y


def latent_code(run: LoadedRun, index: int) -> Tensor:
    """The code of test example ``index``, flattened: (D,)."""
    with evaluating(run.model):
        return _encoded(run, index)[0].reshape(-1).float().cpu()


def decode_moved(run: LoadedRun, index: int, moved: dict[int, float]) -> Tensor:
    """decode(z) (C, H, W) where z is test example ``index``'s code with coordinates d set to ``moved[d]``
    (a latent perturbation, as the traversal figure's, of several coordinates at once)."""
    with evaluating(run.model):
        z, y = _encoded(run, index)  # (1, latent_dim)
        flat = z.reshape(1, -1).clone()  # (1, D)
        for d, value in moved.items():
            if not 0 <= d < flat.shape[1] or not math.isfinite(value):
                raise ValueError(f"latent coordinate z{d} = {value}: the code has {flat.shape[1]} finite coordinates")
            flat[0, d] = value
        return decoded(run.model, flat.reshape(z.shape), y)[0]


def slider_range(value: float) -> tuple[float, float]:
    """A slider's range: the traversal figure's (``traversal_values``), widened to hold the code's ``value``."""
    values = traversal_values()
    return min(values[0].item(), value), max(values[-1].item(), value)


def interpolate(run: LoadedRun, a: int, b: int, steps: int = 10, path: str = "linear") -> Tensor:
    """decode along a path from test example a's code to b's: (steps, C, H, W). ``linear``: the straight line
    (``interpolation``); ``spherical``: the great circle (``slerp``), which keeps a Gaussian code's norm typical.
    A conditional model decodes every step with a's label."""
    if path not in INTERPOLATION_PATHS:
        raise ValueError(f"unknown interpolation path {path!r}; one of: {', '.join(INTERPOLATION_PATHS)}")
    if not 2 <= steps <= MAX_SAMPLES:
        raise ValueError(f"interpolate in 2 to {MAX_SAMPLES} steps, not {steps}")
    check_can_encode(run)
    if path == "linear":
        ends = [run.inputs[check_index(run, i)][None] for i in (a, b)]  # (1, C, H, W) each
        labels = [None if run.labels is None else run.labels[i:i + 1] for i in (a, b)]
        return interpolation(run.model, *ends, *labels, steps=steps)[0]
    with evaluating(run.model):
        (z_a, y), (z_b, _) = _encoded(run, a), _encoded(run, b)
        t = torch.linspace(0, 1, steps, device=z_a.device)
        codes = slerp(z_a.reshape(1, -1), z_b.reshape(1, -1), t)[:, 0]  # (steps, D)
        return decoded(run.model, codes.reshape(steps, *z_a.shape[1:]), None if y is None else y.expand(steps))


# --- draw and complete ---------------------------------------------------------------------------
def complete(run: LoadedRun, mask: str, n: int, seed: int = 0, index: int | None = None,
             stored: Tensor | None = None, label: int | None = None) -> dict:
    """``n`` completions of test example ``index`` or of a drawing (``stored`` levels) with the pixels outside
    mask ``mask`` (``parse_mask``: bottom-half, random:0.5, ...) hidden, by the model's ``complete``.

    ``inpaint``'s dict (completions (n, C, H, W), masked (C, H, W), the conditional NLL where the model has
    one), plus "image": the input as the model saw it (C, H, W).
    """
    if not 1 <= n <= MAX_COMPLETIONS:
        raise ValueError(f"draw 1 to {MAX_COMPLETIONS} completions at a time, not {n}")
    check_can_inpaint(run.model)
    image = model_input(run, index, stored)
    observed = parse_mask(mask, *run.info.shape[1:], seed=seed)
    result = inpaint(run.model, image, observed, n, conditioning(run, label, index), seed)
    return {**result, "image": image}


# --- densities -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Density:
    """One model's NLL of one input, and what kind of number it is."""

    title: str
    kind: str  # of LIKELIHOOD_KINDS
    nll_nats: float | None  # -log p(x) (plus D log K for a continuous density of discrete data), None if unavailable
    bits_per_dim: float | None
    note: str  # the kind in words, and how the number was made or why there is none


def density(run: LoadedRun, index: int | None = None, stored: Tensor | None = None, label: int | None = None,
            seed: int = 0) -> Density:
    """The NLL of test example ``index`` or of ``stored`` (a drawing's levels, a 2-D point) under the run's model,
    as ``likelihood_metrics`` scores the test split: the model's default estimator with its evaluation draws
    (``eval_defaults.draws``) from a generator seeded ``seed``, in nats and bits/dim of the data as seen."""
    model = run.model
    x = model_input(run, index, stored)[None].to(model.device)  # (1, *shape)
    try:
        label = conditioning(run, label, index)
    except ValueError as e:
        return Density(run.title, "unavailable", None, None, f"unavailable: {e}")
    y = None if label is None else torch.tensor([label], device=model.device)
    generator = torch.Generator(model.device).manual_seed(seed)
    with eval_mode(model), torch.no_grad():
        result = model.log_likelihood(x, y, num_samples=model.eval_defaults.draws, generator=generator)
    words = KIND_WORDS[result.kind] + (f": {result.reason}" if result.reason else "")
    if result.value is None:
        return Density(run.title, result.kind, None, None, words)
    nll = -result.value.item() + nats_offset(run.seen, model.input_kind)
    return Density(run.title, result.kind, nll, bits_per_dim(nll, run.seen), words)


def densities(runs: list[LoadedRun], index: int | None = None, stored: Tensor | None = None,
              label: int | None = None, seed: int = 0) -> list[Density]:
    """``density`` of one input under each run's model."""
    return [density(run, index, stored, label, seed) for run in runs]


@functools.cache
def _log_density_grid(run: LoadedRun) -> tuple[Tensor, str] | None:
    """``learned_log_density`` on the dataset's extent, computed once per run: it does not depend on the point."""
    return learned_log_density(run.model, get_toy2d(run.view.dataset).extent)


def density_map(runs: list[LoadedRun], point: tuple[float, float]) -> Image.Image:
    """One panel per 2-D run with a density: its learned density on the dataset's extent
    (``learned_log_density``) with ``point`` marked."""
    if any(run.info.kind != "vector" for run in runs):
        raise ValueError("density maps are drawn for 2-D data only")
    grids = [(run, grid) for run in runs if (grid := _log_density_grid(run)) is not None]
    if not grids:
        raise ValueError("none of the loaded models defines a density")
    extent = get_toy2d(runs[0].view.dataset).extent
    fig, axes = new_figure(len(grids))
    for ax, (run, (log_density, what)) in zip(axes, grids):
        draw_heatmap(ax, log_density, extent, f"{run.title}\n{what}")
        ax.plot(*point, marker="+", markersize=12, color="red")
    return figure_image(fig)


# --- the leaderboard -----------------------------------------------------------------------------
def read_bench(directory: str | Path) -> list[dict]:
    """The records of ``directory``/results.jsonl; a directory without any fails in one line."""
    path = Path(directory) / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"--bench {directory} has no {RESULTS_FILE}: give a directory written by "
                         "`genzoo bench --data DATASET --out DIR` or `genzoo bench import RUN_DIR --out DIR`")
    records = read_results(path)
    if not records:
        raise ValueError(f"{path} holds no records: run `genzoo bench --data DATASET --out {directory}` first")
    return records


def leaderboard_choices(records: list[dict]) -> tuple[list[str], list[str]]:
    """(the families, the likelihood kinds) of the latest records, to filter by."""
    rows = select(records)
    return (sorted({r["family"] for r in rows if r.get("family")}),
            sorted({r["likelihood"] for r in rows if r.get("likelihood")}))


def leaderboard(records: list[dict], family: str | None = None, kind: str | None = None) -> str:
    """The latest record of each run (``select``) of model family ``family`` and likelihood kind ``kind``
    (None: any), as the bench's markdown table in its default view."""
    rows = [r for r in select(records, families=[family] if family else None)
            if kind is None or r.get("likelihood") == kind]
    if not rows:
        return f"No results of family {family or 'any'} with likelihood {kind or 'any'}."
    return markdown(rows, default_view(rows))
