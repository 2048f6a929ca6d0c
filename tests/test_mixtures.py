"""The mixtures family as mathematics: EM against scikit-learn and closed forms, and the closed-form training mode."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from genzoo import checkpoint
from genzoo.data.core import DataInfo
from genzoo.data.registry import load_split
from genzoo.distributions.mixture import (
    COVARIANCE_TYPES,
    SingularCovariance,
    covariance_scales,
    gaussian_log_densities,
    gaussian_mixture_parameters,
    gaussian_mixture_statistics,
    mixture_posterior,
)
from genzoo.models.registry import build_model, load_run
from genzoo.train.loop import train

VECTORS = DataInfo("eight-gaussians", (3,), 0, "continuous", None)
BINARY = DataInfo("binarized_mnist", (1, 2, 2), 10, "binary", 2)
LEVELS = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)


def three_clusters(n: int = 600, seed: int = 0) -> torch.Tensor:
    """(n, 3) float64 points from three well-separated anisotropic Gaussians."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 3.0, 1.0]], dtype=torch.float64)
    mixing = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.5, 0.2], [0.1, 0.0, 0.8]], dtype=torch.float64)
    k = torch.randint(3, (n,), generator=g)
    return centres[k] + torch.randn(n, 3, generator=g, dtype=torch.float64) @ mixing


def em(model, x: torch.Tensor, iterations: int) -> list[float]:
    """``iterations`` EM steps of a closed-form model on x; the objective before each update."""
    objectives = []
    for _ in range(iterations):
        totals = model.statistics(x)
        objectives.append(model.objective(totals, len(x)))
        model.update(totals)
    return objectives


def sklearn_precision_cholesky(precisions, covariance):
    """scikit-learn's Cholesky factors of given precisions (its ``precisions_init`` path)."""
    if covariance in ("full", "tied"):
        return torch.linalg.cholesky(precisions)
    return precisions.sqrt()


# --- the Gaussian mixture against scikit-learn and closed forms ------------------------------------
@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_gmm_em_from_a_shared_start_equals_scikit_learn(covariance):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    x = three_clusters()
    g = torch.Generator().manual_seed(1)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    means = x[torch.randperm(len(x), generator=g)[:3]]
    precisions = {"full": torch.eye(3, dtype=torch.float64).repeat(3, 1, 1) * torch.tensor([1.0, 2.0, 0.5])[:, None, None],
                  "tied": torch.eye(3, dtype=torch.float64) * 0.7,
                  "diag": torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 1.0], [2.0, 1.0, 1.0]], dtype=torch.float64),
                  "spherical": torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)}[covariance]
    iterations = 7
    ours = build_model("gmm", VECTORS, {"components": 3, "covariance": covariance, "reg_covar": 1e-6})
    ours.set_parameters(weights, means, sklearn_precision_cholesky(precisions, covariance))
    objectives = em(ours, x, iterations)
    theirs = GaussianMixture(3, covariance_type=covariance, reg_covar=1e-6, tol=0, max_iter=iterations,
                             weights_init=weights.numpy(), means_init=means.numpy(), precisions_init=precisions.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(x.numpy())
    for name, value in [("weights", theirs.weights_), ("means", theirs.means_),
                        ("precision_cholesky", theirs.precisions_cholesky_)]:
        torch.testing.assert_close(getattr(ours, name), torch.from_numpy(value), rtol=1e-5, atol=1e-8, msg=name)
    assert objectives[-1] == pytest.approx(theirs.lower_bound_, rel=1e-8)
    assert ours.log_likelihood(x.float()).value.double().mean().item() == pytest.approx(
        theirs.score(x.numpy()), rel=1e-5)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_gmm_em_never_decreases_the_log_likelihood(covariance):
    x = three_clusters(seed=3)
    model = build_model("gmm", VECTORS, {"components": 4, "covariance": covariance})
    model.initialize_fit(x, torch.Generator().manual_seed(0))
    objectives = em(model, x, 25)
    steps = torch.tensor(objectives).diff()
    assert (steps >= -1e-12 * abs(objectives[-1])).all(), steps
    assert objectives[-1] > objectives[0] + 1e-3  # and it did climb


def test_one_component_is_the_maximum_likelihood_gaussian():
    x = three_clusters(n=300, seed=4)
    model = build_model("gmm", VECTORS, {"components": 1, "reg_covar": 0.0})
    model.initialize_fit(x, torch.Generator().manual_seed(0))
    mean, cov = x.mean(0), torch.cov(x.T, correction=0)  # the biased (maximum-likelihood) covariance
    torch.testing.assert_close(model.means[0], mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.linalg.inv(model.precision_cholesky[0] @ model.precision_cholesky[0].T), cov,
                               rtol=1e-10, atol=1e-12)
    exact = torch.distributions.MultivariateNormal(mean, cov).log_prob(x)
    torch.testing.assert_close(model.log_likelihood(x).value, exact, rtol=1e-10, atol=1e-10)
    assert em(model, x, 2)[1] == pytest.approx(exact.mean().item(), rel=1e-12)  # a fixed point of EM


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_gmm_samples_have_the_model_moments(covariance):
    model = build_model("gmm", VECTORS, {"components": 3, "covariance": covariance})
    model.initialize_fit(three_clusters(seed=5), torch.Generator().manual_seed(0))
    n = 200_000
    z = model.sample(n, generator=torch.Generator().manual_seed(6)).double()
    # each component's covariance from its precision (Sigma^-1 = P P^T), not from the sampler's own factors
    precision = model.precision_cholesky.expand(3, 3, 3) if covariance == "tied" else model.precision_cholesky
    if covariance in ("full", "tied"):
        sigmas = torch.linalg.inv(precision @ precision.mT)
    else:
        sigmas = torch.diag_embed(precision.reshape(3, -1).expand(3, 3) ** -2)
    scales = covariance_scales(model.precision_cholesky, covariance, 3)
    if covariance in ("full", "tied"):  # the sampler's factors S with S S^T = Sigma
        torch.testing.assert_close(scales @ scales.mT, sigmas)
    w, mu = model.weights, model.means
    mean = w @ mu
    cov = (w[:, None, None] * (sigmas + mu.unsqueeze(-1) * mu.unsqueeze(-2))).sum(0) - torch.outer(mean, mean)
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(z.T), cov, rtol=0.02, atol=0.02)


