"""Figures of the 2-D density arena: the true density, the learned one, samples, latent codes.

Every panel is drawn on the dataset's fixed extent (``genzoo.data.toy2d``), so the panels of one
run, and of two runs, line up. The learned density is the model's log-likelihood on a grid (the
exact one, or a bound, as its title says); a model without one shows only its samples.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from genzoo.checkpoint import atomic_write
from genzoo.data.toy2d import get_toy2d
from genzoo.evaluate.arena import density_grid
from genzoo.models.base import GenerativeModel
from genzoo.nn.mode import eval_mode

GRID_RESOLUTION = 100  # cells per axis of a learned-density panel
GRID_DRAWS = 10  # draws per grid point of an estimated density (a picture: a VAE's 10-sample bound)
POINTS_SHOWN = 5000  # samples per scatter panel


def new_figure(panels: int, size: float = 3.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(size * panels, size + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def draw_scatter(ax, points: Tensor, extent: tuple[float, float], title: str) -> None:
    p = points[:POINTS_SHOWN].float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4, color="tab:blue", rasterized=True)
    _frame(ax, extent, title)


def _frame(ax, extent: tuple[float, float], title: str) -> None:
    ax.set_xlim(*extent)
    ax.set_ylim(*extent)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def draw_heatmap(ax, log_density: Tensor, extent: tuple[float, float], title: str) -> None:
    density = log_density.double().exp().cpu().numpy()  # (R, R), row i at y_i
    ax.imshow(density, origin="lower", extent=(*extent, *extent), cmap="viridis", interpolation="nearest")
    _frame(ax, extent, title)


def save_points(points: Tensor, path: str | os.PathLike, dataset: str, title: str | None = None) -> Path:
    """A scatter plot of points (N, 2) on the dataset's extent."""
    fig, (ax,) = new_figure(1, 4.0)
    draw_scatter(ax, points, get_toy2d(dataset).extent, title or f"{len(points):,} samples")
    return _save(fig, path)


@torch.no_grad()
def learned_log_density(model: GenerativeModel, extent: tuple[float, float],
                        resolution: int = GRID_RESOLUTION) -> tuple[Tensor, str] | None:
    """The model's log-density on the grid (R, R) and a title saying what kind it is; None without one."""
    if not model.estimators:
        return None
    generator = torch.Generator(model.device).manual_seed(0)
    draws = min(GRID_DRAWS, model.eval_defaults.draws)

    kinds = set()

    def log_prob(points: Tensor) -> Tensor:
        result = model.log_likelihood(points.to(model.device, torch.float32), None, draws, generator)
        kinds.add(result.kind)
        return result.value.cpu()

    with eval_mode(model):
        log_density, _, _ = density_grid(log_prob, extent, resolution, batch_size=1024)  # x draws in memory
    (kind,) = kinds
    what = {"exact": "exact", "lower_bound": f"lower bound, {draws} draws", "estimate": "estimate",
            "numerical": "numerical"}[kind]
    return log_density, f"{model.name}: density ({what})"


@torch.no_grad()
def write_arena_figures(model: GenerativeModel, test: Tensor, out_dir: str | os.PathLike, seed: int = 0) -> list[Path]:
    """density.png (true density, learned density where the model has one, samples, side by side)
    and, for latent models, latent_space.png (the test points' codes). Returns the paths written."""
    dataset = model.info.name
    spec = get_toy2d(dataset)
    out_dir = Path(out_dir)
    with eval_mode(model):
        samples = model.generate(POINTS_SHOWN, None, torch.Generator(model.device).manual_seed(seed)).cpu()
    learned = learned_log_density(model, spec.extent)
    fig, axes = new_figure(3 if learned else 2)
    true_grid, _, _ = density_grid(spec.log_prob, spec.extent, GRID_RESOLUTION)
    draw_heatmap(axes[0], true_grid, spec.extent, f"{dataset}: true density")
    if learned:
        draw_heatmap(axes[1], *learned[:1], spec.extent, learned[1])
    draw_scatter(axes[-1], samples, spec.extent, f"{model.name}: {min(len(samples), POINTS_SHOWN):,} samples")
    paths = [_save(fig, out_dir / "density.png")]
    if model.can("encode") or model.can("invert"):  # a flow's z = f(x): the data gaussianised
        with eval_mode(model):
            codes = model.encode(test[:POINTS_SHOWN].to(model.device)).cpu()  # (N, d)
        paths.append(save_latent_space(codes, test[:POINTS_SHOWN], out_dir / "latent_space.png", model.name))
    return paths


