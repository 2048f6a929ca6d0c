"""The 2-D density arena from the command line, as the README writes the commands."""

from __future__ import annotations

import json

import pytest

from genzoo.cli import main as genzoo
from genzoo.data import toy2d
from genzoo.data.toy2d import TOY2D

LIKELIHOOD_KEYS = {"likelihood", "nll_nats", "kl_nats", "kl_std_err"}
SAMPLE_KEYS = {"sliced_wasserstein", "mmd2", "histogram_kl_nats"}


@pytest.fixture(scope="module")
def arena_runs(tmp_path_factory):
    """One short run each of a VAE on checkerboard, MADE on two-moons and a GAN on eight-gaussians."""
    root = tmp_path_factory.mktemp("arena")
    runs = {}
    small = {"vae": ["--hidden-dim", "32"], "made": ["--set", "hidden_dims=32"], "gan": ["--hidden-dim", "32"]}
    for model, data in (("vae", "checkerboard"), ("made", "two-moons"), ("gan", "eight-gaussians")):
        out = root / model
        assert genzoo(["train", model, "--data", data, "--epochs", "1", "--out", str(out), *small[model],
                       "--eval-metrics", "nll", "--eval-draws", "5"]) == 0
        runs[model] = out
    return runs


def test_list_groups_models_by_family_and_datasets_by_kind(capsys):
    assert genzoo(["list"]) == 0
    out = capsys.readouterr().out
    for line in ("latent models:", "adversarial models:", "autoregressive models:"):
        assert line in out
    for name in ("eight-gaussians", "checkerboard", "two-moons", "rings"):
        assert f"{name:<16} vector" in out
    assert f"{'digits':<16} image" in out


@pytest.mark.parametrize("model", ["vae", "made", "gan"])
def test_eval_reports_the_arena_metrics(arena_runs, model, capsys):
    run = arena_runs[model]
    assert {"density.png", "samples_over_training.png", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert genzoo(["eval", str(run), "--split", "test", "--json", "--draws", "5"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert SAMPLE_KEYS <= set(metrics) and metrics["num_samples"] == 10_000
    if model == "gan":
        assert metrics["likelihood"] == "unavailable" and metrics["nll_nats"] is None and "kl_nats" not in metrics
        assert genzoo(["eval", str(run), "--split", "test", "--json", "--metrics", "sw"]) == 0
        alone = json.loads(capsys.readouterr().out)  # the metrics not asked for are not computed
        assert alone["sliced_wasserstein"] == metrics["sliced_wasserstein"] and not {"mmd2", "bandwidth"} & set(alone)
    else:
        assert LIKELIHOOD_KEYS <= set(metrics) and metrics["kl_std_err"] > 0
        assert metrics["likelihood"] == ("exact" if model == "made" else "lower_bound")
        # KL(data || model) = NLL + mean log p_data(x) over the same test points, and near NLL - entropy
        data = {"made": "two-moons", "vae": "checkerboard"}[model]
        log_p_data = TOY2D[data].log_prob(toy2d.splits(data)["test"].double()).mean().item()
        assert metrics["kl_nats"] == pytest.approx(metrics["nll_nats"] + log_p_data, abs=1e-6)
        assert abs(metrics["kl_nats"] - (metrics["nll_nats"] - TOY2D[data].entropy)) < 0.05
    if model == "vae":
        assert (run / "latent_space.png").is_file()


def test_sample_draws_2d_points_with_a_declared_sampler(arena_runs, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert genzoo(["sample", str(arena_runs["made"]), "--n", "16", "--sampler", "cached", "--out", str(out)]) == 0
    assert out.is_file() and "cached sampler" in capsys.readouterr().out
    assert genzoo(["sample", str(arena_runs["made"]), "--n", "4", "--steps", "10"]) == 1
    assert "no --steps option" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["pixelcnn", "dcgan", "pixelrnn"])
def test_image_only_models_refuse_2d_data_in_one_line(model, tmp_path, capsys):
    out = tmp_path / model
    assert genzoo(["train", model, "--data", "eight-gaussians", "--max-steps", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eight-gaussians" in err
    assert not out.exists()  # nothing written