def test_the_log_sum_exp_keeps_far_points_finite():
    model = build_model("gmm", VECTORS, {"components": 2, "covariance": "diag"})
    model.set_parameters(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64),
                         torch.full((2, 3), 100.0, dtype=torch.float64))  # sigma = 0.01
    far = torch.full((1, 3), 50.0)  # 5,000 sigma away: each density is exp(-3.75e7)
    value = model.log_likelihood(far).value
    expected = -0.5 * 3 * (5000.0**2) + 3 * math.log(100.0) - 1.5 * math.log(2 * math.pi)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_the_e_step_and_the_statistics_add_over_shares():
    x = three_clusters(seed=7)
    model = build_model("gmm", VECTORS, {"components": 3})
    model.initialize_fit(x, torch.Generator().manual_seed(0))
    whole = model.statistics(x)
    halves = [model.statistics(x[:250]), model.statistics(x[250:])]
    for name, value in whole.items():
        torch.testing.assert_close(halves[0][name] + halves[1][name], value, rtol=1e-12, atol=1e-10)
    log_p, r = mixture_posterior(model.component_log_densities(x), model.weights.log())
    torch.testing.assert_close(r.sum(-1), torch.ones(len(x), dtype=torch.float64))
    dense = torch.stack([torch.distributions.MultivariateNormal(
        mu, precision_matrix=chol @ chol.T).log_prob(x) for mu, chol in zip(model.means, model.precision_cholesky)], -1)
    torch.testing.assert_close(log_p, torch.logsumexp(dense + model.weights.log(), -1))


def test_a_singular_covariance_names_its_component_and_reg_covar():
    x = torch.zeros(10, 3, dtype=torch.float64)
    x[5:] = 1.0  # two points repeated: zero variance in each cluster
    stats = gaussian_mixture_statistics(x, torch.nn.functional.one_hot((x[:, 0] > 0).long(), 2).double(), "full")
    with pytest.raises(SingularCovariance, match=r"component 0 is singular \(it holds 5.0 examples\).*reg_covar"):
        gaussian_mixture_parameters(stats, "full", 0.0)
    assert gaussian_mixture_parameters(stats, "full", 1e-6)[2].isfinite().all()
    assert gaussian_log_densities(x, *gaussian_mixture_parameters(stats, "full", 1e-6)[1:], "full").isfinite().all()


