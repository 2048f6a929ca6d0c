"""Models of real vectors (the 2-D arena), checked against independent computations.

- the per-dimension Gaussian mixture (RNADE's conditionals) equals torch's MixtureSameFamily,
  integrates to one, and its draws from uniform noise follow its CDF (a KS test that rejects a
  shifted mixture); the unbounded Gaussian equals torch's Normal with an identity mean;
- MADE and NADE on vectors: each conditional reads only earlier coordinates (zero gradients), the
  one-pass log-likelihood is the sum of the conditionals asked one at a time and of torch's mixture
  densities, the density integrates to one over the plane, and sampling and completion draw from
  the conditionals;
- the VAE on vectors: ELBO <= IWAE_k <= log p(x), log p(x) by quadrature over a 1-D latent;
- the GANs' players see vectors unscaled and the generators' outputs are linear;
- vae, iwae, ae, gan, wgan-gp, made and nade train on eight-gaussians (dvae, aae and avb build and
  give finite losses); the image-only models refuse it in one line that says what to use.
"""

from __future__ import annotations

import math

import pytest
import torch
from autoregressive_checks import check_autoregressive
from scipy import stats
from test_math import Z_SCORE, assert_within_se, gen, mc_mean, mean_bound, quadrature_log_px
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, Normal

from genzoo.data.core import DataInfo
from genzoo.data.registry import dataset_info, load_split
from genzoo.distributions.likelihoods import UNBOUNDED_MIN_LOG_SCALE, GaussianMixture, UnboundedGaussian
from genzoo.evaluate.likelihood import likelihood_metrics
from genzoo.models.registry import build_model
from genzoo.train.loop import train

F64 = torch.float64
ARENA = dataset_info("eight-gaussians")  # (2,), continuous
VECTORS5 = DataInfo("toy-vectors", (5,), 0, "continuous", None)


# --- the per-dimension likelihoods of real values -----------------------------------------------------
def mixture_params(components: int, batch: tuple[int, ...] = (), seed: int = 0) -> torch.Tensor:
    """(..., 3M): logits, means spread over [-4, 4], log-scales in [-1.5, 0.5]."""
    g = gen(seed)
    logits = torch.randn(*batch, components, generator=g, dtype=F64)
    means = 2 * torch.randn(*batch, components, generator=g, dtype=F64)
    log_scales = 2 * torch.rand(*batch, components, generator=g, dtype=F64) - 1.5
    return torch.cat([logits, means, log_scales], -1)


def torch_mixture(params: torch.Tensor) -> MixtureSameFamily:
    """The mixture as torch.distributions builds it (an implementation independent of genzoo)."""
    logits, means, log_scales = params.chunk(3, -1)
    scales = log_scales.clamp(min=UNBOUNDED_MIN_LOG_SCALE).exp()
    return MixtureSameFamily(Categorical(logits=logits), Normal(means, scales))


def ks_pvalue(draws: torch.Tensor, params: torch.Tensor) -> float:
    """The p-value of a Kolmogorov-Smirnov test of 1-D draws (n,) against the mixture of ``params`` (P,)."""
    mixture = torch_mixture(params)
    return stats.kstest(draws.numpy(), lambda v: mixture.cdf(torch.as_tensor(v)).numpy()).pvalue


