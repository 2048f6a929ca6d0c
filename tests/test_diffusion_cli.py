"""The diffusion family through the ``genzoo`` command: the commands of its issue as written, on tiny runs.

Each run is a U-Net of 8 channels at one level (or the MLP on the arena) with T = 20, trained for a few
steps on digits or the 2-D arena; the binarized MNIST command runs on the local files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genzoo.bench.records import RESULTS_FILE, read_results, record_key
from genzoo.bench.tables import render
from genzoo.cli import main
from genzoo.models.registry import load_run

TINY = ["--max-steps", "3", "--batch-size", "16", "--set", "timesteps=20", "--set", "channels=8",
        "--set", "channel_mult=1", "--blocks", "1", "--set", "attention_resolutions=0", "--heads", "1"]




@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> a run trained once for this module: "digits", "conditional" (class-conditional digits), "arena"."""
    made: dict[str, Path] = {}
    options = {
        "digits": ["--data", "digits", *TINY, "--eval-metrics", "nll,fd"],
        "conditional": ["--data", "digits", *TINY, "--set", "class_conditional=true", "--eval-metrics", "score"],
        "arena": ["--data", "eight-gaussians", "--max-steps", "3", "--set", "timesteps=20", "--hidden", "16",
                  "--eval-metrics", "nll", "--eval-draws", "4"],
    }

    def get(name: str) -> Path:
        if name not in made:
            out = tmp_path_factory.mktemp("ddpm") / name
            assert main(["train", "ddpm", "--out", str(out), *options[name]]) == 0
            made[name] = out
        return made[name]

    return get


def test_training_writes_the_bound_and_the_figures(runs):
    run_dir = runs("digits")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["likelihood"] == "lower_bound" and metrics["nll_nats"] > 0 and metrics["nll_std_err"] > 0
    assert "Monte Carlo over t" in metrics["likelihood_method"]
    assert {"samples.png", "completions.png", "loss_curves.png"} <= {p.name for p in run_dir.iterdir()}


def test_the_arena_run_reports_the_kl_through_the_bound(runs):
    metrics = json.loads((runs("arena") / "metrics.json").read_text())
    assert metrics["likelihood"] == "lower_bound" and metrics["kl_nats"] is not None
    # the bound on -log p is at least the exact NLL: KL(data || model) estimated through it is >= 0 up to noise
    assert metrics["kl_nats"] > -4 * metrics["kl_std_err"]


@pytest.mark.parametrize("sampler, steps", [("ddim", 5), ("dpm-solver", 5), ("ddpm", None)])
def test_sample_takes_each_sampler_and_its_steps(cli, runs, tmp_path, sampler, steps):
    out = tmp_path / "s.png"
    argv = ["sample", runs("digits"), "--n", "4", "--sampler", sampler, "--out", out] + (["--steps", steps] if steps else [])
    code, stdout, err = cli(*argv)
    assert code == 0, err
    assert out.exists() and f"with the {sampler} sampler" in stdout


