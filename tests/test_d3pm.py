"""D3PM's uniform discrete diffusion as mathematics: q(x_t | x_0) and its posterior against explicit
transition matrices, the reverse step of Austin et al.'s eq. 4, the bound against the true NLL where the
optimal denoiser is known in closed form, and the sampler against the data it should reproduce."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genzoo.cli import main
from genzoo.data.core import DataInfo
from genzoo.models.diffusion.discrete import UniformDiscreteDiffusion
from genzoo.models.registry import build_model, load_run

K, T = 3, 6
TINY = {"timesteps": 20, "channels": 8, "channel_mult": (1,), "blocks": 1, "attention_resolutions": (0,), "heads": 1}


def matrices(process: UniformDiscreteDiffusion) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-step Q_t (T, K, K) = (1 - beta_t) I + beta_t / K 11^T, and Q-bar_t (T + 1, K, K), Q-bar at
    index -1 (stored first) the identity, by explicit matrix products (rows: from, columns: to)."""
    k = process.num_states
    eye, uniform = torch.eye(k, dtype=torch.float64), torch.full((k, k), 1 / k, dtype=torch.float64)
    one_step = torch.stack([(1 - b) * eye + b * uniform for b in process.betas])
    products = [eye]
    for q in one_step:
        products.append(products[-1] @ q)
    return one_step, torch.stack(products)


