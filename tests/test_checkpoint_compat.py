"""Runs written by earlier versions of genzoo still load and score the same.

``tests/fixtures/run-v1-*`` are tiny runs (20 steps on digits) written by the v1 layout, with the
test-split scores that version computed (``eval_test_v1.json``: 10 importance samples, seed 0).
Rebuilding them through today's code (the one per-dimension likelihood hierarchy, its adapter of
the VAE decoder's (P*C, H, W) layout) must give the same numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from genzoo.cli import main
from genzoo.data.registry import load_split
from genzoo.evaluate.likelihood import likelihood_metrics
from genzoo.models.registry import load_run

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


@pytest.mark.parametrize("damage, message", [
    (lambda config: config.update(model="pixelsnail"), "cannot rebuild its model: unknown model 'pixelsnail'"),
    (lambda config: config["model_config"].update(decoder_depth=3), "unknown option(s) decoder_depth"),
    (lambda config: config["model_config"].update(hidden_dim=32), "does not hold weights of model 'vae'"),
])
def test_a_run_that_cannot_be_mapped_fails_in_one_line_and_writes_nothing(tmp_path, capsys, damage, message):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-v1-vae", run)
    config = json.loads((run / "config.json").read_text())
    damage(config)
    (run / "config.json").write_text(json.dumps(config))
    before = sorted(p.name for p in run.iterdir())
    assert main(["eval", str(run), "--draws", "2", "--limit", "10"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and ("config.json" in err or "model.safetensors" in err)
    assert sorted(p.name for p in run.iterdir()) == before  # no eval file, nothing else written