# --- the mixture of Bernoullis ----------------------------------------------------------------------
def test_mob_sums_to_one_over_every_binary_image_and_equals_its_formula():
    model = build_model("mob", BINARY, {"components": 3})
    g = torch.Generator().manual_seed(0)
    model.weights.copy_(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    model.probs.copy_(torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.98 + 0.01)
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 1, 2, 2)
    log_p = model.log_likelihood(every).value
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-12)
    flat = every.reshape(16, 4).double()
    by_hand = (model.weights * (model.probs**flat.unsqueeze(1) * (1 - model.probs) ** (1 - flat.unsqueeze(1))).prod(-1)).sum(-1)
    torch.testing.assert_close(log_p.exp(), by_hand, rtol=1e-12, atol=0)


def test_mob_em_never_decreases_its_log_posterior_and_samples_match_its_marginals():
    g = torch.Generator().manual_seed(1)
    truth = torch.tensor([[0.9, 0.9, 0.1, 0.1], [0.1, 0.2, 0.8, 0.9]], dtype=torch.float64)
    x = torch.bernoulli(truth[torch.randint(2, (2000,), generator=g)], generator=g).reshape(-1, 1, 2, 2)
    model = build_model("mob", BINARY, {"components": 2, "pseudo_count": 1.0})
    model.initialize_fit(x, torch.Generator().manual_seed(0))
    objectives = em(model, x, 30)
    assert (torch.tensor(objectives).diff() >= -1e-12).all()
    z = model.sample(100_000, generator=torch.Generator().manual_seed(2)).reshape(-1, 4).double()
    torch.testing.assert_close(z.mean(0), model.weights @ model.probs, atol=0.006, rtol=0)


def test_the_pseudo_count_keeps_an_unseen_pixel_from_an_infinite_nll():
    x = torch.zeros(20, 1, 2, 2)
    x[:10, 0, 0, 0] = 1.0  # the last pixel is never on in training
    unseen = torch.ones(1, 1, 2, 2)
    for c, finite in [(1.0, True), (0.0, False)]:
        model = build_model("mob", BINARY, {"components": 2, "pseudo_count": c})
        model.initialize_fit(x, torch.Generator().manual_seed(0))
        em(model, x, 5)
        assert model.log_likelihood(unseen).value.isfinite().item() is finite


