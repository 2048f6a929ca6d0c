"""Unit behaviour of every model in the registry: the protocol (per-example loss terms, seeded
side-effect-free sampling, what log_likelihood reports), config validation naming the field,
label handling, the DVAE corruption, and the autoencoder's latent samplers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from genzoo.data.core import DataInfo
from genzoo.distributions.gaussian import gaussian_kl, reparameterize
from genzoo.models.latent.vae import VAE
from genzoo.models.registry import build_model, model_class, MODELS
from genzoo.nn.mlp import ACTIVATIONS, mlp

DIGITS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
BINARY = DataInfo("binary_mnist", (1, 28, 28), 10, "binary", 2)
UNLABELLED = DataInfo("binary_unlabelled", (1, 28, 28), 0, "binary", 2)
ODD = DataInfo("odd", (1, 6, 6), 0, "binary", 2)
BINARY8 = DataInfo("binary8", (1, 8, 8), 10, "binary", 2)  # DIGITS's shape, for models of binary data only
SMALL = {"latent_dim": 4, "hidden_dim": 32, "num_hidden_layers": 1, "channels": 4,
         # the autoregressive family's sizes
         "num_blocks": 1, "num_layers": 1, "hidden_channels": 4, "output_channels": 8, "hidden_dims": (32,)}
VAE_FAMILY = sorted(name for name, cls in MODELS.items() if issubclass(cls, VAE))  # ELBO models
GRADIENT = sorted(name for name, cls in MODELS.items() if cls.training_mode == "gradient")  # trained by `loss`


def on_data(*infos: DataInfo, names: list[str] | None = None) -> list:
    """(name, info) pairs of every model (of ``names``) with each data it models (``value_types``)."""
    return [pytest.param(name, info, id=f"{name}-{info.name}") for name in names or sorted(MODELS) for info in infos
            if info.value_type in MODELS[name].value_types]


def data_for(name: str) -> DataInfo:
    """DIGITS, or its binary twin for a model of binary data only."""
    return DIGITS if DIGITS.value_type in MODELS[name].value_types else BINARY8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(info: DataInfo, n: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in the model representation ([0, 1] levels) and labels."""
    g = gen(seed)
    c, h, w = info.shape
    x = torch.randint(0, info.num_levels, (n, c, h, w), generator=g) / (info.num_levels - 1)
    y = torch.randint(0, max(info.num_classes, 1), (n,), generator=g)
    return x, y


def config_fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(model_class(name).Config)}


def make(name: str, info: DataInfo, **overrides):
    """A small model; the shared sizes (and ``architecture``) are set where the config has them."""
    torch.manual_seed(0)
    fields = config_fields(name)
    return build_model(name, info, {k: v for k, v in {**SMALL, **overrides}.items() if k in fields})


def labels_for(model, y):
    return y if model.conditional else None


def phase_names(model) -> list[str]:
    """The players' phases ("model" for single-objective models): ``loss`` is defined per phase."""
    return [phase.name for phase in model.phases()]


# --- the protocol ------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("name, info", on_data(DIGITS, BINARY, names=GRADIENT))  # closed-form fits: test_mixtures.py
def test_loss_returns_finite_per_example_terms_and_gradients(name, info, architecture):
    model = make(name, info, architecture=architecture)
    x, y = batch(info)
    for phase in model.phases():  # each player's loss trains that player's parameters
        out = model.loss(x, labels_for(model, y), phase=phase.name)
        assert "loss" in out
        for key, value in out.items():
            assert value.shape == (5,), (phase.name, key)
            assert torch.all(torch.isfinite(value)), (phase.name, key)
        if "recon" in out:  # -log of a probability mass (or a cross-entropy): >= 0 nats
            assert torch.all(out["recon"] >= 0)
        if "kl" in out:
            assert torch.all(out["kl"] >= 0)
        model.zero_grad(set_to_none=True)
        out["loss"].mean().backward()
        grads = [p.grad for p in phase.parameters if p.requires_grad]
        assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads), phase.name
        assert any(g.abs().sum() > 0 for g in grads), phase.name


