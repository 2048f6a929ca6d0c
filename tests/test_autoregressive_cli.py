"""The autoregressive family through the ``genzoo`` command: train, exact eval, both samplers, inpaint.

Every model is tiny (a few channels or hidden units) and trains for a few steps on digits; one
run uses the local binarized MNIST files with the commands of the issue as written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.cli import main
from genzoo.evaluate.completion import inpaint, parse_mask
from genzoo.models.registry import load_run

# the smallest options of each model: a run trains, evaluates and draws its figures in seconds
TINY = {
    "nade": ["--set", "hidden_dim=8"],
    "made": ["--set", "hidden_dims=16", "--set", "orderings=2"],
    "pixelcnn": ["--set", "channels=4", "--set", "num_blocks=1", "--set", "output_channels=8"],
    "gated-pixelcnn": ["--set", "channels=4", "--set", "num_layers=2", "--set", "output_channels=8"],
    "pixelrnn": ["--set", "hidden_channels=4", "--set", "num_layers=1", "--set", "output_channels=8"],
}
AR_MODELS = sorted(TINY)




@pytest.fixture(scope="module")
def ar_runs(tmp_path_factory):
    """model -> a 5-step run on digits (PixelCNN class-conditional), trained once for this module."""
    runs: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in runs:
            out = tmp_path_factory.mktemp("ar") / model
            extra = ["--set", "class_conditional=true"] if model == "gated-pixelcnn" else []
            code = main(["train", model, "--out", str(out), "--max-steps", "5", "--eval-metrics", "nll",
                         *TINY[model], *extra])
            assert code == 0
            runs[model] = out
        return runs[model]

    return get


@pytest.mark.parametrize("model", AR_MODELS)
def test_each_model_trains_and_reports_its_exact_likelihood(cli, ar_runs, model):
    run_dir = ar_runs(model)
    assert {"samples.png", "completions.png", "metrics.json"} <= {p.name for p in run_dir.iterdir()}
    code, out, _ = cli("eval", run_dir, "--split", "test", "--json")
    assert code == 0
    metrics = json.loads(out)
    assert metrics["likelihood"] == "exact" and metrics["nll_nats"] > 0 and metrics["num_examples"] == 360
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll_nats"] / (64 * np.log(2)))
    assert metrics["draws"] == 1 and "neg_elbo_nats" not in metrics and metrics["nll_std_err"] == 0.0


@pytest.mark.parametrize("model", AR_MODELS)
def test_cached_and_naive_samplers_draw_the_same_images(cli, ar_runs, model, tmp_path):
    run_dir = ar_runs(model)
    pictures = {}
    for sampler in ("cached", "naive"):
        pictures[sampler] = tmp_path / f"{sampler}.png"
        code, out, _ = cli("sample", run_dir, "--n", 4, "--sampler", sampler, "--out", pictures[sampler])
        assert code == 0 and f"with the {sampler} sampler" in out
    assert np.array_equal(np.asarray(Image.open(pictures["cached"])), np.asarray(Image.open(pictures["naive"])))


def test_inpaint_writes_the_image_its_observed_pixels_and_completions(cli, ar_runs, tmp_path):
    run_dir, out_png = ar_runs("pixelcnn"), tmp_path / "inpaint.png"
    code, out, _ = cli("inpaint", run_dir, "--image-index", 5, "--mask", "bottom-half", "--n", 3,
                       "--out", out_png, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["conditional_exact"] is True and report["hidden_dims"] == 32 and report["conditional_nll_nats"] > 0
    width, height = Image.open(out_png).size
    assert width > 4 * height  # one row: data, observed, 3 completions
    code, out, _ = cli("inpaint", run_dir, "--mask", "right-half", "--n", 2, "--out", tmp_path / "r.png")
    assert code == 0 and "not exact" in out


@pytest.mark.parametrize("model", AR_MODELS)
def test_completions_keep_every_observed_pixel(ar_runs, model):
    trained, _ = load_run(ar_runs(model))
    image = torch.randint(0, 17, (1, 8, 8)).float() / 16
    for spec in ("bottom-half", "right-half", "random:0.5"):
        observed = parse_mask(spec, 8, 8, seed=1)
        result = inpaint(trained, image, observed, n=4, label=3, seed=0)
        assert torch.equal(result["completions"][:, :, observed], image[:, observed].expand(4, -1, -1))
        assert result["conditional_exact"] == (spec == "bottom-half" and model != "made")


def test_inpaint_and_sampler_errors_are_one_line(cli, ar_runs, vae_run):
    run_dir = ar_runs("nade")
    code, _, err = cli("inpaint", run_dir, "--image-index", 360)
    assert code == 1 and "--image-index 360 is out of range: the test split has 360 images (0..359)" in err
    code, _, err = cli("inpaint", run_dir, "--mask", "diagonal")
    assert code == 1 and "unknown mask 'diagonal'" in err
    code, _, err = cli("sample", run_dir, "--sampler", "fast")
    assert code == 1 and "nade has no sampler 'fast'; its samplers: cached, naive" in err
    code, _, err = cli("inpaint", vae_run)
    assert code == 1 and "vae cannot inpaint" in err
    code, _, err = cli("sample", vae_run, "--sampler", "naive")
    assert code == 1 and "vae has no sampler 'naive'; its samplers: ancestral" in err


def test_inpainting_masks_of_the_wrong_shape_are_refused(ar_runs):
    trained, _ = load_run(ar_runs("pixelcnn"))
    with pytest.raises(ValueError, match=r"inpainting mask has shape \(28, 28\); the images are 8x8"):
        inpaint(trained, torch.zeros(1, 8, 8), torch.ones(28, 28, dtype=torch.bool), n=2)
    with pytest.raises(ValueError, match=r"mask of observed pixels has shape \(7, 8\)"):
        trained.complete(torch.zeros(2, 1, 8, 8), torch.ones(7, 8, dtype=torch.bool))


def test_the_issue_commands_on_binarized_mnist(cli, local_data, tmp_path):
    root, run_dir = local_data("binarized_mnist"), tmp_path / "pixelcnn"
    code, _, _ = cli("train", "pixelcnn", "--data", "binarized_mnist", "--data-root", root,
                     "--max-steps", 2, "--out", run_dir, "--eval-metrics", "", *TINY["pixelcnn"])
    assert code == 0
    code, out, _ = cli("eval", run_dir, "--split", "test", "--data-root", root, "--limit", 200, "--json")
    metrics = json.loads(out)
    assert code == 0 and metrics["likelihood"] == "exact" and metrics["bits_per_dim"] == pytest.approx(
        metrics["nll_nats"] / (784 * np.log(2)))
    code, out, _ = cli("inpaint", run_dir, "--image-index", 0, "--mask", "bottom-half", "--n", 2,
                       "--out", tmp_path / "inpaint.png")
    assert code == 0 and "392 hidden dimensions (exact" in out
    code, _, err = cli("train", "nade", "--data", "mnist", "--data-root", local_data("mnist"),
                       "--max-steps", 1, "--out", tmp_path / "nade", "--set", "likelihood=bernoulli")
    assert code == 1 and "needs binary pixels, and mnist has 256 levels" in err