def test_guidance_samples_the_requested_label_and_eval_records_diffusers_scale(cli, runs, tmp_path):
    run_dir = runs("conditional")
    assert (run_dir / "class_grid_guidance_2.png").exists()  # written by training: the model declares "guide"
    code, _, err = cli("sample", run_dir, "--n", "4", "--sampler", "ddim", "--steps", "5", "--label", "3",
                       "--guidance", "2.0", "--out", tmp_path / "g.png")
    assert code == 0, err
    code, stdout, err = cli("eval", run_dir, "--split", "test", "--metrics", "score", "--sampler", "ddim",
                            "--steps", "5", "--guidance", "2.0", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["sampling"] == {"sampler": "ddim", "chosen": True, "steps": 5, "guidance": 2.0,
                                  "guidance_diffusers_scale": 3.0}
    assert 0 <= result["conditional_accuracy"] <= 1 and result["seconds_per_sample"] > 0


def test_eval_under_several_samplers_gives_distinct_records(cli, runs, tmp_path):
    run_dir, bench = runs("digits"), tmp_path / "bench"
    for steps in (3, 6):
        code, _, err = cli("eval", run_dir, "--metrics", "fd", "--sampler", "ddim", "--steps", steps)
        assert code == 0, err
        assert cli("bench", "import", run_dir, "--out", bench)[0] == 0
    records = read_results(bench / RESULTS_FILE)
    assert len({record_key(r) for r in records}) == 2  # DDIM-3 does not supersede DDIM-6
    table = render(records, view="sampling")
    assert "ddim 3 steps" in table and "ddim 6 steps" in table


@pytest.mark.parametrize("options, message", [
    (["--guidance", "2"], "needs a class-conditional model"),
    (["--steps", "21"], "must lie in 1..20"),
    (["--steps", "0"], "must lie in 1..20"),
    (["--sampler", "euler"], "its samplers: ddim, dpm-solver, ddpm"),
    (["--sampler", "ddpm", "--eta", "0.5"], "has no --eta option"),
    (["--label", "3"], "needs a conditional model"),
])
def test_bad_sampling_options_fail_in_one_line(cli, runs, tmp_path, options, message):
    code, _, err = cli("sample", runs("digits"), "--n", "2", "--out", tmp_path / "x.png", *options)
    assert code == 1 and message in err and err.count("\n") == 1


def test_a_label_out_of_range_fails_in_one_line(cli, runs, tmp_path):
    code, _, err = cli("sample", runs("conditional"), "--n", "2", "--label", "10", "--out", tmp_path / "x.png")
    assert code == 1 and "0..9" in err


@pytest.mark.parametrize("setting, message", [
    ("schedule=quadratic", "linear, cosine"), ("prediction=score", "eps, x0, v"), ("loss=l1", "simple, min_snr"),
    ("variance=learned", "loss=hybrid"),
])
def test_unknown_choices_list_the_valid_ones(cli, tmp_path, setting, message):
    code, _, err = cli("train", "ddpm", "--data", "digits", "--out", tmp_path / "r", "--set", setting)
    assert code == 1 and message in err


@pytest.mark.parametrize("sampler", ["repaint", "replacement"])
def test_inpaint_keeps_the_observed_pixels(cli, runs, tmp_path, sampler):
    code, stdout, err = cli("inpaint", runs("digits"), "--image-index", "0", "--mask", "bottom-half", "--n", "3",
                            "--sampler", sampler, "--out", tmp_path / "i.png", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["conditional_nll_nats"] is None and report["hidden_dims"] == 32


def test_a_nan_loss_stops_training_naming_the_step_and_term(cli, tmp_path):
    code, _, err = cli("train", "ddpm", "--data", "digits", *TINY, "--lr", "1e30", "--set", "loss=vlb",
                       "--set", "variance=learned", "--grad-clip", "0", "--out", tmp_path / "nan")
    assert code == 1 and "training stopped at step" in err and "loss term" in err


def test_the_binarized_command_bounds_the_discrete_nll_in_nats(cli, local_data, tmp_path):
    out = tmp_path / "bin"
    code, _, err = cli("train", "ddpm", "--data", "binarized_mnist", "--data-root", local_data("binarized_mnist"), *TINY,
                       "--eval-metrics", "", "--out", out)
    assert code == 0, err
    code, stdout, err = cli("eval", out, "--split", "test", "--metrics", "nll", "--limit", "50", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    # a bound on the NLL of 784 binary pixels, in nats: above the best models' ~78 (no model beats the data's
    # entropy by much) and finite for a 3-step model
    assert result["likelihood"] == "lower_bound" and 78 < result["nll_nats"] < 1e5 and result["bits_per_dim"] > 0
    model, _ = load_run(out)
    x = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_the_sampling_chain_ends_at_the_sample(runs):
    """The chain figure's last predicted x_0 is the DDIM sample itself (the last step lands on alpha_bar = 1)."""
    model, _ = load_run(runs("digits"))
    assert (runs("digits") / "sampling_chain.png").exists()
    chain = model.sampling_chain(3, 5, torch.Generator().manual_seed(4))
    assert chain["x_t"].shape == (3, 5, 1, 8, 8)
    sample = model.generate(3, None, torch.Generator().manual_seed(4), sampler="ddim")
    assert torch.equal(chain["predicted x_0"][:, -1], sample)