@pytest.mark.parametrize("name, info", on_data(DIGITS, BINARY))
def test_sample_is_deterministic_given_a_generator_and_leaves_global_rng_alone(name, info):
    model = make(name, info, architecture="conv")
    c, h, w = info.shape
    labels = torch.arange(6) % 10 if model.conditional else None
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = model.sample(6, labels, generator=gen(7))
    assert torch.equal(torch.get_rng_state(), state)
    second = model.sample(6, labels, generator=gen(7))
    other = model.sample(6, labels, generator=gen(8))
    assert first.shape == (6, c, h, w)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.all((first >= 0) & (first <= 1))
    assert not first.requires_grad  # sampling runs without autograd
    assert model.training  # and leaves the module's mode alone


@pytest.mark.parametrize("name", VAE_FAMILY)
def test_log_likelihood_of_vae_family_is_a_lower_bound(name):
    model = make(name, DIGITS)
    x, y = batch(DIGITS)
    y = labels_for(model, y)
    elbo = model.log_likelihood(x, y, num_samples=1, generator=gen(0))
    assert elbo.kind == "lower_bound" and elbo.value.shape == (5,)
    # log p(x|z) <= 0 for a probability mass function and KL >= 0, so the ELBO estimate is <= 0
    assert torch.all(elbo.value <= 0)
    iwae = model.log_likelihood(x, y, num_samples=150, generator=gen(0))  # two chunks of samples
    assert iwae.kind == "lower_bound" and iwae.value.shape == (5,) and torch.all(torch.isfinite(iwae.value))
    again = model.log_likelihood(x, y, num_samples=150, generator=gen(0))
    assert torch.equal(iwae.value, again.value)  # deterministic given a generator


def test_log_likelihood_of_the_autoencoder_is_unavailable():
    model = make("ae", DIGITS)
    result = model.log_likelihood(batch(DIGITS)[0])
    assert result.kind == "unavailable" and result.value is None and result.reason


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_rebuilds_the_same_model(name):
    """config.to_dict() -> build_model -> load_state_dict gives the same outputs (what a checkpoint needs)."""
    info = data_for(name)
    model = make(name, info, architecture="conv")
    twin = build_model(name, info, model.config.to_dict())
    twin.load_state_dict(model.state_dict())
    x, y = batch(info)
    labels = labels_for(model, y)
    for phase in phase_names(model):
        torch.manual_seed(1)
        a = model.loss(x, labels, phase=phase)["loss"]
        torch.manual_seed(1)
        b = twin.loss(x, labels, phase=phase)["loss"]
        assert torch.equal(a, b), phase
    assert torch.equal(model.sample(3, labels_for(model, y[:3]), gen(2)), twin.sample(3, labels_for(model, y[:3]), gen(2)))


@pytest.mark.parametrize("name", GRADIENT)  # a closed-form fit is float64 throughout (tests/test_mixtures.py)
def test_models_run_in_float64(name):
    """The maths tests run models in float64: loss and sampling must stay in that precision."""
    info = data_for(name)
    model = make(name, info).double()
    x, y = batch(info)
    for phase in phase_names(model):
        out = model.loss(x.double(), labels_for(model, y), phase=phase)
        assert out["loss"].dtype == torch.float64, phase
    assert model.sample(3, labels_for(model, y[:3]), gen(0)).dtype == torch.float64


def test_a_gated_hidden_layer_is_values_times_sigmoid_gates():
    torch.manual_seed(0)
    net = mlp([3, 4, 2], ACTIVATIONS["gated"]).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    first, last = net[0], net[2]
    values, gates = first.weight[:4] @ x.T + first.bias[:4, None], first.weight[4:] @ x.T + first.bias[4:, None]
    expected = last.weight @ (values * (1 / (1 + torch.exp(-gates)))) + last.bias[:, None]  # (2, 5)
    torch.testing.assert_close(net(x), expected.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "gated"])
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_every_activation_trains_the_autoencoder_family(activation, architecture):
    model = make("vae", BINARY, architecture=architecture, activation=activation)
    x, _ = batch(BINARY)
    model.loss(x)["loss"].mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["vae", "iwae", "dvae"])
