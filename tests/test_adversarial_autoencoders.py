"""The adversarial autoencoders: AVB's discriminator estimates log q(z|x) - log p(z), its model
phase differentiates through T but never trains it, the AAE's mixture prior is the documented one,
each phase updates its own player only, neither model claims a likelihood it does not have, bad
options name their field, and both train and evaluate from the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from genzoo.cli import main
from genzoo.data.core import DataInfo
from genzoo.models.adversarial.losses import D_WINS_FAKE, D_WINS_REAL
from genzoo.models.registry import build_model

F64 = torch.float64
DIGITS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
BINARY = DataInfo("binary_mnist", (1, 28, 28), 0, "binary", 2)
SMALL = {"latent_dim": 4, "hidden_dim": 32, "num_hidden_layers": 1, "channels": 4, "disc_hidden_dim": 32}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(name: str, info: DataInfo = DIGITS, **overrides):
    torch.manual_seed(0)
    return build_model(name, info, {**SMALL, **overrides})


def batch(info: DataInfo, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    x = torch.randint(0, info.num_levels, (n, *info.shape), generator=g) / (info.num_levels - 1)
    return x, torch.randint(0, max(info.num_classes, 1), (n,), generator=g)


# --- AVB: the discriminator and the model phase ---------------------------------------------------------
class FixedGaussianEncoder(nn.Module):
    """z = mu + s * eps: q(z | x) = N(mu, s^2) whatever x is."""

    def __init__(self, mu: float, s: float):
        super().__init__()
        self.mu, self.s = mu, s

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.mu + self.s * eps  # (B, 1)


def test_avb_discriminator_recovers_the_log_density_ratio():
    """Trained on the model's own discriminator loss, T(x, z) -> log q(z|x) - log p(z) (Proposition 1)."""
    mu, s = 0.5, 0.6
    point = DataInfo("point", (1, 1, 1), 0, "continuous", None)
    torch.manual_seed(0)
    model = build_model("avb", point, {"latent_dim": 1, "noise_dim": 1, "hidden_dim": 8, "num_hidden_layers": 2,
                                       "disc_hidden_dim": 64}).to(F64)
    model.encoder = FixedGaussianEncoder(mu, s)
    (phase,) = [p for p in model.phases() if p.name == "discriminator"]
    optimizer = torch.optim.Adam(phase.parameters, lr=3e-3)
    x = torch.zeros(512, 1, 1, 1, dtype=F64)
    for step in range(300):
        loss = model.loss(x, phase="discriminator", step=step)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    z = torch.linspace(mu - 2 * s, mu + 2 * s, 101, dtype=F64)  # the bulk of q; p has mass there too
    log_ratio = -math.log(s) - (z - mu) ** 2 / (2 * s**2) + z**2 / 2  # log N(z; mu, s^2) - log N(z; 0, 1)
    with torch.no_grad():
        t = model.T(torch.zeros(101, 1, 1, 1, dtype=F64), z[:, None])
    assert (t - log_ratio).abs().max() < 0.25, (t - log_ratio).abs().max()


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_avb_model_phase_trains_the_encoder_through_T_and_never_T(architecture):
    model = make("avb", architecture=architecture)
    x, _ = batch(DIGITS)
    phases = {p.name: p for p in model.phases()}
    t_params = list(model.discriminator.parameters())
    assert not {id(p) for p in t_params} & {id(p) for p in phases["model"].parameters}

    torch.manual_seed(3)
    out = model.loss(x, phase="model")
    torch.testing.assert_close(out["loss"], out["recon"] + out["T"])
    torch.testing.assert_close(out["neg_elbo_estimate"], out["loss"])
    out["T"].sum().backward()
    assert all(p.grad is None for p in t_params)  # T's weights get no gradient in this phase
    assert all(p.grad is None for p in model.decoder.parameters())  # T does not depend on the decoder
    through_t = [p.grad.clone() for p in model.encoder.parameters()]
    assert any(g.abs().sum() > 0 for g in through_t)  # the encoder learns through T's input z

    # the same gradient as differentiating an ordinary call of T with respect to its input z
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    model.discriminator(x, model.q_sample(x)).sum().backward()
    for expected, p in zip(through_t, model.encoder.parameters()):
        torch.testing.assert_close(p.grad, expected)


