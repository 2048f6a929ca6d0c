"""The GAN family: the game's losses and their gradients, the gradient penalties against their
closed forms, instance noise, spectral norm, the players' separation, validation, the symptoms
the trainer reports, and tiny end-to-end runs of every command the issue names."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from genzoo.cli import main
from genzoo.data.core import DataInfo
from genzoo.models.adversarial.gan import GAN
from genzoo.models.adversarial.losses import annealed_std, discriminator_loss, generator_loss, gradient_penalty, r1_penalty, sample_diversity
from genzoo.models.registry import build_model
from genzoo.train.loop import train

DIGITS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
MNIST = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)
UNLABELLED = DataInfo("unlabelled", (1, 8, 8), 0, "discrete", 17)
GANS = ("gan", "dcgan", "cgan", "wgan-gp")
SMALL = {"latent_dim": 4, "hidden_dim": 32}
SMALL_CONV = {**SMALL, "channels": 4}


def small(name: str, info: DataInfo = DIGITS, **overrides):
    torch.manual_seed(0)
    return build_model(name, info, {**(SMALL if name == "gan" else SMALL_CONV), **overrides})


def data(info: DataInfo = DIGITS, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, info.num_levels, (n, *info.shape), generator=g) / (info.num_levels - 1)
    return x, torch.randint(0, max(info.num_classes, 1), (n,), generator=g)


def labels(model, y):
    return y if model.conditional else None


# --- the game --------------------------------------------------------------------------------------
def test_minimax_generator_gradient_vanishes_where_the_non_saturating_one_does_not():
    """At D(G(z)) ~ 0 (logit -20): d/dl log(1 - sigmoid(l)) = -sigmoid(l) ~ 0, while
    d/dl -log sigmoid(l) = -(1 - sigmoid(l)) ~ -1 (Goodfellow et al. 2014, section 3)."""
    logits = torch.full((4,), -20.0, dtype=torch.float64, requires_grad=True)
    (minimax,) = torch.autograd.grad(generator_loss(logits, "minimax").sum(), logits)
    (non_saturating,) = torch.autograd.grad(generator_loss(logits, "non_saturating").sum(), logits)
    assert torch.all(minimax.abs() < 1e-8)
    torch.testing.assert_close(non_saturating, torch.full_like(logits, -1.0), rtol=0, atol=1e-8)
    # and the model's generator objective is the configured one
    for kind, expected in (("minimax", minimax), ("non_saturating", non_saturating)):
        model = small("gan", loss=kind).double()
        fake_logits = logits.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.generator_objective(fake_logits)["loss"].sum(), fake_logits)
        torch.testing.assert_close(grad, expected)


def test_discriminator_loss_is_the_cross_entropy_of_the_probabilities():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2, 50, generator=g, dtype=torch.float64) * 3
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    torch.testing.assert_close(discriminator_loss(real, fake), -torch.log(d_real) - torch.log(1 - d_fake))
    # minimax generator loss: log(1 - D(G(z))); non-saturating: -log D(G(z))
    torch.testing.assert_close(generator_loss(fake, "minimax"), torch.log(1 - d_fake))
    torch.testing.assert_close(generator_loss(fake, "non_saturating"), -torch.log(d_fake))
    with pytest.raises(ValueError, match="minimax"):
        generator_loss(fake, "hinge")


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form_and_differentiable():
    """f(x) = w . x has gradient w everywhere: penalty (||w|| - 1)^2 at any interpolate, and
    d penalty / dw = 2 (||w|| - 1) w / ||w|| (the penalty is part of the critic's graph)."""
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(64, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    real, fake = torch.rand(2, 6, 1, 8, 8, generator=g, dtype=torch.float64)
    gp = gradient_penalty(lambda v: v.flatten(1) @ w, real, fake)
    norm = w.detach().norm()
    assert gp.shape == (6,)
    torch.testing.assert_close(gp, ((norm - 1) ** 2).expand(6))
    (dw,) = torch.autograd.grad(gp.sum(), w)
    torch.testing.assert_close(dw, 6 * 2 * (norm - 1) * w.detach() / norm)


def test_r1_penalty_of_a_quadratic_critic_is_the_analytic_gradient_norm():
    """f(x) = 1/2 x^T A x with A symmetric: grad f = A x, so R1 = ||A x||^2 per example."""
    g = torch.Generator().manual_seed(2)
    m = torch.randn(16, 16, generator=g, dtype=torch.float64)
    a = (m + m.T).requires_grad_(True)
    x = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    r1 = r1_penalty(lambda v: 0.5 * ((v.flatten(1) @ a) * v.flatten(1)).sum(1), x)
    expected = ((x.flatten(1) @ a.detach()) ** 2).sum(1)
    torch.testing.assert_close(r1, expected)
    (da,) = torch.autograd.grad(r1.sum(), a)  # create_graph: R1 trains the discriminator
    assert torch.all(torch.isfinite(da)) and da.abs().sum() > 0


def test_wgan_gp_critic_loss_is_fake_minus_real_plus_lambda_gp():
    model = small("wgan-gp", gp_lambda=3.0).double()
    x, _ = data()
    torch.manual_seed(5)
    out = model.loss(x.double(), phase="discriminator")
    torch.testing.assert_close(out["loss"], out["critic_fake"] - out["critic_real"] + 3.0 * out["gp"])
    torch.testing.assert_close(out["wasserstein"], out["critic_real"] - out["critic_fake"])
    gen = model.loss(x.double(), phase="generator")
    torch.testing.assert_close(gen["loss"], -gen["critic_fake"])


def test_r1_enters_the_discriminator_loss_with_weight_gamma_over_two():
    x, _ = data()
    plain, regularised = small("dcgan", d_norm="none"), small("dcgan", d_norm="none", r1_gamma=4.0)
    torch.manual_seed(3)
    base = plain.loss(x, phase="discriminator")
    torch.manual_seed(3)
    out = regularised.loss(x, phase="discriminator")
    assert torch.all(out["r1"] > 0)
    torch.testing.assert_close(out["loss"], base["loss"] + 2.0 * out["r1"])


# --- instance noise ----------------------------------------------------------------------------------
def test_instance_noise_anneals_linearly_to_zero_and_is_off_at_evaluation():
    stds = [annealed_std(0.2, step, 100) for step in (0, 25, 50, 100, 150)]
    assert stds == pytest.approx([0.2, 0.15, 0.1, 0.0, 0.0])
    assert annealed_std(0.2, None, 100) == 0.0

    model = small("dcgan", instance_noise=0.5, instance_noise_anneal_steps=100)
    x, _ = data()

    def d_loss(step, noise):
        model.config.instance_noise = noise
        torch.manual_seed(4)
        return model.loss(x, phase="discriminator", step=step)["loss"]

    clean = d_loss(None, 0.0)
    torch.testing.assert_close(d_loss(None, 0.5), clean, rtol=0, atol=0)  # evaluation: no noise
    torch.testing.assert_close(d_loss(100, 0.5), clean, rtol=0, atol=0)  # annealed away
    assert not torch.allclose(d_loss(0, 0.5), clean)  # training: the inputs are noisy


def test_instance_noise_has_the_annealed_std_on_both_inputs_of_the_discriminator():
    model = small("gan", instance_noise=0.3, instance_noise_anneal_steps=10, r1_gamma=0.0)  # R1 would add a D call
    with torch.no_grad():
        for p in model.generator.net[0][-1].parameters():  # G(z) = tanh(0) = 0 for every z
            p.zero_()
    seen = []
    model.discriminator.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
    x = torch.full((4000, 1, 8, 8), 0.5)  # real images 0 in [-1, 1], as the fake ones
    model.loss(x, phase="discriminator", step=5)  # std 0.3 * (1 - 5/10) = 0.15
    model.loss(x, phase="generator", step=5)
    assert len(seen) == 3  # real and fake for D's update, fake for G's
    for inputs in seen:
        assert abs(inputs.mean().item()) < 0.002 and abs(inputs.std().item() - 0.15) < 0.002


# --- spectral norm -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GANS)
def test_spectral_norm_keeps_every_discriminator_weight_at_top_singular_value_one(name):
    model = small(name, spectral_norm=True, hidden_dim=48)
    x, y = data()
    with torch.no_grad():
        for _ in range(30):  # one power iteration per forward pass in training mode
            model.discriminate(2 * x - 1, labels(model, y))
    normalised = [m for m in model.discriminator.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(normalised) >= 3
    for m in normalised:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert 0.98 < sigma < 1.02, (m, sigma)
    assert not any(parametrize.is_parametrized(m) for m in model.generator.modules())
    plain = small(name)
    assert not any(parametrize.is_parametrized(m) for m in plain.discriminator.modules())


# --- the players -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GANS)
def test_each_update_changes_only_its_own_players_parameters(name):
    model = small(name, r1_gamma=1.0)
    x, y = data()
    phases = {p.name: p for p in model.phases()}
    assert list(phases) == ["discriminator", "generator"]
    d_ids, g_ids = ({id(p) for p in phases[k].parameters} for k in ("discriminator", "generator"))
    assert not d_ids & g_ids and d_ids | g_ids == {id(p) for p in model.parameters()}
    assert phases["discriminator"].updates_per_step == model.config.d_steps

    for phase, other in (("discriminator", "generator"), ("generator", "discriminator")):
        before = {id(p): p.detach().clone() for p in phases[other].parameters}
        optimizer = torch.optim.SGD(phases[phase].parameters, lr=0.1)
        model.zero_grad(set_to_none=True)
        model.loss(x, labels(model, y), phase=phase, step=0)["loss"].mean().backward()
        # the other player's weights get no gradient (G is not run with autograd in D's update,
        # and G's update differentiates through D to its input only)
        assert all(p.grad is None for p in phases[other].parameters), phase
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in phases[phase].parameters), phase
        optimizer.step()
        assert all(torch.equal(p, before[id(p)]) for p in phases[other].parameters), phase
    assert all(p.requires_grad for p in model.parameters())


def test_trainer_runs_k_discriminator_updates_per_generator_update(tmp_path, monkeypatch):
    calls = []
    original = GAN.loss

    def counting(self, x, y=None, phase="model", step=None):
        calls.append(phase)
        return original(self, x, y, phase, step)

    monkeypatch.setattr(GAN, "loss", counting)
    trainer, summary = train("gan", tmp_path / "run", {**SMALL, "d_steps": 3}, max_steps=4, log_every=2)
    assert calls == (["discriminator"] * 3 + ["generator"]) * 4
    assert trainer.config.betas == (0.5, 0.999) and trainer.config.lr == 2e-4  # the GAN's training defaults
    assert {"discriminator/d_real", "discriminator/d_fake", "discriminator/fake_diversity",
            "generator/loss", "generator/d_fake"} <= set(summary["last"])


def test_sampling_uses_batch_norm_in_eval_mode_and_changes_no_state():
    model = small("dcgan")
    model.loss(data()[0], phase="generator")  # running statistics away from their initial values
    state = {k: v.clone() for k, v in model.state_dict().items()}
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # running statistics included
    assert model.training and model.generator.training
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.eval()
        eval_mode = model.decode(z)
        model.train()
        train_mode = model.decode(z)
    torch.testing.assert_close(samples, eval_mode, rtol=0, atol=0)
    assert not torch.allclose(samples, train_mode)


@pytest.mark.parametrize("name", GANS)
def test_decode_maps_codes_to_images_and_there_is_no_encoder_or_density(name):
    model = small(name)
    assert model.latent_dim == 4 and not hasattr(model, "encode")
    z = torch.randn(3, 4)
    images = model.decode(z, torch.tensor([0, 1, 2]) if model.conditional else None)
    assert images.shape == (3, 1, 8, 8) and torch.all((images >= 0) & (images <= 1))
    result = model.log_likelihood(data()[0], labels(model, data()[1]))
    assert result.kind == "unavailable" and result.value is None and "density" in result.reason


@pytest.mark.parametrize("name", ["dcgan", "wgan-gp"])
def test_losses_under_bf16_autocast_are_finite_float32(name):
    model = small(name, r1_gamma=1.0, instance_noise=0.1)
    x, _ = data()
    for phase in ("discriminator", "generator"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.loss(x, phase=phase, step=0)
        assert out["loss"].dtype == torch.float32
        assert all(torch.all(torch.isfinite(v)) for v in out.values())
        out["loss"].mean().backward()


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="phase='discriminator' or phase='generator'"):
        small("gan").loss(data()[0])


# --- validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, overrides, field", [
    ("gan", {"loss": "hinge"}, "loss"),
    ("dcgan", {"loss": "wasserstein"}, "loss"),
    ("wgan-gp", {"loss": "minimax"}, "loss"),  # the Wasserstein loss is fixed
    ("gan", {"d_steps": 0}, "d_steps"),
    ("wgan-gp", {"d_steps": 0}, "n_critic"),
    ("cgan", {"d_steps": 1.5}, "d_steps"),
    ("gan", {"instance_noise": -0.1}, "instance_noise"),
    ("dcgan", {"instance_noise_anneal_steps": 0}, "instance_noise_anneal_steps"),
    ("dcgan", {"r1_gamma": -1.0}, "r1_gamma"),
    ("gan", {"spectral_norm": "yes"}, "spectral_norm"),
    ("gan", {"num_hidden_layers": 0}, "num_hidden_layers"),
    ("dcgan", {"channels": 0}, "channels"),
    ("dcgan", {"d_norm": "group"}, "d_norm"),
    ("wgan-gp", {"d_norm": "batch"}, "d_norm"),
    ("wgan-gp", {"gp_lambda": -1.0}, "gp_lambda"),
    ("cgan", {"latent_dim": 0}, "latent_dim"),
    ("wgan-gp", {"hidden_dim": 0}, "hidden_dim"),
], ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else v)
def test_invalid_config_raises_naming_the_field(name, overrides, field):
    with pytest.raises(ValueError, match=field):
        small(name, **overrides)