class Constant(torch.nn.Module):
    """A denoiser whose logits (1, K C, H, W) ignore x_t and t."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)  # a parameter: the model reads its device

    def forward(self, xt, t, y):
        return self.logits.expand(len(xt), *self.logits.shape[1:])


def index(t: int, n: int = 1) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_q_of_xt_given_x0_is_the_product_of_the_one_step_matrices(schedule):
    process = UniformDiscreteDiffusion(K, schedule, T)
    _, q_bar = matrices(process)
    for t in range(T):
        x0 = torch.arange(K)
        torch.testing.assert_close(process.q_probs(x0, index(t, K)).double(), q_bar[t + 1], atol=1e-6, rtol=0)


def test_q_sample_draws_the_closed_form_frequencies():
    process = UniformDiscreteDiffusion(K, "cosine", T)
    n, t = 200_000, 3
    x0 = torch.full((n, 1), 1, dtype=torch.long)
    xt = process.q_sample(x0, index(t, n), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(xt.flatten(), minlength=K).double() / n
    expected = process.q_probs(x0[:1], index(t)).double().flatten()
    assert torch.all((frequencies - expected).abs() < 5 * (expected * (1 - expected) / n).sqrt())


def test_the_posterior_is_bayes_rule_on_the_matrices_for_one_and_for_respaced_steps():
    process = UniformDiscreteDiffusion(K, "cosine", T)
    one_step, q_bar = matrices(process)
    point_masses = torch.log(torch.eye(K))  # row x0: log of the point mass on x0
    for t, s in [(1, 0), (4, 3), (T - 1, T - 2), (4, 1), (5, -1), (0, -1)]:
        q_ts = torch.linalg.multi_dot([torch.eye(K, dtype=torch.float64), *one_step[s + 1:t + 1]])  # Q_{t|s}
        for x0 in range(K):
            for xt in range(K):
                got = process.log_step(torch.tensor([xt]), point_masses[x0][None], index(t), index(s)).exp()
                bayes = q_ts[:, xt] * q_bar[s + 1][x0] / q_bar[t + 1][x0, xt]  # q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0)
                torch.testing.assert_close(got.double().flatten(), bayes, atol=1e-6, rtol=0)


def test_the_reverse_step_is_eq_4_sum_over_x0_of_the_joint_times_the_prediction():
    process = UniformDiscreteDiffusion(K, "linear", T)
    one_step, q_bar = matrices(process)
    prediction = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    for t, s in [(3, 2), (5, 1), (2, -1)]:
        q_ts = torch.linalg.multi_dot([torch.eye(K, dtype=torch.float64), *one_step[s + 1:t + 1]])
        for xt in range(K):
            got = process.log_step(torch.tensor([xt]), prediction.log().float()[None], index(t), index(s)).exp()
            # sum over x0 of q(x_s, x_t | x0) p~(x0)
            joint = sum(q_ts[:, xt] * q_bar[s + 1][x0] * prediction[x0] for x0 in range(K))
            torch.testing.assert_close(got.double().flatten(), joint / joint.sum(), atol=1e-6, rtol=0)


def test_a_denoiser_certain_of_x0_leaves_only_the_prior_in_the_bound():
    process = UniformDiscreteDiffusion(2, "cosine", 50)
    x0 = torch.randint(0, 2, (4, 1, 3, 3), generator=torch.Generator().manual_seed(0))

    def oracle(xt, t, y):  # logits (B, K C, H, W) of a point mass on the data
        return 30.0 * torch.nn.functional.one_hot(x0, 2).movedim(-1, 1).reshape(4, 2, 3, 3).float()

    with torch.no_grad():
        terms = process.bound_terms(oracle, x0, None, torch.Generator().manual_seed(1))
    assert terms[:-1].abs().max() < 1e-6  # every L_t, the decoder's included
    assert 0 <= terms[-1].max() < 1e-6  # the prior: q(x_T | x_0) is uniform to within alpha_bar_T


@pytest.mark.parametrize("timesteps", [1, 12])
def test_the_bound_with_the_optimal_denoiser_is_the_true_nll_of_a_product_distribution(timesteps):
    """Data with independent pixels, p(x) = prod_d pi(x_d). The denoiser p~(x_0 | x_t) = pi, whatever x_t,
    makes eq. 4 the true reverse q(x_{t-1} | x_t), so the bound is -log p(x) up to KL(q(x_T) || uniform)."""
    pi = torch.tensor([0.6, 0.1, 0.3])
    process = UniformDiscreteDiffusion(K, "cosine", timesteps)
    x0 = torch.tensor([[[[0, 1], [2, 0]]], [[[1, 1], [2, 2]]]])  # (2, 1, 2, 2)

    optimal = Constant(pi.log().reshape(1, K, 1, 1, 1).expand(1, K, 1, 2, 2).reshape(1, K, 2, 2))

    copies = 20_000  # independent two-draw estimates of each image's bound, in one batch
    with torch.no_grad():
        bound, _ = process.nll_bound(optimal, x0.repeat(copies, 1, 1, 1), None, draws=2,
                                     generator=torch.Generator().manual_seed(0))
    bound = bound.reshape(copies, 2)
    std_err = bound.std(0) / math.sqrt(copies)
    true_nll = -pi.log()[x0].flatten(1).sum(1)
    assert torch.all((bound.mean(0) - true_nll).abs() < 4 * std_err + 1e-4)
    assert torch.all(std_err < 0.05)  # sharp enough to mean something: the NLLs are 4.4 and 8.1 nats


@pytest.mark.parametrize("steps", [20, 5, 1])
def test_ancestral_samples_of_the_optimal_denoiser_follow_the_data_for_any_respacing(steps):
    """With p~ = pi, the respaced step p(x_s | x_t) ∝ q(x_t | x_s) q(x_s) is the exact reverse: the samples'
    state frequencies are pi's."""
    pi = torch.tensor([0.6, 0.1, 0.3])
    info = DataInfo("toy", (1, 4, 4), 0, "discrete", K)
    model = build_model("d3pm", info, TINY).eval()
    model.net = Constant(pi.log().reshape(1, K, 1, 1, 1).expand(1, K, 1, 4, 4).reshape(1, K, 4, 4))
    n = 4000
    states = (model.sample(n, generator=torch.Generator().manual_seed(0), steps=steps) * (K - 1)).round().long()
    frequencies = torch.bincount(states.flatten(), minlength=K).float() / states.numel()
    assert torch.all((frequencies - pi).abs() < 5 * (pi * (1 - pi) / states.numel()).sqrt())


