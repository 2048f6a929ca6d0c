"""The RBM as mathematics: its gradient, its Gibbs chain and its likelihoods on RBMs small enough to enumerate."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from genzoo import checkpoint
from genzoo.data.core import DataInfo
from genzoo.models.registry import build_model, load_run
from genzoo.train import train

TINY = DataInfo("binary8", (1, 2, 4), 0, "binary", 2)  # D = 8: 256 visible states
LEVELS = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)


def every_image(info: DataInfo) -> torch.Tensor:
    """All 2^D binary images (2^D, *shape)."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=info.dim))).reshape(-1, *info.shape)


def tiny_rbm(hidden: int = 4, seed: int = 0, **options):
    torch.manual_seed(seed)
    model = build_model("rbm", TINY, {"hidden_dim": hidden, "chains": 16, **options}).double()
    with torch.no_grad():  # weights large enough that the distribution is far from uniform
        model.weight.normal_(0, 1.0)
        model.visible_bias.normal_(0, 0.5)
        model.hidden_bias.normal_(0, 0.5)
    return model


def exact_log_probs(model) -> torch.Tensor:
    """log p(v) of every image by brute force over (v, h), with autograd: (2^D,)."""
    v = every_image(TINY).reshape(-1, TINY.dim).double()
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=model.config.hidden_dim)), dtype=torch.float64)
    energy = -(v @ model.visible_bias)[:, None] - (h @ model.hidden_bias)[None] - v @ model.weight.T @ h.T  # (V, H)
    log_unnormalised = torch.logsumexp(-energy, 1)  # (V,)
    return log_unnormalised - torch.logsumexp(log_unnormalised, 0)


def test_the_free_energy_is_minus_the_log_of_the_summed_joint():
    model = tiny_rbm()
    v = every_image(TINY).double()
    by_brute_force = exact_log_probs(model)
    log_z = torch.logsumexp(-model.free_energy(v), 0)
    torch.testing.assert_close(-model.free_energy(v) - log_z, by_brute_force, rtol=1e-12, atol=1e-12)


def test_the_cd_gradient_with_exact_model_expectations_is_the_log_likelihood_gradient():
    model = tiny_rbm()
    x = every_image(TINY).double()[torch.tensor([3, 77, 200, 255])]
    params = [model.weight, model.visible_bias, model.hidden_bias]
    index = torch.tensor([3, 77, 200, 255])
    nll = -exact_log_probs(model)[index].mean()
    exact = torch.autograd.grad(nll, params)
    v = every_image(TINY).double()
    p = exact_log_probs(model).exp().detach()  # the model's expectation, exactly
    surrogate = model.free_energy(x).mean() - (p * model.free_energy(v)).sum()
    contrastive = torch.autograd.grad(surrogate, params)
    for a, b in zip(exact, contrastive):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_long_gibbs_chain_visits_images_with_their_exact_probabilities():
    model = tiny_rbm(seed=1)
    chains, steps = 4000, 60
    v = (torch.rand(chains, TINY.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64) < 0.5).double()
    counts = torch.zeros(2**TINY.dim, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    powers = 2 ** torch.arange(TINY.dim - 1, -1, -1, dtype=torch.float64)
    with torch.no_grad():
        for step in range(steps):
            v, _ = model.gibbs(v, 1, g)
            if step >= 20:  # burn-in
                counts += torch.bincount((v @ powers).long(), minlength=2**TINY.dim).double()
        empirical = counts / counts.sum()
        exact = exact_log_probs(model).exp()
    assert 0.5 * (empirical - exact).abs().sum() < 0.03  # total variation


def test_exact_and_sampled_likelihoods_agree_on_a_tiny_rbm():
    model = tiny_rbm(hidden=5, ais_runs=200, ais_temperatures=2000)
    model.fit_base_rate(every_image(TINY).double())
    x = every_image(TINY).double()[::17]
    exact = model.log_likelihood(x, estimator="exact")
    assert exact.kind == "exact" and torch.logsumexp(model.log_likelihood(every_image(TINY).double(),
                                                                        estimator="exact").value, 0).abs() < 1e-10
    ais = model.log_likelihood(x, estimator="ais", generator=torch.Generator().manual_seed(0))
    assert ais.kind == "estimate" and "optimistic" in ais.reason
    torch.testing.assert_close(ais.value, exact.value, atol=0.05, rtol=0)  # log Z is shared: one offset
    raised = model.log_likelihood(x, estimator="raise", generator=torch.Generator().manual_seed(0))
    assert raised.value.mean() < exact.value.mean() + 0.05  # conservative
    assert (raised.value - exact.value).abs().mean() < 0.3


def test_persistent_chains_move_and_contrastive_divergence_restarts_at_the_data():
    pcd, cd = tiny_rbm(training="pcd"), tiny_rbm(training="cd")
    x = every_image(TINY).double()[:16]
    before = pcd.chains.clone()
    torch.manual_seed(0)
    terms = pcd.loss(x)
    assert terms["loss"].shape == (16,) and not torch.equal(pcd.chains, before)
    before = cd.chains.clone()
    cd.loss(x)
    assert torch.equal(cd.chains, before)


def test_samples_start_from_noise_and_are_pixel_probabilities():
    model = tiny_rbm()
    g = torch.Generator().manual_seed(0)
    samples = model.generate(6, generator=g, steps=5)
    assert samples.shape == (6, *TINY.shape) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, model.generate(6, generator=torch.Generator().manual_seed(0), steps=5))
    chain = model.sampling_chain(3, 4, torch.Generator().manual_seed(0))
    (states,) = chain.values()
    assert states.shape == (3, 4, *TINY.shape)