@pytest.mark.parametrize("name", GANS)
def test_an_unknown_regulariser_lists_the_valid_options(name):
    with pytest.raises(ValueError) as error:
        small(name, r2_gamma=1.0)
    assert "r2_gamma" in str(error.value)
    assert all(option in str(error.value) for option in ("instance_noise", "r1_gamma", "spectral_norm"))


@pytest.mark.parametrize("name", ["dcgan", "cgan", "wgan-gp"])
def test_convolutional_gans_refuse_images_they_are_not_sized_for(name):
    with pytest.raises(ValueError, match="divisible by 4"):
        small(name, DataInfo("odd", (1, 6, 6), 10, "discrete", 17))


def test_cgan_needs_labels():
    with pytest.raises(ValueError, match="labels"):
        small("cgan", UNLABELLED)
    model = small("cgan")
    x, _ = data()
    for call in (lambda: model.loss(x, phase="discriminator"), lambda: model.loss(x, phase="generator"),
                 lambda: model.sample(3), lambda: model.decode(torch.randn(3, 4))):
        with pytest.raises(ValueError, match="labels"):
            call()


def test_cgan_samples_depend_on_the_label():
    model = small("cgan")
    a = model.sample(4, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0))
    b = model.sample(4, torch.full((4,), 7), torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)  # small differences: DCGAN's N(0, 0.02) initialisation