def test_gaussian_mixture_log_prob_and_mean_equal_torch_mixture_same_family():
    likelihood = GaussianMixture(3)
    assert (likelihood.params_per_dim, likelihood.noise_per_dim, likelihood.input_kind) == (9, 4, "continuous")
    params = mixture_params(3, (4, 2))  # (B, D, P)
    x = 3 * torch.randn(4, 2, generator=gen(1), dtype=F64)
    reference = torch_mixture(params)
    torch.testing.assert_close(likelihood.log_prob(x, params), reference.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(likelihood.mean(params), reference.mean, rtol=1e-12, atol=1e-12)
    params[..., 6] = -40.0  # a log-scale below the floor is clamped to it
    reference = torch_mixture(params)
    torch.testing.assert_close(likelihood.log_prob(x, params), reference.log_prob(x), rtol=1e-12, atol=1e-9)
    # bf16 parameters are computed in fp32
    assert likelihood.log_prob(x.bfloat16(), params.bfloat16()).dtype == torch.float32


def test_gaussian_mixture_density_integrates_to_one():
    params = mixture_params(4, (3,), seed=2)  # three mixtures of four components, (3, P)
    grid = torch.linspace(-25.0, 25.0, 100_001, dtype=F64)  # scales >= e^-1.5 = 0.22 >> spacing 5e-4
    log_p = GaussianMixture(4).log_prob(grid[:, None], params)  # (G, 3)
    mass = torch.logsumexp(log_p, 0).exp() * (grid[1] - grid[0])
    torch.testing.assert_close(mass, torch.ones(3, dtype=F64), rtol=0, atol=1e-8)


def test_gaussian_mixture_draws_from_uniform_noise_follow_its_cdf():
    likelihood, n = GaussianMixture(3), 20_000
    params = mixture_params(3, seed=3)  # (P,)
    uniform = torch.rand(n, likelihood.noise_per_dim, generator=gen(4), dtype=F64)
    draws = likelihood.sample(params.expand(n, -1), uniform)  # (n,)
    mixture = torch_mixture(params)
    assert ks_pvalue(draws, params) > 0.01
    estimate, se = mc_mean(draws)
    assert_within_se(estimate, se, mixture.mean)
    assert draws.var().item() == pytest.approx(mixture.variance.item(), rel=0.05)
    # the test has power: the same draws are not those of the mixture shifted by a tenth of its std
    shift = torch.zeros(9, dtype=F64)
    shift[3:6] = 0.1 * mixture.stddev.item()  # the three means
    assert ks_pvalue(draws, params + shift) < 1e-3


def test_unbounded_gaussian_equals_torch_normal_with_an_identity_mean():
    likelihood = UnboundedGaussian()
    g = gen(5)
    params = torch.randn(6, 2, 2, generator=g, dtype=F64) * torch.tensor([4.0, 1.0], dtype=F64)  # (B, D, [mean, log-scale])
    x = 5 * torch.randn(6, 2, generator=g, dtype=F64)  # far outside [0, 1]
    reference = Normal(params[..., 0], params[..., 1].exp()).log_prob(x)
    torch.testing.assert_close(likelihood.log_prob(x, params), reference, rtol=1e-12, atol=1e-12)
    assert torch.equal(likelihood.mean(params), params[..., 0])  # no sigmoid
    params[..., 1] = -30.0  # below the floor
    reference = Normal(params[..., 0], math.exp(UNBOUNDED_MIN_LOG_SCALE)).log_prob(x)
    torch.testing.assert_close(likelihood.log_prob(x, params), reference, rtol=1e-12, atol=1e-9)
    # draws from uniform noise: mean + scale * Phi^-1(u)
    one = torch.tensor([2.5, math.log(0.7)], dtype=F64)
    draws = likelihood.sample(one.expand(20_000, -1), torch.rand(20_000, 1, generator=g, dtype=F64))
    assert stats.kstest(draws.numpy(), "norm", args=(2.5, 0.7)).pvalue > 0.01


# --- choices and refusals on vector data --------------------------------------------------------------
SMALL = {"vae": {"hidden_dim": 16, "latent_dim": 2}, "iwae": {"hidden_dim": 16, "latent_dim": 2},
         "dvae": {"hidden_dim": 16, "latent_dim": 2}, "aae": {"hidden_dim": 16, "latent_dim": 2, "disc_hidden_dim": 16},
         "avb": {"hidden_dim": 16, "latent_dim": 2, "disc_hidden_dim": 16, "noise_dim": 2},
         "made": {"hidden_dims": (16, 16), "mixture_components": 3}, "nade": {"hidden_dim": 16, "mixture_components": 3}}


@pytest.mark.parametrize("name", list(SMALL))
def test_auto_picks_the_real_valued_likelihood(name):
    model = build_model(name, ARENA, SMALL[name])
    expected = "gaussian_mixture" if name in ("made", "nade") else "unbounded_gaussian"
    assert model.likelihood.name == expected and model.input_kind == "continuous"


@pytest.mark.parametrize("name, use", [
    ("cvae", "a labelled dataset"), ("dcgan", "gan or wgan-gp"), ("cgan", "gan or wgan-gp"),
    ("pixelcnn", "made or nade"), ("gated-pixelcnn", "made or nade"), ("pixelrnn", "made or nade"),
])
def test_image_only_models_refuse_vectors_in_one_line_that_says_what_to_use(name, use):
    with pytest.raises(ValueError) as refused:
        build_model(name, ARENA)
    message = str(refused.value)
    assert "eight-gaussians" in message and f"use {use}" in message and "\n" not in message


@pytest.mark.parametrize("name, overrides, pattern", [
    ("vae", {"architecture": "conv"}, r"architecture 'conv' needs images.*use --set architecture=mlp"),
    ("aae", {"likelihood": "gaussian"}, r"sigmoid mean.*eight-gaussians holds real values: use unbounded_gaussian"),
    ("vae", {"likelihood": "discretized_logistic"}, r"needs discrete data; eight-gaussians is continuous"),
    ("ae", {"reconstruction": "bce"}, r"eight-gaussians holds real values: use mse"),
    ("made", {"likelihood": "categorical"}, r"'categorical' needs discrete data.*use --set likelihood=gaussian_mixture"),
    ("nade", {"likelihood": "bernoulli"}, r"'bernoulli' needs discrete data.*use --set likelihood=gaussian_mixture"),
])
def test_options_meant_for_pixels_are_refused_on_vectors_naming_the_fix(name, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(name, ARENA, overrides)


def test_vampprior_pseudo_inputs_of_vectors_are_unbounded():
    model = build_model("vae", ARENA, {**SMALL["vae"], "prior": "vamp", "pseudo_inputs": 5})
    with torch.no_grad():
        model.pseudo_input_logits.mul_(0).add_(3.0)  # a point at (3, 3), outside [0, 1]
    assert torch.equal(model.pseudo_inputs(), model.pseudo_input_logits)


# --- MADE and NADE on vectors -------------------------------------------------------------------------
def ar_model(name: str, info: DataInfo, **overrides):
    """A tiny float64 model whose output weights are tripled, so that its conditionals vary."""
    torch.manual_seed(0)
    model = build_model(name, info, {**SMALL[name], **overrides}).double()
    with torch.no_grad():
        (model.out.weight if name == "made" else model.V).mul_(3.0)
    return model.eval()


AR_CASES = [("made", ARENA, {}), ("made", VECTORS5, {"orderings": 3}), ("nade", ARENA, {}),
            ("nade", VECTORS5, {"ordering": "random"})]
AR_IDS = ["made-2d", "made-5d-3orders", "nade-2d", "nade-5d-random"]


@pytest.mark.parametrize("name, info, overrides", AR_CASES, ids=AR_IDS)
def test_each_conditional_reads_only_earlier_coordinates(name, info, overrides):
    model = ar_model(name, info, **overrides)
    for component in range(len(model.orders())):
        reads = check_autoregressive(model, component=component)  # zero gradient at and after each
        assert reads[0] == 0 and reads[1] == 1


@pytest.mark.parametrize("name, info, overrides", AR_CASES, ids=AR_IDS)
def test_log_likelihood_is_the_sum_of_the_mixture_conditionals(name, info, overrides):
    model = ar_model(name, info, **overrides)
    x = 2 * torch.randn(6, *info.shape, generator=gen(0), dtype=F64)
    with torch.no_grad():
        per_order = torch.stack([torch_mixture(model.conditionals(x, component=k)).log_prob(x).sum(1)
                                 for k in range(len(model.orders()))])  # (K, B): chain rule, torch's densities
        expected = torch.logsumexp(per_order, 0) - math.log(len(per_order))  # the uniform mixture of the orders
        torch.testing.assert_close(model.log_likelihood(x).value, expected, rtol=1e-10, atol=1e-10)
    for sampler in ("naive", "cached"):  # the D conditionals asked one coordinate at a time
        for k in range(len(model.orders())):
            stepwise = model.stepwise_log_likelihood(x, sampler=sampler, component=k)
            torch.testing.assert_close(stepwise, per_order[k], rtol=1e-10, atol=1e-10)


GRID_2D = torch.linspace(-12.0, 12.0, 401, dtype=F64)  # spacing 0.06


@pytest.mark.parametrize("name", ["made", "nade"])
def test_the_density_of_a_tiny_model_integrates_to_one_over_the_plane(name):
    model = ar_model(name, ARENA)
    points = torch.cartesian_prod(GRID_2D, GRID_2D)  # (G^2, 2)
    with torch.no_grad():
        log_p = model.log_likelihood(points).value  # (G^2,)
        scales = model.conditionals(points)[..., 6:].clamp(min=UNBOUNDED_MIN_LOG_SCALE).exp()
    dx = (GRID_2D[1] - GRID_2D[0]).item()
    assert scales.min() > 2 * dx  # the grid resolves every component
    mass = torch.logsumexp(log_p, 0).exp().item() * dx**2
    assert mass == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["made", "nade"])
def test_sampling_and_completion_draw_from_the_conditionals(name):
    model, n = ar_model(name, ARENA), 4000
    draws = model.sample(n, generator=gen(1), sampler="cached")  # (n, 2)
    # one generator, one draw: the cached sampler's sums are grouped differently, so equal to rounding
    torch.testing.assert_close(draws, model.sample(n, generator=gen(1), sampler="naive"), rtol=0, atol=1e-9)
    with torch.no_grad():
        first = model.conditionals(torch.zeros(1, 2, dtype=F64))[0, 0]  # p(x_0): reads nothing
    assert ks_pvalue(draws[:, 0], first) > 0.01
    # complete x_1 given x_0 = 1.5: x_0 kept exactly, x_1 ~ p(x_1 | x_0 = 1.5)
    x = torch.tensor([[1.5, 0.0]], dtype=F64).expand(n, 2)
    completed = model.complete(x, torch.tensor([True, False]), generator=gen(2))
    assert torch.equal(completed[:, 0], x[:, 0])
    with torch.no_grad():
        second = model.conditionals(x[:1])[0, 1]
    assert ks_pvalue(completed[:, 1], second) > 0.01
    assert not torch.allclose(second, first)  # the conditional depends on x_0: the test has something to see


# --- the VAE on vectors: bounds against quadrature -------------------------------------------------------
POINTS = torch.tensor([[0.5, -0.3], [1.0, 1.0], [-1.5, 0.2], [0.0, 2.0]], dtype=F64)


@pytest.fixture(scope="module", params=["standard", "vamp"])
def vae_1d_vectors(request):
    """An untrained VAE on 2-D vectors with a 1-D latent, its decoder's weights doubled so that p(x|z)
    varies with z; once with p(z) = N(0, 1), once with a VampPrior of 5 pseudo-inputs."""
    torch.manual_seed(0)
    model = build_model("vae", ARENA, {"latent_dim": 1, "hidden_dim": 16, "prior": request.param,
                                       "pseudo_inputs": 5}).double()
    with torch.no_grad():
        for layer in model.decoder.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(2.0)
    return model


@torch.no_grad()
def test_vae_bounds_on_vectors_lie_below_log_px_by_quadrature(vae_1d_vectors):
    model = vae_1d_vectors
    log_px = quadrature_log_px(model, POINTS)
    coarse = quadrature_log_px(model, POINTS, torch.linspace(-12.0, 12.0, 8_001, dtype=F64))
    torch.testing.assert_close(log_px, coarse, rtol=0, atol=1e-5)  # converged
    means, ses = {}, {}
    for i, (k, repeats) in enumerate({1: 2000, 5: 2000, 50: 500}.items()):
        means[k], ses[k] = mean_bound(model, POINTS, k, repeats, seed=20 + i)
        assert torch.all(means[k] <= log_px + Z_SCORE * ses[k]), (k, means[k] - log_px)
    assert torch.all(means[1] + Z_SCORE * ses[1] < log_px)  # the ELBO is strictly below
    for small, large in [(1, 5), (5, 50)]:  # ELBO <= IWAE_5 <= IWAE_50, each step significant
        assert torch.all(means[large] - means[small] > Z_SCORE * torch.sqrt(ses[large] ** 2 + ses[small] ** 2))


def test_vae_samples_of_vectors_are_draws_from_the_decoder():
    model = build_model("vae", ARENA, SMALL["vae"]).double()
    z = torch.zeros(20_000, 2, dtype=F64)
    with torch.no_grad():
        mean, log_scale = model.decoder_params(z[:1]).reshape(2, 2)  # (P, D): means, log-scales at z = 0
        draws = model.sample_given_z(z, generator=gen(3))  # (n, 2)
    for d in range(2):
        assert stats.kstest(draws[:, d].numpy(), "norm", args=(mean[d].item(), log_scale[d].exp().item())).pvalue > 0.01


# --- the GANs on vectors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gan", "wgan-gp"])
def test_gan_players_see_vectors_unscaled_and_the_generator_output_is_linear(name):
    torch.manual_seed(0)
    model = build_model(name, ARENA, {"hidden_dim": 16, "latent_dim": 2})
    x = 3 * torch.randn(8, 2, generator=gen(0))
    assert torch.equal(model.to_players(x), x) and torch.equal(model.from_players(x), x)
    if name == "gan":  # D(x) is logged for the very inputs it was given
        d_real = model.loss(x, phase="discriminator")["d_real"]
        torch.testing.assert_close(d_real, torch.sigmoid(model.discriminate(x)).detach())
    last = [m for m in model.generator.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.add_(5.0)
    samples = model.sample(64, generator=gen(1))
    assert samples.shape == (64, 2) and torch.all(samples > 2.0)  # a tanh would stop at 1


# --- training on eight-gaussians -----------------------------------------------------------------------------
TRAIN = {"vae": SMALL["vae"], "iwae": {**SMALL["iwae"], "k": 5}, "ae": {**SMALL["vae"], "gmm_components": 3},
         "gan": {"hidden_dim": 32, "latent_dim": 2},
         "wgan-gp": {"hidden_dim": 32, "latent_dim": 2, "mlp_hidden_layers": 2},
         "made": {"hidden_dims": (32, 32)}, "nade": {"hidden_dim": 32}}
LIKELIHOOD_MODELS = ("vae", "iwae", "made", "nade")


@pytest.fixture(scope="module")
def arena_test_points():
    info, split = load_split("eight-gaussians", "test")
    return info, split.subset(1000)


@pytest.mark.parametrize("name", list(TRAIN))
def test_trains_on_eight_gaussians(name, tmp_path, arena_test_points):
    info, test = arena_test_points
    torch.manual_seed(0)
    initial = build_model(name, info, TRAIN[name])
    trainer, summary = train(name, tmp_path / name, TRAIN[name], data="eight-gaussians", max_steps=100, log_every=50)
    assert summary["steps"] == 100
    assert all(math.isfinite(v) for v in summary["last"].values()), summary["last"]
    model = trainer.final_model.eval()
    samples = model.sample(500, generator=gen(0))
    assert samples.shape == (500, 2) and torch.all(torch.isfinite(samples))
    if name in LIKELIHOOD_MODELS:  # better than at initialisation, by a margin (~1-3 nats seen)
        before = likelihood_metrics(initial.eval(), test, info, draws=10, seed=0)["nll_nats"]
        after = likelihood_metrics(model, test, info, draws=10, seed=0)["nll_nats"]
        assert after < before - 0.5, (before, after)


@pytest.mark.parametrize("name", ["dvae", "aae", "avb"])
def test_the_other_latent_models_give_finite_losses_and_samples_on_vectors(name):
    torch.manual_seed(0)
    model = build_model(name, ARENA, SMALL[name])
    x = 2 * torch.randn(16, 2, generator=gen(0))
    for phase in model.phases():
        assert torch.all(torch.isfinite(model.loss(x, phase=phase.name)["loss"])), phase.name
    samples = model.sample(10, generator=gen(1))
    assert samples.shape == (10, 2) and torch.all(torch.isfinite(samples))