def test_vampprior_is_learned_with_the_model_and_travels_in_the_state_dict(name, architecture):
    model = make(name, BINARY, architecture=architecture, prior="vamp", pseudo_inputs=6)
    assert model.pseudo_inputs().shape == (6, *BINARY.shape)
    x, _ = batch(BINARY)
    model.loss(x, step=1)["loss"].mean().backward()
    assert model.pseudo_input_logits.grad.abs().sum() > 0  # the prior's pseudo-inputs are trained
    twin = build_model(name, BINARY, model.config.to_dict())
    twin.load_state_dict(model.state_dict())
    assert torch.equal(model.sample(4, generator=gen(3)), twin.sample(4, generator=gen(3)))
    torch.testing.assert_close(model.log_likelihood(x, num_samples=20, generator=gen(4)).value,
                               twin.log_likelihood(x, num_samples=20, generator=gen(4)).value)


# --- config validation ---------------------------------------------------------------------------------
SHARED_INVALID = [
    ({"latent_dim": 0}, DIGITS, "latent_dim"),
    ({"hidden_dim": -1}, DIGITS, "hidden_dim"),
    ({"architecture": "x"}, DIGITS, "architecture"),
    ({"architecture": "conv"}, ODD, "architecture"),
    ({"activation": "swish"}, DIGITS, "activation"),
]


@pytest.mark.parametrize("name, overrides, info, field", [
    pytest.param(name, overrides, info, field, id=f"{name}-{field}-{next(iter(overrides.values()))}")
    for name in sorted(MODELS) for overrides, info, field in SHARED_INVALID
    if set(overrides) <= config_fields(name)  # only the models that have the option
])
def test_invalid_shared_config_raises_naming_the_field(name, overrides, info, field):
    if name == "cvae" and info.num_classes == 0:
        info = DataInfo("odd_labelled", info.shape, 10, info.value_type, info.num_levels)
    if info.value_type not in MODELS[name].value_types:  # the same shape, as data the model takes
        info = DataInfo(info.name, info.shape, info.num_classes, "binary", 2)
    with pytest.raises(ValueError, match=field):
        build_model(name, info, overrides)


@pytest.mark.parametrize("name, overrides, info, field", [
    ("vae", {"likelihood": "nope"}, DIGITS, "likelihood"),
    ("vae", {"likelihood": "discretized_logistic"}, DataInfo("c", (1, 8, 8), 0, "continuous", None), "likelihood"),
    ("vae", {"beta": 0.0}, DIGITS, "beta"),
    ("vae", {"kl_warmup_steps": -1}, DIGITS, "kl_warmup_steps"),
    ("iwae", {"beta": 4.0}, DIGITS, "beta"),
    ("iwae", {"kl_warmup_steps": 100}, DIGITS, "kl_warmup_steps"),
    ("iwae", {"k": 0}, DIGITS, r"\bk\b"),
    ("vae", {"prior": "nope"}, DIGITS, "prior"),
    ("vae", {"prior": "vamp", "pseudo_inputs": 0}, DIGITS, "pseudo_inputs"),
    ("cvae", {"prior": "nope"}, DIGITS, "prior"),
    ("cvae", {"prior": "vamp"}, DIGITS, "prior"),  # its posterior needs a label, a pseudo-input has none
    ("cvae", {}, UNLABELLED, "label"),
    ("dvae", {"corruption": "bitflip", "noise_level": 0.7}, BINARY, "noise_level"),
    ("dvae", {"noise_level": 0.7}, BINARY, "noise_level"),  # "auto" corrupts binary data by bit flips
    ("dvae", {"noise_level": 0.0}, DIGITS, "noise_level"),
    ("dvae", {"corruption": "nope"}, DIGITS, "corruption"),
    ("ae", {"latent_sampler": "nope"}, DIGITS, "latent_sampler"),
    ("ae", {"reconstruction": "nope"}, DIGITS, "reconstruction"),
    ("ae", {"gmm_components": 0}, DIGITS, "gmm_components"),
], ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "defaults" if isinstance(v, dict)
    else getattr(v, "name", v))
