"""Recipes: named, versioned training configurations of one model on one dataset.

A recipe is a stored ``genzoo train`` command line with its budget: the model, the datasets it
is for, the flags beside the budget (model and training options, as a user would type them), the
budget in optimizer steps (the learning-rate schedule spans exactly these steps; a wall-clock
cap only stops a run that is slower than planned), and how its run is evaluated. Each family
lists its recipes beside its models (``genzoo.models.<family>.RECIPES``); the registry gathers
them, and ``genzoo train MODEL --recipe NAME`` and ``genzoo bench`` run them.

A recipe is versioned: change anything in it and bump ``version``, so that a results record
of the old version is never taken for a result of the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.toy2d import TOY2D

ARENA = tuple(TOY2D)  # the four 2-D datasets, which one arena recipe fits
RECIPE_SETS = ("short", "full")  # the recipe sets of `genzoo bench --recipe-set`


@dataclass(frozen=True)
class Reference:
    """A published number to read a result against."""

    value: float
    metric: str  # the results key it compares with, e.g. "nll_nats"
    source: str  # paper and table, or repository and file
    note: str = ""  # how it differs from the recipe: "converged, hundreds of GPU epochs", ...


@dataclass(frozen=True)
class Recipe:
    """One model's training configuration and budget on the datasets in ``data``."""

    name: str
    model: str
    data: tuple[str, ...]  # the datasets it is for (usually one; the 2-D arena's recipes fit all four)
    steps: int | None  # the budget in optimizer steps; None: the dataset's default epochs
    flags: tuple[str, ...] = ()  # `genzoo train MODEL` flags beside the data and the budget
    description: str = ""  # the network and set-up in a few words (a results table's "set-up" column)
    version: int = 1
    sets: tuple[str, ...] = ()  # of RECIPE_SETS: the bench recipe sets it belongs to
    max_minutes: float | None = None  # wall-clock cap on training (the budget is ``steps``)
    init_from: str | None = None  # the recipe whose trained weights this one starts from
    eval_metrics: str | None = None  # `genzoo eval --metrics` (None: all of the data's kind)
    eval_draws: int | None = None  # draws per example of an estimated likelihood (None: the model's default)
    eval_minutes: float = 30.0  # evaluation cap: past it the NLL is taken on a fixed random subset (said so)
    reference: Reference | None = None

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"recipe {self.name}: steps={self.steps} must be >= 1")
        unknown = [s for s in self.sets if s not in RECIPE_SETS]
        if unknown:
            raise ValueError(f"recipe {self.name}: unknown recipe set(s) {', '.join(unknown)}; one of "
                             f"{', '.join(RECIPE_SETS)}")
        taken = {"--data", "--epochs", "--max-steps", "--init-from", "--out", "--resume", "--data-root"}
        if clash := taken.intersection(self.flags):
            raise ValueError(f"recipe {self.name}: {', '.join(sorted(clash))} belong to the recipe's fields "
                             "or to the user, not to its flags")

    def train_flags(self, max_steps: int | None = None) -> list[str]:
        """The recipe's flags and its budget (``max_steps`` overrides it): what follows ``train MODEL``."""
        steps = max_steps or self.steps
        cap = ["--max-minutes", f"{self.max_minutes:g}"] if self.max_minutes else []
        return [*self.flags, *(["--max-steps", str(steps)] if steps else []), *cap]


def default_recipe(model: str, data: str) -> Recipe:
    """A model's own defaults on a dataset, for ``genzoo bench`` where no recipe is registered."""
    return Recipe(f"{model}-default", model, (data,), None,
                  description="the model's defaults, the dataset's default epochs")