# --- symptoms ----------------------------------------------------------------------------------------
HEALTHY = {"discriminator/d_real": 0.7, "discriminator/d_fake": 0.3, "discriminator/fake_diversity": 0.9,
           "generator/loss": 1.2}


@pytest.mark.parametrize("name", ["gan", "dcgan", "cgan"])
def test_training_warnings_name_a_winning_discriminator_and_collapse(name):
    model = small(name)
    assert model.training_warnings(HEALTHY) == []
    assert model.training_warnings({}) == []
    wins = model.training_warnings({**HEALTHY, "discriminator/d_real": 0.995, "discriminator/d_fake": 0.004})
    assert len(wins) == 1 and "wins outright" in wins[0]
    # D confident on real data alone is not a win
    assert model.training_warnings({**HEALTHY, "discriminator/d_real": 0.995}) == []
    collapsed = model.training_warnings({**HEALTHY, "discriminator/fake_diversity": 0.03})
    assert len(collapsed) == 1 and "mode collapse" in collapsed[0]


def test_wgan_gp_warns_on_collapse_and_on_a_critic_far_from_lipschitz():
    model = small("wgan-gp")
    healthy = {"discriminator/wasserstein": 2.0, "discriminator/gp": 0.05, "discriminator/fake_diversity": 0.8}
    assert model.training_warnings(healthy) == []
    assert "Lipschitz" in model.training_warnings({**healthy, "discriminator/gp": 4.0})[0]
    assert "mode collapse" in model.training_warnings({**healthy, "discriminator/fake_diversity": 0.01})[0]