# --- bad input ----------------------------------------------------------------------------------
def test_an_rbm_refuses_8_bit_data():
    with pytest.raises(ValueError, match=r"rbm models binary data, and digits is 17-level.*binarized_mnist"):
        build_model("rbm", LEVELS)


def test_exact_log_z_of_a_wide_rbm_says_how_wide_is_possible_and_offers_ais():
    model = build_model("rbm", DataInfo("binary64", (1, 8, 8), 0, "binary", 2), {"hidden_dim": 40})
    assert model.estimators[0] == "ais"
    with pytest.raises(ValueError, match=r"H = 40 is too wide.*at most 25.*--estimator ais"):
        model.log_likelihood(torch.zeros(2, 1, 8, 8), estimator="exact")


def test_an_unknown_estimator_lists_the_models():
    model = tiny_rbm()
    with pytest.raises(ValueError, match=r"rbm has no estimator 'bridge'; its estimators: exact, ais, raise"):
        model.log_likelihood(torch.zeros(2, *TINY.shape, dtype=torch.float64), estimator="bridge")


def test_clamped_gibbs_keeps_the_observed_pixels_and_samples_the_exact_conditional():
    model = tiny_rbm(seed=2)
    images = every_image(TINY).double()
    x = images[77:78].expand(3000, -1, -1, -1)
    observed = torch.zeros(2, 4, dtype=torch.bool)
    observed[0] = True  # the top row is kept; the bottom row's 4 pixels are filled in
    out = model.complete(x, observed, generator=torch.Generator().manual_seed(0), steps=30)
    assert torch.equal(out[:, :, 0], x[:, :, 0])
    # the mean of p(v | h) over the chains is the conditional mean of the hidden pixels, exactly computable
    log_p = exact_log_probs(model)
    agree = (images[:, 0, 0] == x[0, 0, 0]).all(-1)  # images with the same top row
    weights = torch.softmax(log_p[agree], 0)
    expected = weights @ images[agree][:, 0, 1]  # (4,)
    torch.testing.assert_close(out[:, 0, 1].mean(0), expected, atol=0.03, rtol=0)