def save_latent_space(codes: Tensor, points: Tensor, path: str | os.PathLike, name: str) -> Path:
    """The first two latent dimensions of the test points' codes, coloured by the points' angle."""
    angle = np.arctan2(points[:, 1].numpy(), points[:, 0].numpy())
    fig, (ax,) = new_figure(1, 4.0)
    z = codes.float().numpy()
    second = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
    ax.scatter(z[:, 0], second, s=1, c=angle, cmap="hsv", alpha=0.5, rasterized=True)
    ax.set_xlabel("z_1", fontsize=8)
    ax.set_ylabel("z_2" if z.shape[1] > 1 else "", fontsize=8)
    ax.set_title(f"{name}: codes of {len(z):,} test points\n(colour: the point's angle)", fontsize=9)
    ax.tick_params(labelsize=7)
    return _save(fig, path)


def save_points_over_training(record: dict[int, Tensor], path: str | os.PathLike, dataset: str) -> Path:
    """One scatter panel per checkpoint step of ``record`` (step -> points (N, 2))."""
    extent = get_toy2d(dataset).extent
    fig, axes = new_figure(len(record), 2.4)
    for ax, (step, points) in zip(axes, sorted(record.items())):
        draw_scatter(ax, points, extent, f"step {step:,}")
    return _save(fig, path)


COMPONENTS_SHOWN = 32  # ellipses per model in a comparison: a mixture's K components, or draws p(x | z_i)


def _ellipses(ax, weights: Tensor, means: Tensor, covariances: Tensor) -> None:
    """Each component's 2-sigma ellipse, its opacity by its weight: weights (K,), means (K, 2), covariances (K, 2, 2)."""
    from matplotlib.patches import Ellipse
    alpha = (weights / weights.max()).clamp(0.15, 1.0)
    for w, mu, cov in zip(alpha.tolist(), means.double().cpu(), covariances.double().cpu()):
        variances, axes = torch.linalg.eigh(cov)  # ascending
        angle = float(torch.rad2deg(torch.atan2(axes[1, 1], axes[0, 1])))
        width, height = (4 * variances.clamp_min(0).sqrt()).tolist()[::-1]
        ax.add_patch(Ellipse(mu.tolist(), width, height, angle=angle, fill=False, color="white", alpha=w, lw=0.8))


@torch.no_grad()
def save_arena_comparison(models: list[GenerativeModel], titles: list[str], path: str | os.PathLike,
                          seed: int = 0) -> Path:
    """Several models of one 2-D dataset side by side: the true density, then each model's density
    (with its Gaussian components as 2-sigma ellipses, where it is a mixture of Gaussians: a GMM's
    K, or draws p(x | z_i) of a VAE, an infinite mixture) and its samples."""
    spec = get_toy2d(models[0].info.name)
    fig, axes = new_figure(1 + 2 * len(models))
    true_grid, _, _ = density_grid(spec.log_prob, spec.extent, GRID_RESOLUTION)
    draw_heatmap(axes[0], true_grid, spec.extent, f"{spec.name}: true density")
    for i, (model, title) in enumerate(zip(models, titles)):
        density_ax, samples_ax = axes[1 + 2 * i], axes[2 + 2 * i]
        learned = learned_log_density(model, spec.extent)
        if learned:
            draw_heatmap(density_ax, learned[0], spec.extent, f"{title}: density")
        else:
            _frame(density_ax, spec.extent, f"{title}: no density")
        with eval_mode(model):
            generator = torch.Generator(model.device).manual_seed(seed)
            components = model.gaussian_components(COMPONENTS_SHOWN, generator)
            samples = model.generate(POINTS_SHOWN, None, generator).cpu()
        if components is not None:
            order = components[0].argsort(descending=True)[:COMPONENTS_SHOWN]
            _ellipses(density_ax, *(c[order] for c in components))
        draw_scatter(samples_ax, samples, spec.extent, f"{title}: {len(samples):,} samples")
    return _save(fig, path)
