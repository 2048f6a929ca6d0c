"""Loss curves: the trainer's CSV log drawn one panel per distinct term, each with its unit, and
the held-out score beside the training term it estimates.

Plots use matplotlib's object API with the Agg canvas (no pyplot), so importing this module
changes no global matplotlib state.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genzoo.checkpoint import atomic_write

NOT_PLOTTED = ("step", "epoch", "lr", "examples_per_s")  # CSV columns that are not loss terms

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


# The unit of each logged term (the part after "phase/"); terms not listed are drawn without one.
# Every model's loss is a negative log-likelihood, a bound on one, or a cross-entropy: nats;
# the exception is a Wasserstein critic's, in the critic's own units (see ``term_unit``).
NATS_TERMS = ("loss", "neg_elbo", "recon", "kl", "nll", "neg_iwae", "neg_dvae_bound", "neg_elbo_estimate",
              "T", "T_q", "T_p")
TERM_UNITS = {**dict.fromkeys(NATS_TERMS, "nats"), "d_real": "probability", "d_fake": "probability",
              "fake_diversity": "x the data's spread", "critic_real": "critic units", "critic_fake": "critic units",
              "wasserstein": "critic units"}
HELD_OUT_TERMS = ("neg_elbo", "nll", "neg_iwae", "loss")  # the first present is the term a held-out score is drawn with


def term_unit(name: str, names: list[str]) -> str | None:
    """The unit of logged term ``name`` ("discriminator/loss") in a log with columns ``names``."""
    base = name.rsplit("/", 1)[-1]
    if base == "loss" and any(n.endswith("/wasserstein") for n in names):  # a WGAN's players
        return "critic units"
    return TERM_UNITS.get(base)


def identical_groups(terms: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[list[str]]:
    """Term names grouped so that terms with the same logged series (steps and values) share a group
    ("loss" and "neg_elbo" of a VAE with beta 1), in the order of first appearance. Values equal to
    float32 round-off (relative 1e-6) count as the same: an IWAE's loss is its bound plus a
    surrogate minus itself."""
    groups: list[list[str]] = []
    for name, (steps, values) in terms.items():
        for group in groups:
            other_steps, other_values = terms[group[0]]
            if np.array_equal(steps, other_steps) and np.allclose(values, other_values, rtol=1e-6, atol=0):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def read_held_out(csv_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, held-out nats) from the trainer's selection CSV, None when it is absent or empty."""
    if not Path(csv_path).exists():
        return None
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    return np.array([float(r["step"]) for r in rows]), np.array([float(r["holdout_nats"]) for r in rows])


def save_loss_curves(csv_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Plot each distinct logged term against the optimizer step, one subplot per term sharing x;
    returns the path.

    The raw values are a faint line, a centred moving average (window ~5% of the points) a solid
    one; each y axis names its unit (``term_unit``). Terms whose logged series are identical share
    one panel titled with all their names. A multi-player model (columns "discriminator/loss",
    "generator/loss", ...) gets a first panel with every player's loss together. When the trainer
    scored held-out examples (``selection.csv`` beside the CSV), their score is drawn as points on
    the panel of the training term it estimates (the first of ``HELD_OUT_TERMS``). None, and
    nothing written, when the CSV has no rows or no numeric term.
    """
    from genzoo.train.selection import (
        SELECTION_FILE,  # here: the trainer's package is heavy to import
    )

    terms = read_log_terms(csv_path)
    if not terms:
        return None
    panels = [(" = ".join(group), group) for group in identical_groups(terms)]  # (title, its terms)
    player_losses = [name for name in terms if name.endswith("/loss")]
    if len(player_losses) > 1:
        panels.insert(0, ("players' losses", player_losses))
    held_out = read_held_out(Path(csv_path).parent / SELECTION_FILE)
    on = None  # the panel that shows the held-out score
    if held_out is not None:
        scored = next((term for term in HELD_OUT_TERMS if term in terms), None)
        on = next((i for i, (_, group) in enumerate(panels) if scored in group), None)
        if on is None:  # no training term that it estimates: a panel of its own
            panels.append(("held-out score", []))
            on = len(panels) - 1
    fig = Figure(figsize=(7, 2.0 * len(panels) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for index, (ax, (title, group)) in enumerate(zip(axes, panels)):
        lines = identical_groups({name: terms[name] for name in group})  # each distinct series once
        for color, same in enumerate(lines):
            steps, values = terms[same[0]]
            window = max(1, len(values) // 20)
            ax.plot(steps, values, color=f"C{color}", alpha=0.3, linewidth=0.8)
            ax.plot(steps, _moving_average(values, window), color=f"C{color}", linewidth=1.5,
                    label=" = ".join(same))
        units = {term_unit(name, list(terms)) for name in group}
        if index == on:
            ax.plot(*held_out, "o-", color="black", markersize=3, linewidth=1, label="held-out score")
            units |= {"nats"}
        if len(lines) > 1 or (index == on and lines):
            ax.legend(fontsize="small")
        ax.set_title(title, fontsize="medium", loc="left")
        ax.set_ylabel(units.pop() if len(units) == 1 and None not in units else "")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(Path(out_path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))

