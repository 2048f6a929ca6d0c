"""The deep EBM as a model: its replay buffer resumes bit for bit, divergence stops training with the last
good checkpoint kept, its 2-D density integrates to 1, and Langevin sampling and completion work where the
caller holds no_grad. The noise-conditional energy starts as the exact energy of noisy Gaussian data, and the
issue's commands run it through the CLI. The Langevin and score-matching mathematics: tests/test_langevin.py and
tests/test_score_matching.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genzoo import checkpoint
from genzoo.cli import main as genzoo
from genzoo.data.core import DataInfo
from genzoo.data.toy2d import get_toy2d
from genzoo.distributions.grid import grid_points, log_cell_area
from genzoo.models.energy.langevin import langevin
from genzoo.models.energy.score_matching import score
from genzoo.models.registry import build_model, load_run
from genzoo.nn.denoisers import MLPDenoiser, UNet
from genzoo.nn.energies import DenoiserEnergy
from genzoo.train import TrainingDiverged, train
from genzoo.train.config import train_config

DIGITS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
MOONS = DataInfo("two-moons", (2,), 0, "continuous", 0)
SMALL = {"channels": 4, "hidden_dim": 16, "num_hidden_layers": 2, "langevin_steps": 3, "buffer_size": 64}
QUICK = {"batch_size": 16, "log_every": 1, "checkpoint_every": 2, "seed": 3}


def small_ebm(info: DataInfo, **options):
    torch.manual_seed(0)
    return build_model("ebm", info, {**SMALL, **options})


def train_moons(out, steps: int, resume: bool = False, **options):
    return train("ebm", out, None if resume else {**SMALL, **options}, resume=resume, data="two-moons",
                 max_steps=steps, lr=1e-3, **QUICK)


def test_a_resumed_run_continues_the_same_replay_buffer_bit_for_bit(tmp_path):
    whole, _ = train_moons(tmp_path / "whole", 6)
    train_moons(tmp_path / "halves", 3)
    halves, _ = train_moons(tmp_path / "halves", 6, resume=True)
    assert not torch.equal(whole.unwrapped.replay, small_ebm(MOONS).replay)  # the chains moved
    torch.testing.assert_close(halves.unwrapped.replay, whole.unwrapped.replay, rtol=0, atol=0)
    for a, b in zip(halves.unwrapped.parameters(), whole.unwrapped.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the buffer is training state: in the resumable state, not in the weights a user loads
    state, _ = checkpoint.read_tensors(tmp_path / "whole" / checkpoint.TRAIN_STATE_FILE)
    weights, _ = checkpoint.read_tensors(tmp_path / "whole" / checkpoint.MODEL_FILE)
    assert state["training.replay"].shape == (64, 2) and not any("replay" in k for k in weights)
    model, _ = load_run(tmp_path / "whole")
    assert model.log_likelihood(torch.zeros(3, 2)).kind == "numerical"


def test_short_run_chains_need_no_buffer_and_start_from_noise_each_step():
    model = small_ebm(MOONS, buffer_size=0)
    assert model.training_state() == {} and model.replay.numel() == 0
    out = model.loss(torch.randn(5, 2))
    assert out["loss"].shape == (5,) and torch.isfinite(out["loss"]).all()


def test_a_diverging_energy_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    train_moons(out, 4)  # a good run: checkpoints at steps 2 and 4
    good = checkpoint.read_tensors(out / checkpoint.MODEL_FILE)[0]
    # resumed with a limit every energy breaks: as a runaway energy would
    config = checkpoint.read_run_config(out)
    config["model_config"]["max_energy"] = 1e-12
    checkpoint.write_json(out / checkpoint.CONFIG_FILE, config)
    with pytest.raises(TrainingDiverged, match=r"the energy has diverged: the mean \|energy_data\| is .* past "
                                               r"max_energy=1e-12; train with a lower --lr"):
        train_moons(out, 8, resume=True)
    after = checkpoint.read_tensors(out / checkpoint.MODEL_FILE)[0]
    assert all(torch.equal(good[k], after[k]) for k in good)  # nothing saved from the diverged steps


def test_a_runaway_learning_rate_is_caught_as_divergence(tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged|non-finite|is nan|is inf"):
        train("ebm", tmp_path / "run", {**SMALL, "energy_penalty": 0.0, "max_energy": 50.0}, data="two-moons",
              max_steps=400, lr=1.0, **QUICK)


def test_the_2d_density_is_normalised_over_the_box():
    model = small_ebm(MOONS).double()
    box = get_toy2d("two-moons").extent
    for resolution in (512, 300):  # its own grid integrates to 1 exactly; a coarser one to the midpoint rule's error
        points = grid_points(box, resolution)
        log_p = model.log_likelihood(points).value
        mass = torch.logsumexp(log_p + log_cell_area(box, resolution), 0).exp().item()
        assert mass == pytest.approx(1.0, abs=1e-12 if resolution == 512 else 1e-3)
    assert model.log_likelihood(points[:4]).kind == "numerical"
    with torch.no_grad():  # the chains stay in the box the density is normalised over
        model.energy_net.net[-1][-1].weight.fill_(-1.0)  # an energy that falls off without limit outside
        samples = model.generate(200, generator=torch.Generator().manual_seed(0), steps=50)
        unclamped = langevin(model.energy, model.noise(200, torch.Generator().manual_seed(0)), 50, model.step_size)
    assert samples.min() >= box[0] and samples.max() <= box[1]
    assert unclamped.abs().max() > box[1]  # where they would otherwise go


def test_images_have_no_likelihood_and_say_why():
    model = small_ebm(DIGITS)
    result = model.log_likelihood(torch.rand(2, 1, 8, 8))
    assert result.kind == "unavailable" and "sample metrics" in result.reason and model.estimators == ()


def test_sampling_and_completion_need_no_gradients_from_the_caller():
    model = small_ebm(DIGITS)
    x = torch.rand(4, 1, 8, 8)
    observed = torch.zeros(8, 8, dtype=torch.bool)
    observed[:4] = True
    with torch.no_grad():
        samples = model.generate(4, generator=torch.Generator().manual_seed(0), steps=5)
        completed = model.complete(x, observed, generator=torch.Generator().manual_seed(0), steps=5)
        chain = next(iter(model.sampling_chain(3, 4, torch.Generator().manual_seed(0)).values()))
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(completed[..., :4, :], x[..., :4, :])  # observed rows kept exactly
    assert not torch.equal(completed[..., 4:, :], x[..., 4:, :])
    assert chain.shape[:2] == (3, 4)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("objective", ["ssm", "dsm"])
def test_score_matching_objectives_train_without_sampling(objective):
    model = small_ebm(MOONS, objective=objective)
    out = model.loss(torch.randn(6, 2))
    out["loss"].mean().backward()
    assert out["loss"].shape == (6,) and out["gradient_rms"].shape == (6,)
    *trained, constant = list(model.parameters())  # the last layer's bias: E's additive constant
    assert all(p.grad is not None for p in trained)
    assert constant.grad is None or constant.grad.abs().max() == 0  # a score is blind to the constant


def test_the_langevin_settings_follow_the_data_kind():
    image, vector = small_ebm(DIGITS), small_ebm(MOONS)
    assert (image.step_size, image.gradient_clamp) == (10.0, 0.01)
    assert math.sqrt(2 * image.step_size * image.temperature) == pytest.approx(0.005)  # Du & Mordatch's noise
    assert vector.temperature == 1.0 and vector.gradient_clamp == 0.0  # exact Langevin on the 2-D arena
    assert small_ebm(MOONS, langevin_step=0.5).step_size == 0.5
    # samples from noise: many more steps than a buffer's chain takes per update, as many for a short-run model
    assert (image.sample_steps, vector.sample_steps) == (20 * 3, 100 * 3)  # SMALL's langevin_steps = 3
    assert small_ebm(DIGITS, buffer_size=0).sample_steps == 5 * 3 and small_ebm(MOONS, sample_steps=7).sample_steps == 7
    # short-run chains on images, persistent ones on vectors, unless told
    assert (build_model("ebm", DIGITS).buffer_size, build_model("ebm", MOONS).buffer_size) == (0, 10_000)


@pytest.mark.parametrize("denoiser, shape", [(UNet((1, 8, 8), 1, 8, (1, 2), 1, (0,)), (1, 8, 8)),
                                            (MLPDenoiser(2, 1, 16, 2), (2,))])
def test_a_fresh_noise_conditional_energy_is_the_noisy_gaussians(denoiser, shape):
    # F = 0 (zero output layer): E(x, sigma) = |x - c|^2 / (2 (sigma^2 + s_d^2)), the energy of N(c, s_d^2 I) blurred
    energy = DenoiserEnergy(denoiser, 0.01, 1.0, sigma_data=0.5, center=0.3)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(0))
    def score_at(value: float) -> torch.Tensor:
        sigma = torch.full((5,), value)
        return score(lambda v: energy(v, sigma), x, create_graph=False)

    for value in (0.01, 0.2, 1.0):
        torch.testing.assert_close(score_at(value), -(x - 0.3) / (value**2 + 0.25))
    with torch.no_grad():  # a trained network's F moves the score away from the Gaussian's
        for p in denoiser.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    assert not torch.allclose(score_at(1.0), -(x - 0.3) / 1.25)


def test_a_noise_conditional_energy_trains_by_dsm_and_samples_through_its_levels():
    model = small_ebm(DIGITS, objective="dsm", noise_levels=3, sigma=0.05, sigma_max=1.0, channels=8,
                      channel_mult=(1, 2), sample_steps=7)
    torch.testing.assert_close(model.sigmas, torch.tensor([1.0, math.sqrt(0.05), 0.05], dtype=torch.float64))
    out = model.loss(torch.rand(6, 1, 8, 8))
    out["loss"].mean().backward()
    assert out["loss"].shape == (6,) and out["gradient_rms"].shape == (6,)
    assert all(p.grad is not None for p in model.energy_net.parameters())
    x = torch.rand(4, 1, 8, 8)
    observed = torch.zeros(8, 8, dtype=torch.bool)
    observed[:4] = True
    with torch.no_grad():
        samples = model.generate(4, generator=torch.Generator().manual_seed(0))
        completed = model.complete(x, observed, generator=torch.Generator().manual_seed(0))
        (title, chain), = model.sampling_chain(3, 4, torch.Generator().manual_seed(0)).items()
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(completed[..., :4, :], x[..., :4, :]) and not torch.equal(completed[..., 4:, :], x[..., 4:, :])
    # 3 levels give 3 states (at most one a level), the last the denoised sample
    assert chain.shape[:2] == (3, 3) and "predictor-corrector sampling" in title and "then denoised" in title
    assert torch.equal(chain[:, -1], model.generate(3, generator=torch.Generator().manual_seed(0)))
    assert model.log_likelihood(x).kind == "unavailable"


@pytest.mark.parametrize("sampler", ["ancestral", "pc"])
def test_a_noise_conditional_energy_samples_and_completes_through_its_levels_and_a_single_level_refuses(sampler):
    model = small_ebm(DIGITS, objective="dsm", noise_levels=3, sigma=0.05, sigma_max=1.0, channels=8,
                      channel_mult=(1, 2))
    x = torch.rand(4, 1, 8, 8)
    observed = torch.zeros(8, 8, dtype=torch.bool)
    observed[:4] = True
    with torch.no_grad():
        samples = model.generate(4, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=5)
        langevin = model.generate(4, generator=torch.Generator().manual_seed(0), sampler="langevin", steps=5)
        completed = model.complete(x, observed, generator=torch.Generator().manual_seed(0), sampler=sampler)
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert not torch.equal(samples, langevin)
    assert torch.equal(completed[..., :4, :], x[..., :4, :]) and not torch.equal(completed[..., 4:, :], x[..., 4:, :])
    if sampler == "pc":  # the corrector's steps change the chains: pc is not ancestral under another name
        with torch.no_grad():
            ancestral = model.generate(4, generator=torch.Generator().manual_seed(0), sampler="ancestral", steps=5)
        assert not torch.equal(samples, ancestral)
    with pytest.raises(ValueError, match="^ebm: --steps 1: ancestral sampling needs at least 2 noise levels$"):
        model.generate(2, sampler=sampler, steps=1)
    single = small_ebm(DIGITS, objective="dsm", channels=8)
    with pytest.raises(ValueError, match="^ebm: the ancestral and pc samplers walk the noise levels of a noise-conditional "
                                         "energy; this one has a single level: use --sampler langevin"):
        single.generate(2, sampler=sampler)


def test_karras_level_weight_multiplies_each_examples_loss_by_one_plus_sigma2_over_sigma_data2():
    """At a level pinned near 0.5 on images (s_d = 0.5) the weight (sigma^2 + s_d^2) / s_d^2 is about 2."""
    options = {"objective": "dsm", "noise_levels": 2, "sigma": 0.4999, "sigma_max": 0.5, "channels": 8,
               "channel_mult": (1, 2)}
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    losses = {}
    for weight in ("sigma2", "karras"):
        model = small_ebm(DIGITS, level_weight=weight, **options)
        torch.manual_seed(3)  # the same levels and noise for both
        losses[weight] = model.loss(x)["loss"].detach()
    torch.testing.assert_close(losses["karras"] / losses["sigma2"], torch.full((5,), 2.0), rtol=0, atol=1e-3)


def test_the_issues_commands_run_a_noise_conditional_energy(cli, tmp_path):
    run = tmp_path / "run"
    settings = ("objective=dsm", "noise_levels=3", "channels=8", "channel_mult=1,2", "sample_steps=3")
    code, _, err = cli("train", "ebm", "--data", "digits", *[a for s in settings for a in ("--set", s)], "--max-steps",
                       "2", "--batch-size", "16", "--eval-metrics", "fd", "--eval-draws", "0", "--out", run)
    assert code == 0, err
    assert json.loads((run / checkpoint.METRICS_FILE).read_text())["fd"] > 0
    code, _, err = cli("sample", run, "--n", "8", "--sampler", "langevin", "--steps", "6", "--out",
                       tmp_path / "samples.png")
    assert code == 0 and (tmp_path / "samples.png").exists(), err
    code, _, err = cli("sample", run, "--n", "8", "--sampler", "ancestral", "--steps", "4", "--out",
                       tmp_path / "ancestral.png")
    assert code == 0 and (tmp_path / "ancestral.png").exists(), err
    code, _, err = cli("inpaint", run, "--image-index", "0", "--mask", "bottom-half", "--n", "4",
                       "--out", tmp_path / "inpaint.png")
    assert code == 0 and (tmp_path / "inpaint.png").exists(), err


@pytest.mark.parametrize("options, message", [
    ({"objective": "cd", "noise_levels": 4},
     "noise_levels=4 trains a noise-conditional energy by denoising score matching: use --set objective=dsm"),
    ({"objective": "dsm", "noise_levels": 4, "sigma": 20.0}, "from sigma_max=10 down to sigma=20; sigma must be the smaller"),
    ({"objective": "nce"}, "objective='nce' is not one of cd, ssm, dsm"),
    ({"objective": "dsm", "level_weight": "karras"},
     "level_weight=karras weighs the noise levels of a noise-conditional energy: use it with --set noise_levels=L"),
    ({"objective": "dsm", "noise_levels": 4, "level_weight": "edm"}, "level_weight='edm' is not one of sigma2, karras"),
    ({"reinit": 1.5}, r"reinit=1.5 must lie in \[0, 1\]"),
    ({"langevin_steps": 0}, "langevin_steps=0 must be > 0"),
])
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        small_ebm(MOONS, **options)


def test_a_unet_energy_checks_its_levels_as_ddpm_does():
    with pytest.raises(ValueError, match=r"EBMConfig.channel_mult=\(1, 0\) needs one positive multiplier per level"):
        small_ebm(DIGITS, objective="dsm", noise_levels=3, channel_mult=(1, 0))
    with pytest.raises(ValueError, match="5 levels halve 8x8 images below one pixel; use fewer levels"):
        small_ebm(DIGITS, objective="dsm", noise_levels=3, channel_mult=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="DDPMConfig.channel_mult=.*5 levels halve 8x8 images below one pixel"):
        build_model("ddpm", DIGITS, {"channel_mult": (1, 1, 1, 1, 1)})


def test_binary_data_is_refused():
    with pytest.raises(ValueError, match="ebm models discrete or continuous data, and binarized_mnist is 2-level"):
        build_model("ebm", DataInfo("binarized_mnist", (1, 28, 28), 0, "binary", 2))


def test_training_defaults_follow_the_data_kind(capsys):
    assert (train_config("ebm", data="mnist").lr, train_config("ebm", data="mnist").batch_size) == (3e-4, 64)
    assert (train_config("ebm", data="checkerboard").lr, train_config("ebm", data="checkerboard").batch_size) == (1e-3, 128)
    assert train_config("ebm", data="checkerboard", lr=0.5).lr == 0.5  # the user's value wins
    with pytest.raises(SystemExit):
        genzoo(["train", "ebm", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "image data 0.0003; vector data 0.001" in shown and "(default: images 40, vectors 20)" in shown
