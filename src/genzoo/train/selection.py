"""Model selection on held-out training examples: score each checkpoint, keep the best weights.

A fixed random part of the training split (``--holdout N``) is never trained on and is scored at
every checkpoint by the model's likelihood (the ELBO, an importance-weighted bound, or the exact
NLL); ``model.safetensors`` keeps the weights with the best score and ``patience`` stops training
once it has not improved for that many checkpoints. This is the early stopping on a validation set
that published likelihoods assume, without touching the split that ``eval`` reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from genzoo.data.core import DataInfo, Split
from genzoo.evaluate.likelihood import fixed_inputs, likelihood_metrics
from genzoo.models.base import GenerativeModel
from genzoo.nn.mode import eval_mode

SELECTION_FILE = "selection.csv"  # one row per held-out score


@dataclass
class Selection:
    """The best held-out score so far, where it was reached, and the weights that reached it."""

    nats: float = math.inf
    step: int = 0
    checks_since: int = 0  # held-out scores since the best
    weights: dict[str, torch.Tensor] | None = None

    def update(self, model: GenerativeModel, holdout: Split, info: DataInfo, draws: int, step: int) -> float:
        """Score ``holdout`` under ``model`` (the noise re-seeded, so checkpoints meet the same draws); keep a new best.

        Every process scores the whole held-out set (same weights, same seeded noise: the same
        number), so all of them agree on stopping without communicating. Returns the score.
        """
        nats = likelihood_metrics(model, holdout, info, draws)["nll_nats"]
        if nats < self.nats:
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.nats, self.step, self.checks_since, self.weights = nats, step, 0, weights
        else:
            self.checks_since += 1
        return nats

    def append_row(self, path: Path, step: int, epoch: float, nats: float) -> None:
        with open(path, "a", newline="") as f:
            if f.tell() == 0:
                f.write("step,epoch,holdout_nats,best_nats,best_step\n")
            f.write(f"{step},{epoch:g},{nats},{self.nats},{self.step}\n")


def check_scorable(model: GenerativeModel, holdout: Split, info: DataInfo) -> None:
    """Refuse model selection for a model without a likelihood (GANs): there is nothing to score."""
    x, split, _ = fixed_inputs(holdout, info, model.input_kind, limit=1)
    labels = split.labels if model.conditional else None
    with torch.no_grad(), eval_mode(model):
        score = model.log_likelihood(x, labels)
    if score.value is None:
        raise ValueError(f"holdout: model selection scores the held-out likelihood, and {model.name} has none "
                         f"({score.reason}); train without --holdout")