# --- AAE: the prior -------------------------------------------------------------------------------------
def test_aae_mixture_means_lie_on_a_circle_in_the_first_two_coordinates():
    model = make("aae", prior="mixture", latent_dim=5).double()
    means = model.mixture_means()
    k = torch.arange(10, dtype=F64)
    assert means.shape == (10, 5)
    torch.testing.assert_close(means[:, 0], 4.0 * torch.cos(2 * math.pi * k / 10))
    torch.testing.assert_close(means[:, 1], 4.0 * torch.sin(2 * math.pi * k / 10))
    assert torch.all(means[:, 2:] == 0)


def test_aae_mixture_prior_has_the_documented_weights_means_and_std():
    k, r, s, n = 10, 50.0, 0.5, 20_000  # radius 50: components 31 apart, 60 sd, so nearest-mean is exact
    model = make("aae", prior="mixture", latent_dim=3, mixture_components=k, mixture_radius=r, mixture_std=s)
    state = torch.get_rng_state()
    z = model.prior_sample(n, generator=gen(1)).double()  # (n, 3)
    assert torch.get_rng_state().equal(state)
    assert torch.equal(z, model.prior_sample(n, generator=gen(1)).double())
    means = model.mixture_means().double()
    component = torch.cdist(z, means).argmin(1)
    counts = torch.bincount(component, minlength=k).double()
    assert torch.all((counts - n / k).abs() < 5 * math.sqrt(n * (1 / k) * (1 - 1 / k))), counts  # weights 1/K
    for j in range(k):
        zj = z[component == j]
        assert torch.all((zj.mean(0) - means[j]).abs() < 5 * s / math.sqrt(len(zj))), (j, zj.mean(0), means[j])
        assert torch.all((zj.std(0) - s).abs() < 5 * s / math.sqrt(2 * len(zj))), (j, zj.std(0))


def test_aae_labels_pick_the_mixture_component(monkeypatch):
    model = make("aae", prior="mixture", label_conditioned=True, mixture_radius=50.0)  # no overlap
    assert model.conditional
    labels = torch.arange(200) % 10
    z = model.prior_sample(200, labels, gen(2))
    assert torch.equal(torch.cdist(z, model.mixture_means()).argmin(1), labels)
    monkeypatch.setattr(model, "decode", lambda z, y=None: z)  # sample() returns the codes it would decode
    codes = model.sample(200, labels, gen(2))
    assert torch.equal(codes, z)
    with pytest.raises(ValueError, match="labels"):
        model.sample(4)
    x, y = batch(DIGITS)
    for phase in model.phases():
        assert torch.all(torch.isfinite(model.loss(x, y, phase=phase.name)["loss"]))


def test_aae_gaussian_encoder_codes_are_its_mean():
    model = make("aae", encoder="gaussian")
    x, _ = batch(DIGITS)
    mean = model.encoder(x).chunk(2, dim=-1)[0]
    torch.testing.assert_close(model.encode(x), mean)
    torch.manual_seed(0)
    a = model.q_sample(x)
    b = model.q_sample(x)
    assert not torch.equal(a, b)  # q(z|x) is sampled in training


# --- phases: each player updates its own parameters only --------------------------------------------------
def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_phases_own_the_documented_parameter_sets():
    avb = make("avb")
    d, m = avb.phases()
    assert (d.name, m.name) == ("discriminator", "model")
    assert not _ids(d.parameters) & _ids(m.parameters)
    assert _ids(d.parameters) | _ids(m.parameters) == _ids(avb.parameters())

    aae = make("aae")
    auto, disc, enc = aae.phases()
    assert (auto.name, disc.name, enc.name) == ("autoencoder", "discriminator", "encoder")
    assert _ids(auto.parameters) == _ids(aae.encoder.parameters()) | _ids(aae.decoder.parameters())
    assert _ids(disc.parameters) == _ids(aae.discriminator.parameters())
    assert _ids(enc.parameters) == _ids(aae.encoder.parameters())  # the encoder plays twice (the paper)
    assert _ids(auto.parameters) | _ids(disc.parameters) == _ids(aae.parameters())
    assert not _ids(disc.parameters) & _ids(auto.parameters)
    assert auto.lr is None and disc.lr == enc.lr == aae.config.adversarial_lr