def test_invalid_model_config_raises_naming_the_field(name, overrides, info, field):
    with pytest.raises(ValueError, match=field):
        build_model(name, info, {**{k: v for k, v in SMALL.items() if k in config_fields(name)}, **overrides})


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        build_model("vae", DIGITS, {"latent_dims": 3})
    message = str(error.value)
    assert "latent_dims" in message
    for field in ("latent_dim", "hidden_dim", "architecture", "likelihood", "beta", "kl_warmup_steps"):
        assert field in message


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError) as error:
        model_class("nope")
    assert all(name in str(error.value) for name in MODELS)
    with pytest.raises(ValueError, match="nope"):
        build_model("nope", DIGITS)
    for name, cls in MODELS.items():
        assert model_class(name) is cls and cls.name == name


# --- labels ---------------------------------------------------------------------------------------------
def test_conditional_model_without_labels_raises_clearly():
    model = make("cvae", DIGITS)
    x, _ = batch(DIGITS)
    for call in (lambda: model.loss(x), lambda: model.sample(3), lambda: model.log_likelihood(x, num_samples=2),
                 lambda: model.encode(x)):
        with pytest.raises(ValueError, match="labels"):
            call()


@pytest.mark.parametrize("bad", [torch.tensor([0, 1, 2, 3, 10]), torch.tensor([0, -1, 2, 3, 4]), torch.tensor([0, 1])],
                         ids=["too-large", "negative", "wrong-shape"])
def test_bad_labels_raise(bad):
    model = make("cvae", DIGITS)
    x, _ = batch(DIGITS)
    with pytest.raises(ValueError, match="labels"):
        model.loss(x, bad)
    with pytest.raises(ValueError, match="labels"):
        model.sample(5, bad)


def test_cvae_samples_depend_on_the_label():
    model = make("cvae", DIGITS, prior="learned")
    a = model.sample(4, torch.zeros(4, dtype=torch.long), gen(0))
    b = model.sample(4, torch.full((4,), 7), gen(0))
    assert not torch.allclose(a, b)