def test_the_commands_of_an_rbm_run_on_binarized_mnist(tmp_path, cli, local_data):
    root, run = local_data("binarized_mnist").parent, tmp_path / "run"
    code, out, err = cli("train", "rbm", "--data", "binarized_mnist", "--data-root", root, "--set", "hidden_dim=8",
                         "--set", "ais_temperatures=300", "--set", "ais_runs=50", "--max-steps", "30",
                         "--eval-metrics", "nll", "--out", run)
    assert code == 0, err
    code, out, err = cli("eval", run, "--split", "test", "--data-root", root, "--metrics", "nll", "--json")
    exact = json.loads(out)
    assert code == 0 and exact["likelihood"] == "exact" and exact["estimator"] == "exact"
    code, out, err = cli("eval", run, "--split", "test", "--data-root", root, "--metrics", "nll", "--estimator", "ais",
                         "--json")
    ais = json.loads(out)
    assert ais["likelihood"] == "estimate" and abs(ais["nll_nats"] - exact["nll_nats"]) < 0.5
    # RAISE beside AIS, on a fixed 1,000 of the 10,000 test images: conservative, so no lower than the exact NLL
    # of those images (up to its noise at 300 temperatures)
    code, out, err = cli("eval", run, "--split", "test", "--data-root", root, "--metrics", "nll", "--limit", "1000",
                         "--json")
    assert ais["raise_examples"] == 1000 and "fixed random 1,000 of the 10,000 test" in ais["raise_subset"]
    assert "reverse AIS" in ais["raise_method"] and ais["nll_raise_nats"] > json.loads(out)["nll_nats"] - 0.2
    assert abs(ais["raise_paired_nll_nats"] - json.loads(out)["nll_nats"]) < 0.5  # AIS on RAISE's 1,000 images
    assert ais["nll_raise_kind"] == "estimate" and "nll_raise_nats" not in exact
    code, out, err = cli("sample", run, "--n", "16", "--sampler", "gibbs", "--steps", "20", "--out",
                         tmp_path / "samples.png")
    assert code == 0 and (tmp_path / "samples.png").exists()
    code, out, err = cli("inpaint", run, "--image-index", "0", "--mask", "bottom-half", "--n", "4", "--data-root", root,
                         "--out", tmp_path / "inpaint.png")
    assert code == 0 and (tmp_path / "inpaint.png").exists()


def test_persistent_chains_are_training_state_and_resume_bit_for_bit(tmp_path, local_data):
    root = str(local_data("binarized_mnist").parent)
    options = {"data": "binarized_mnist", "data_root": root, "batch_size": 20, "checkpoint_every": 2, "seed": 1}
    config = {"hidden_dim": 8, "training": "pcd", "chains": 10}
    whole, _ = train("rbm", tmp_path / "whole", config, max_steps=4, **options)
    train("rbm", tmp_path / "halves", config, max_steps=2, **options)
    halves, _ = train("rbm", tmp_path / "halves", resume=True, max_steps=4, **options)
    torch.testing.assert_close(halves.unwrapped.chains, whole.unwrapped.chains, rtol=0, atol=0)
    torch.testing.assert_close(halves.unwrapped.weight, whole.unwrapped.weight, rtol=0, atol=0)
    state, _ = checkpoint.read_tensors(tmp_path / "whole" / checkpoint.TRAIN_STATE_FILE)
    weights, _ = checkpoint.read_tensors(tmp_path / "whole" / checkpoint.MODEL_FILE)
    assert state["training.chains"].shape == (10, 784) and "chains" not in weights
    # a run written before the chains became training state holds them with its weights: still loads
    checkpoint.write_tensors(tmp_path / "whole" / checkpoint.MODEL_FILE, {**weights, "chains": state["training.chains"]})
    torch.testing.assert_close(load_run(tmp_path / "whole")[0].weight, whole.unwrapped.weight, rtol=0, atol=0)
    checkpoint.write_tensors(tmp_path / "whole" / checkpoint.MODEL_FILE, {**weights, "stranger": torch.zeros(1)})
    with pytest.raises(checkpoint.CheckpointError, match="unexpected: stranger"):
        load_run(tmp_path / "whole")