@pytest.mark.parametrize("name", ["aae", "avb"])
def test_a_phase_update_changes_its_own_parameters_only(name):
    model = make(name)
    x, _ = batch(DIGITS)
    for phase in model.phases():
        own = _ids(phase.parameters)
        before = {id(p): p.detach().clone() for p in model.parameters()}
        model.zero_grad(set_to_none=True)
        model.loss(x, phase=phase.name)["loss"].mean().backward()
        with_grad = {id(p) for p in model.parameters() if p.grad is not None}
        assert with_grad == own, phase.name  # no gradient reaches another player's weights
        optimizer = torch.optim.Adam(phase.parameters, lr=1e-2)
        optimizer.step()
        for p in model.parameters():
            if id(p) in own:
                continue
            assert torch.equal(p, before[id(p)]), phase.name
        assert any(not torch.equal(p, before[id(p)]) for p in phase.parameters), phase.name


def test_unknown_phase_fails_naming_the_phases():
    x, _ = batch(DIGITS)
    with pytest.raises(ValueError, match="autoencoder, discriminator, encoder"):
        make("aae").loss(x, phase="model")
    with pytest.raises(ValueError, match="discriminator, model"):
        make("avb").loss(x, phase="generator")


# --- likelihoods and estimates --------------------------------------------------------------------------
def test_aae_has_no_likelihood_and_avb_an_estimate_that_is_no_bound():
    x, _ = batch(DIGITS)
    aae = make("aae")
    result = aae.log_likelihood(x, num_samples=10, generator=gen(0))
    assert result.kind == "unavailable" and result.value is None and "no tractable likelihood" in result.reason
    assert aae.estimators == ()
    avb = make("avb")
    estimate = avb.log_likelihood(x, num_samples=10, generator=gen(0))
    assert estimate.kind == "estimate" and avb.estimators == ("discriminator",)
    assert "discriminator" in estimate.reason and "not a bound" in estimate.reason
    torch.testing.assert_close(estimate.value, avb.elbo_estimate(x, generator=gen(0)))


def test_avb_elbo_estimate_is_log_px_given_z_minus_T_seeded_by_the_generator():
    model = make("avb", BINARY)
    x, _ = batch(BINARY)
    state = torch.get_rng_state()
    first = model.elbo_estimate(x, generator=gen(4))
    assert torch.get_rng_state().equal(state)
    assert first.shape == (6,) and torch.all(torch.isfinite(first)) and not first.requires_grad
    assert torch.equal(first, model.elbo_estimate(x, generator=gen(4)))
    assert not torch.equal(first, model.elbo_estimate(x, generator=gen(5)))
    with torch.no_grad():
        z = model.q_sample(x, gen(4))  # the same eps, drawn the same way
        log_px = model.log_px_given_z(x, z)
        torch.testing.assert_close(first, log_px - model.T(x, z))
    # Bernoulli pixels: log p(x|z) <= 0, so the estimate is <= 0 wherever T >= 0 (a KL is >= 0);
    # T itself is only an estimate and may be negative, so the estimate is not bounded above by 0.
    assert torch.all(log_px <= 0)


def test_avb_encode_is_the_encoder_at_zero_noise():
    model = make("avb")
    x, _ = batch(DIGITS)
    torch.testing.assert_close(model.encode(x), model.encoder(x, torch.zeros(6, model.config.noise_dim)))


# --- training warnings -------------------------------------------------------------------------------------
def test_aae_warns_when_the_discriminator_on_z_wins():
    model = make("aae")
    winning = {"discriminator/d_real": (1 + D_WINS_REAL) / 2, "discriminator/d_fake": D_WINS_FAKE / 2}
    (message,) = model.training_warnings(winning)
    assert "discriminator" in message and "prior" in message
    assert model.training_warnings({"discriminator/d_real": 0.6, "discriminator/d_fake": 0.4}) == []
    assert model.training_warnings({"autoencoder/recon": 90.0}) == []