# --- the denoising VAE's corruption ---------------------------------------------------------------------
def test_dvae_bitflip_flips_noise_level_of_the_bits():
    model = make("dvae", BINARY, noise_level=0.2)
    assert model.corruption == "bitflip"
    x, _ = batch(BINARY, n=64)  # 50,176 bits
    state = torch.get_rng_state()
    corrupted = model.corrupt(x, gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(corrupted, model.corrupt(x, gen(1)))
    assert torch.all((corrupted == 0) | (corrupted == 1))
    flipped = corrupted != x
    se = math.sqrt(0.2 * 0.8 / x.numel())
    assert abs(flipped.double().mean().item() - 0.2) < 5 * se
    # independent of the bit's value: zeros and ones are flipped alike
    for value in (0.0, 1.0):
        rate = flipped[x == value].double().mean().item()
        assert abs(rate - 0.2) < 5 * math.sqrt(0.2 * 0.8 / (x == value).sum().item())


def test_dvae_gaussian_corruption_has_std_noise_level():
    model = make("dvae", DIGITS, noise_level=0.3)
    assert model.corruption == "gaussian"
    x, _ = batch(DIGITS, n=400)  # 25,600 pixels
    noise = (model.corrupt(x, gen(2)) - x).double()
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * 0.3 / math.sqrt(n)
    assert abs(noise.std().item() - 0.3) < 5 * 0.3 / math.sqrt(2 * n)


def test_dvae_encodes_the_corrupted_input_and_reconstructs_the_clean_one():
    model = make("dvae", BINARY, noise_level=0.25)
    x, _ = batch(BINARY)
    torch.manual_seed(3)
    out = model.loss(x)
    torch.manual_seed(3)  # the same corruption and the same eps, drawn in the same order
    x_tilde = model.corrupt(x)
    mean, logvar = model.posterior(x_tilde)
    z = reparameterize(mean, logvar)
    torch.testing.assert_close(out["recon"], -model.log_px_given_z(x, z))
    torch.testing.assert_close(out["kl"], gaussian_kl(mean, logvar))
    torch.testing.assert_close(out["neg_dvae_bound"], out["recon"] + out["kl"])


# --- the autoencoder's latent samplers ----------------------------------------------------------------
def _identity_decoder(model, monkeypatch):
    """Make ``sample`` return the codes it would decode."""
    monkeypatch.setattr(model, "decode", lambda z, y=None: z)


def test_ae_gmm_sampler_draws_codes_from_the_fitted_mixture(monkeypatch):
    model = make("ae", DIGITS, latent_dim=2, gmm_components=3)
    batches = [(batch(DIGITS, n=50, seed=s)[0], None) for s in range(4)]  # an iterable of (x, None)
    model.fit_after_training(iter(batches))
    with torch.no_grad():
        codes = torch.cat([model.encode(x) for x, _ in batches]).double()
    w, mu, tril = model.gmm_weights.double(), model.gmm_means.double(), model.gmm_scale_tril.double()
    assert w.shape == (3,) and mu.shape == (3, 2) and tril.shape == (3, 2, 2)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.all(w > 0)
    assert torch.equal(tril, tril.tril()) and torch.all(torch.diagonal(tril, dim1=1, dim2=2) > 0)
    mixture_mean = (w[:, None] * mu).sum(0)
    covariances = tril @ tril.transpose(1, 2)
    mixture_cov = (w[:, None, None] * (covariances + mu[:, :, None] * mu[:, None, :])).sum(0) - torch.outer(
        mixture_mean, mixture_mean)
    # EM's M-step keeps the mixture mean at the codes' mean
    torch.testing.assert_close(mixture_mean, codes.mean(0), rtol=1e-4, atol=1e-4)

    _identity_decoder(model, monkeypatch)
    n = 20_000
    sampled = model.sample(n, generator=gen(5)).double()  # (n, 2) codes
    assert sampled.shape == (n, 2)
    se = torch.sqrt(torch.diagonal(mixture_cov) / n)
    assert torch.all((sampled.mean(0) - mixture_mean).abs() < 5 * se), (sampled.mean(0), mixture_mean)
    torch.testing.assert_close(torch.cov(sampled.T), mixture_cov, rtol=0.05, atol=0.05 * mixture_cov.abs().max().item())


def test_ae_prior_sampler_decodes_standard_normal_codes(monkeypatch):
    model = make("ae", DIGITS, latent_dim=3, latent_sampler="prior")
    with torch.no_grad():
        expected = model.decode(torch.randn(8, 3, generator=gen(4)))
    torch.testing.assert_close(model.sample(8, generator=gen(4)), expected, rtol=0, atol=0)
    # fitting the mixture does not change what the prior sampler draws
    model.fit_after_training([(batch(DIGITS, n=60)[0], None)])
    torch.testing.assert_close(model.sample(8, generator=gen(4)), expected, rtol=0, atol=0)
    _identity_decoder(model, monkeypatch)
    codes = model.sample(20_000, generator=gen(6)).double()
    assert torch.all(codes.mean(0).abs() < 5 / math.sqrt(20_000))
    torch.testing.assert_close(torch.cov(codes.T), torch.eye(3, dtype=torch.float64), rtol=0, atol=0.05)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_images_of_the_wrong_shape_or_with_nan_pixels_are_refused(name):
    info = data_for(name)
    model = make(name, info, hidden_dim=16, latent_dim=2)
    y = torch.zeros(4, dtype=torch.long) if model.conditional else None
    with pytest.raises(ValueError, match=r"built for images of shape \(B, 1, 8, 8\).*got \(4, 1, 28, 28\)"):
        model.loss(torch.rand(4, 1, 28, 28), y)
    if hasattr(model, "encode"):  # GANs have a generator (decode) but no encoder
        with pytest.raises(ValueError, match=r"got \(4, 64\)"):
            model.encode(torch.rand(4, 64), y)
    x = torch.rand(4, 1, 8, 8)
    x[2, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="input images contains NaN or infinite values"):
        model.loss(x, y)
    if name != "ae":
        with pytest.raises(ValueError, match="NaN"):
            model.log_likelihood(x, y, num_samples=2)