def test_the_prior_kl_is_the_closed_form():
    process = UniformDiscreteDiffusion(2, "linear", 3)  # a short linear schedule: far from uniform at T
    a = process.alpha_bar[-1].item()
    stay, move = (1 + a) / 2, (1 - a) / 2
    expected = 5 * (stay * math.log(2 * stay) + move * math.log(2 * move))
    torch.testing.assert_close(process.prior_kl(torch.zeros(1, 5, dtype=torch.long)),
                               torch.tensor([expected]), atol=1e-6, rtol=1e-6)


def test_the_hybrid_loss_is_the_scaled_bound_term_plus_the_weighted_cross_entropy():
    process = UniformDiscreteDiffusion(2, "cosine", 10)
    x0 = torch.randint(0, 2, (6, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(6, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.arange(6) + 2
    terms = process.training_losses(lambda *_: logits, x0, t, None, 0.5, torch.Generator().manual_seed(2))
    again = process.bound_term(lambda *_: logits, x0, t, None, torch.Generator().manual_seed(2))
    torch.testing.assert_close(terms["vb"], 10 * again)  # the same x_t from the same generator
    log_p0 = torch.log_softmax(logits.reshape(6, 2, 1, 2, 2).movedim(1, -1), -1)
    torch.testing.assert_close(terms["ce"], -log_p0.gather(-1, x0.unsqueeze(-1)).flatten(1).sum(1))
    torch.testing.assert_close(terms["loss"], (terms["vb"] + 0.5 * terms["ce"]) / 4)


def test_completion_keeps_the_observed_pixels_exactly():
    info = DataInfo("toy", (1, 4, 4), 0, "binary", 2)
    model = build_model("d3pm", info, TINY).eval()
    x = torch.randint(0, 2, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float()
    observed = torch.zeros(4, 4, dtype=torch.bool)
    observed[:2] = True
    completed = model.complete(x, observed, generator=torch.Generator().manual_seed(1))
    assert torch.equal(completed[:, :, :2], x[:, :, :2])
    assert set(completed.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="by replacement, not 'repaint'"):
        model.complete(x, observed, sampler="repaint")


def test_bad_options_are_one_clear_line():
    info = DataInfo("toy", (1, 4, 4), 0, "binary", 2)
    with pytest.raises(ValueError, match="schedule='square' is not one of linear, cosine"):
        build_model("d3pm", info, {**TINY, "schedule": "square"})
    with pytest.raises(ValueError, match="d3pm models images"):
        build_model("d3pm", DataInfo("pairs", (2,), 0, "discrete", 3), {})
    with pytest.raises(ValueError, match="d3pm models binary or discrete data"):
        build_model("d3pm", DataInfo("toy", (1, 4, 4), 0, "continuous", None), {})
    model = build_model("d3pm", info, TINY)
    for steps in (21, 0):
        with pytest.raises(ValueError, match=f"--steps {steps} must lie in 1..20"):
            model.sample(2, steps=steps)


def test_train_sample_and_eval_on_binarized_mnist_through_the_cli(tmp_path, local_data, capsys):
    out = tmp_path / "run"
    options = ["--max-steps", "3", "--batch-size", "16", "--set", "timesteps=20", "--set", "channels=8",
               "--set", "channel_mult=1", "--blocks", "1", "--set", "attention_resolutions=0", "--heads", "1"]
    root = str(local_data("binarized_mnist"))
    assert main(["train", "d3pm", "--data", "binarized_mnist", "--data-root", root, "--out", str(out), *options,
                 "--eval-metrics", ""]) == 0
    model, _ = load_run(out)
    assert model.name == "d3pm" and model.process.num_states == 2
    assert main(["sample", str(out), "--n", "4", "--steps", "5", "--out", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "test", "--data-root", root, "--metrics", "nll", "--limit", "8",
                 "--draws", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # a bound in nats on 784 binary pixels: above the best models' ~78, and near the uniform model's 784 log 2
    # after 3 steps from a network that starts at uniform logits
    assert result["likelihood"] == "lower_bound" and 78 < result["nll_nats"] < 1.2 * 784 * math.log(2)