def test_avb_warns_about_a_negative_kl_estimate():
    model = make("avb")
    assert len(model.training_warnings({"T": -2.0})) == 1
    assert model.training_warnings({"T": 3.0}) == []
    assert model.training_warnings({}) == []


# --- config validation ---------------------------------------------------------------------------------------
UNLABELLED = DataInfo("unlabelled", (1, 8, 8), 0, "discrete", 17)


@pytest.mark.parametrize("name, overrides, info, field", [
    ("aae", {"prior": "nope"}, DIGITS, "prior"),
    ("aae", {"encoder": "nope"}, DIGITS, "encoder"),
    ("aae", {"likelihood": "nope"}, DIGITS, "likelihood"),
    ("aae", {"mixture_components": 0}, DIGITS, "mixture_components"),
    ("aae", {"mixture_radius": -1.0}, DIGITS, "mixture_radius"),
    ("aae", {"mixture_std": 0.0}, DIGITS, "mixture_std"),
    ("aae", {"disc_hidden_dim": 0}, DIGITS, "disc_hidden_dim"),
    ("aae", {"adversarial_lr": 0.0}, DIGITS, "adversarial_lr"),
    ("aae", {"prior": "mixture", "latent_dim": 1}, DIGITS, "latent_dim"),
    ("aae", {"label_conditioned": True}, DIGITS, "label_conditioned"),  # needs the mixture prior
    ("aae", {"label_conditioned": True, "prior": "mixture"}, UNLABELLED, "label_conditioned"),
    ("aae", {"label_conditioned": True, "prior": "mixture", "mixture_components": 4}, DIGITS, "mixture_components"),
    ("avb", {"noise_dim": 0}, DIGITS, "noise_dim"),
    ("avb", {"disc_hidden_dim": -3}, DIGITS, "disc_hidden_dim"),
    ("avb", {"likelihood": "discretized_logistic"}, DataInfo("c", (1, 8, 8), 0, "continuous", None), "likelihood"),
], ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else getattr(v, "name", v))
def test_invalid_config_raises_naming_the_field(name, overrides, info, field):
    with pytest.raises(ValueError, match=field):
        build_model(name, info, {**SMALL, **overrides})


# --- the command line ----------------------------------------------------------------------------------------
# "--eval-metrics nll": the likelihood pass only (it stops at once for a model without one)
TINY = ["--max-steps", "3", "--batch-size", "16", "--hidden-dim", "32", "--latent-dim", "4",
        "--disc-hidden-dim", "32", "--eval-metrics", "nll"]


def test_cli_trains_aae_on_mnist(shared_data, tmp_path):
    out = tmp_path / "aae"
    code = main(["train", "aae", "--data", "mnist", "--data-root", str(shared_data / "mnist"), *TINY,
                 "--out", str(out)])
    assert code == 0
    assert (out / "samples.png").is_file() and (out / "reconstructions.png").is_file()
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"autoencoder/recon", "discriminator/d_real", "discriminator/d_fake", "encoder/loss"} <= set(header)


def test_cli_trains_avb_on_binarized_mnist_and_eval_reports_an_estimate(shared_data, tmp_path, capsys):
    out = tmp_path / "avb"
    code = main(["train", "avb", "--data", "binarized_mnist", "--data-root", str(shared_data / "binarized_mnist"),
                 *TINY, "--out", str(out)])
    assert code == 0
    assert (out / "samples.png").is_file() and (out / "reconstructions.png").is_file()
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"recon", "T", "neg_elbo_estimate", "discriminator/loss"} <= set(header)
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--limit", "50"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["likelihood"] == "estimate" and "neg_elbo_nats" not in metrics
    assert metrics["nll_std_err"] is None  # one draw of the estimate per example: no variance
    assert "not a bound" in metrics["likelihood_method"]