def test_fake_diversity_is_zero_for_a_collapsed_generator_and_one_for_the_data():
    x, _ = data(n=32)
    assert sample_diversity(x, x).item() == pytest.approx(1.0)
    assert sample_diversity(x[:1].expand(32, -1, -1, -1), x).item() == 0.0
    model = small("gan")
    with torch.no_grad():
        for p in model.generator.net[0][-1].parameters():  # the last layer: output independent of z
            p.zero_()
    out = model.loss(x, phase="discriminator")
    assert out["fake_diversity"].shape == (32,) and torch.all(out["fake_diversity"] == 0)
    row = {"discriminator/fake_diversity": out["fake_diversity"][0].item()}
    assert "mode collapse" in model.training_warnings(row)[0]


# --- end to end --------------------------------------------------------------------------------------
TINY_CLI = ["--hidden-dim", "32", "--latent-dim", "4", "--eval-iw-samples", "1", "--eval-metrics", "nll"]


@pytest.mark.parametrize("model, flags", [
    ("gan", ["--data", "digits", "--set", "loss=minimax", "--max-steps", "10"]),
    ("gan", ["--data", "digits", "--set", "loss=non_saturating", "--max-steps", "10"]),
    ("dcgan", ["--data", "mnist", "--max-steps", "3", "--set", "instance_noise=0.1", "--batch-size", "16"]),
    ("cgan", ["--data", "mnist", "--max-steps", "3", "--batch-size", "16"]),
    ("wgan-gp", ["--data", "mnist", "--max-steps", "3", "--batch-size", "16"]),
], ids=["gan-minimax", "gan-non_saturating", "dcgan", "cgan", "wgan-gp"])
def test_the_issue_commands_train_and_draw_samples(model, flags, tmp_path, shared_data):
    out = tmp_path / model
    if "mnist" in flags:
        flags = [*flags, "--data-root", str(shared_data / "mnist"), "--set", "channels=8"]
    assert main(["train", model, *flags, *TINY_CLI, "--out", str(out)]) == 0
    assert (out / "samples.png").stat().st_size > 0
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    expected = ("discriminator/gp", "discriminator/wasserstein") if model == "wgan-gp" else ("discriminator/d_real",)
    assert {"discriminator/loss", "generator/loss", *expected} <= set(header)
    assert (out / "interpolation.png").exists()  # decode + latent_dim: latent interpolation of a generator
    if model == "cgan":
        assert (out / "class_grid.png").exists()
