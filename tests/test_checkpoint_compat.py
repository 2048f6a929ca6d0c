"""Runs written by earlier versions of genzoo still load and score the same.

``tests/fixtures/run-v1-*`` are tiny runs (20 steps on digits) written by the v1 layout, with the
test-split scores that version computed (``eval_test_v1.json``: 10 importance samples, seed 0).
Rebuilding them through today's code (the one per-dimension likelihood hierarchy, its adapter of
the VAE decoder's (P*C, H, W) layout) must give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genzoo.models.registry import load_run
from genzoo.data.registry import load_split
from genzoo.evaluate.likelihood import likelihood_metrics

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("run", ["run-v1-vae", "run-v1-made"])
def test_a_v1_run_loads_and_scores_its_stored_test_nll(run):
    model, config = load_run(FIXTURES / run)
    expected = json.loads((FIXTURES / run / "eval_test_v1.json").read_text())
    info, split = load_split(config["data"]["name"], "test")
    metrics = likelihood_metrics(model, split, info, draws=10, seed=0)
    assert metrics["num_examples"] == expected["num_examples"]
    assert metrics["likelihood"] == expected["likelihood"]
    assert metrics["nll_nats"] == pytest.approx(expected["nll_nats"], rel=1e-4)
    if expected["neg_elbo_nats"] is not None:  # the VAE's ELBO, one draw of z
        assert metrics["neg_elbo_nats"] == pytest.approx(expected["neg_elbo_nats"], rel=1e-4)