# --- the closed-form training mode ------------------------------------------------------------------
def test_a_fit_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path):
    options = {"components": 8, "covariance": "diag", "tol": 0.0, "max_iter": 6, "restarts": 2}
    _, whole = train("gmm", tmp_path / "whole", options, data="eight-gaussians")
    _, first = train("gmm", tmp_path / "parts", options, data="eight-gaussians", max_steps=4)
    assert first["steps"] == 4 and first["fit"]["starts_finished"] == 0
    _, rest = train("gmm", tmp_path / "parts", None, resume=True, data="eight-gaussians", max_steps=12)
    assert rest["steps"] == whole["steps"] == 12
    assert rest["fit"] == whole["fit"] and whole["fit"]["starts_finished"] == 2
    a, _ = checkpoint.read_tensors(tmp_path / "whole" / checkpoint.MODEL_FILE)
    b, _ = checkpoint.read_tensors(tmp_path / "parts" / checkpoint.MODEL_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "parts" / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 and rows[0].startswith("step,epoch,objective,log_likelihood,change")


def test_restarts_keep_the_best_start(tmp_path):
    _, summary = train("gmm", tmp_path / "run", {"components": 8, "restarts": 3, "max_iter": 50},
                       data="eight-gaussians")
    fit = summary["fit"]
    rows = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    finals = {}
    for row in rows:  # step, epoch (the start), objective, ...
        finals[int(row[1])] = float(row[2])
    assert fit["starts_finished"] == 3 and fit["objective"] == max(finals.values())
    assert fit["best_restart"] == max(finals, key=finals.get)
    model, _ = load_run(tmp_path / "run")  # the saved model is the best start's, one update past its objective
    x = load_split("eight-gaussians", "train")[1].images.double()
    assert fit["objective"] <= model.objective(model.statistics(x), len(x)) <= fit["objective"] + 1e-3


def test_two_processes_fit_what_one_process_fits(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["-m", "genzoo", "train", "gmm", "--data", "eight-gaussians", "--set", "components=4",
               "--set", "covariance=full", "--set", "tol=0", "--set", "max_iter=5", "--eval-metrics", "nll"]
    one = subprocess.run([sys.executable, *command, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", *command, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    a, _ = checkpoint.read_tensors(tmp_path / "one" / checkpoint.MODEL_FILE)
    b, meta = checkpoint.read_tensors(tmp_path / "two" / checkpoint.TRAIN_STATE_FILE)
    assert meta["world_size"] == 2
    for name, value in a.items():  # the same sums, added in another order
        torch.testing.assert_close(b[f"model.{name}"], value, rtol=1e-10, atol=1e-12)


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("model, options, info, message", [
    ("gmm", {"components": 0}, VECTORS, r"components=0 must be > 0"),
    ("gmm", {"covariance": "banded"}, VECTORS, r"covariance='banded' is not one of full, diag, tied, spherical"),
    ("gmm", {"reg_covar": -1.0}, VECTORS, r"reg_covar=-1.0 must be >= 0"),
    ("gmm", {"max_iter": 0}, VECTORS, r"max_iter=0 must be > 0"),
    ("mob", {}, LEVELS, r"mob models binary data, and mnist is 256-level: choose such a dataset \(genzoo list\), e.g. binarized_mnist"),
    ("mob", {"pseudo_count": -1.0}, BINARY, r"pseudo_count=-1.0 must be >= 0"),
])
def test_bad_configs_are_refused_in_one_line(model, options, info, message):
    with pytest.raises(ValueError, match=message):
        build_model(model, info, options)


def test_more_components_than_examples_is_refused():
    with pytest.raises(ValueError, match=r"components=20 exceeds the 10 training examples; use at most 10"):
        build_model("gmm", VECTORS, {"components": 20}).initialize_fit(three_clusters(10), torch.Generator())


@pytest.mark.parametrize("option, message", [
    ({"epochs": 3}, r"fitted by EM, which runs to its own convergence: set --set max_iter=N"),
    ({"holdout": 100}, r"--holdout selects among gradient checkpoints and does not apply"),
])
def test_gradient_options_are_refused_for_a_closed_form_fit(tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        train("gmm", tmp_path / "run", None, data="eight-gaussians", **option)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["gmm", "mfa"])
def test_a_fit_on_dequantised_digits_climbs_and_bounds_the_discrete_likelihood(tmp_path, name):
    options = {"components": 4, "max_iter": 15, "tol": 0.0, **({"rank": 3} if name == "mfa" else {"covariance": "diag"})}
    _, summary = train(name, tmp_path / "run", options, data="digits")
    objectives = [float(line.split(",")[2]) for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert len(objectives) == 15 and all(b >= a - 1e-9 * abs(a) for a, b in zip(objectives, objectives[1:]))
    model, _ = load_run(tmp_path / "run")
    info, test = load_split("digits", "test")
    x = torch.rand(4, 1, 8, 8)
    result = model.log_likelihood(x)
    assert result.kind == "lower_bound" and "dequantised" in result.reason
    assert result.value.dtype == torch.float64  # EM and its densities run in float64
    torch.testing.assert_close(model.loss(x)["loss"], -result.value)  # the NLL EM decreases
    samples = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.float32 and samples.shape == (16, 1, 8, 8)
    assert samples.min() >= 0 and samples.max() <= 1  # clamped into the pixels' range


def test_the_commands_of_a_mixture_run_on_binarized_mnist(tmp_path, cli, local_data):
    root, run = local_data("binarized_mnist").parent, tmp_path / "run"
    code, out, err = cli("train", "mob", "--data", "binarized_mnist", "--data-root", str(root), "--set", "components=3",
                         "--set", "max_iter=3", "--eval-metrics", "nll", "--out", str(run))
    assert code == 0, err
    assert "trained mob on binarized_mnist by EM: 3 iterations, not converged (tol 0.001)" in out
    code, out, err = cli("eval", str(run), "--split", "test", "--data-root", str(root), "--metrics", "nll", "--json")
    metrics = json.loads(out)
    assert code == 0 and metrics["likelihood"] == "exact" and metrics["num_examples"] == 10_000
    assert 150 < metrics["nll_nats"] < 300  # three components: far from the data, far from uniform's 543
    code, out, err = cli("sample", str(run), "--n", "64", "--out", str(tmp_path / "samples.png"))
    assert code == 0 and (tmp_path / "samples.png").exists()
