"""The RBM's partition function and its estimators, checked against enumeration on tiny RBMs.

- F(v) is -log sum_h exp(-E(v, h)) over the enumerated hidden states; exact log Z is the log-sum-exp over every
  (v, h) pair, from either side and in any chunking, and p(v) sums to 1; the too-wide case names its way out;
- the Gibbs sweep at inverse temperature beta is the kernel sum_h p(h | v) p(v' | h) of the tempered joint, which
  leaves f_beta invariant (the exact kernel is built here independently, by enumeration);
- AIS: within 3 standard errors of exact log Z on a long schedule; on a short one Z-hat / Z averages 1 (unbiased)
  while log Z-hat averages below log Z (Jensen), exactly as the docstrings say;
- RAISE: unbiased for the annealing model's p_ann(v), computed exactly by chaining the kernels; on examples drawn
  from p its mean lies below the exact log p(v) (conservative), close to it on a long schedule, and AIS's NLL and
  RAISE's bracket the exact NLL;
- determinism given a generator, the global RNG untouched, and Salakhutdinov & Murray's 14,500 temperatures.

Monte Carlo checks compare within a few standard errors under fixed seeds (so they are deterministic); exact
identities are checked in float64 to ~1e-10.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from torch import Tensor

from genzoo.models.energy.partition import (
    ais_log_partition,
    base_rate_bias,
    default_betas,
    exact_log_partition,
    free_energy,
    gibbs_step,
    raise_log_likelihood,
)

F64 = torch.float64


def random_rbm(d: int, h: int, seed: int, scale: float = 1.5) -> tuple[Tensor, Tensor, Tensor]:
    """W (H, D) ~ N(0, scale^2), biases ~ N(0, 0.25): a few modes, far from the base-rate model."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(h, d, generator=g, dtype=F64) * scale, torch.randn(d, generator=g, dtype=F64) * 0.5,
            torch.randn(h, generator=g, dtype=F64) * 0.5)


def all_states(n: int) -> Tensor:
    """Every binary vector of length n: (2^n, n), the first coordinate most significant."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=F64)


def state_index(x: Tensor) -> Tensor:
    """Row index of each binary row of x (N, n) in all_states(n)."""
    return (x @ 2.0 ** torch.arange(x.shape[1] - 1, -1, -1, dtype=F64)).long()


def energies(v: Tensor, h: Tensor, W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """E(v, h) = -b.v - c.h - h.W v for every pair: (V, H_states)."""
    return -(v @ b)[:, None] - (h @ c)[None, :] - v @ W.T @ h.T


def exact_log_p(v: Tensor, W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """log p(v) by brute force: -log sum_h exp(-E) minus log Z over all (v, h) pairs."""
    d, h = W.shape[1], W.shape[0]
    hs = all_states(h)
    log_z = torch.logsumexp(-energies(all_states(d), hs, W, b, c).flatten(), 0)
    return torch.logsumexp(-energies(v, hs, W, b, c), 1) - log_z


def model_and_base(d: int, h: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, float]:
    """An RBM, its exact p over all 2^D visible states, its base-rate biases and exact log Z."""
    W, b, c = random_rbm(d, h, seed)
    vs = all_states(d)
    log_p = exact_log_p(vs, W, b, c)
    log_z = torch.logsumexp(-energies(vs, all_states(h), W, b, c).flatten(), 0).item()
    return W, b, c, log_p.exp(), base_rate_bias(log_p.exp() @ vs), log_z


def bernoulli_probs(states: Tensor, probs: Tensor) -> Tensor:
    """prod_i p_i^x_i (1 - p_i)^(1 - x_i) of every state (S, n) under every row of probs (N, n): (N, S)."""
    return torch.exp(probs.log() @ states.T + torch.log1p(-probs) @ (1 - states).T)


def tempered_kernel(W: Tensor, b: Tensor, c: Tensor, base: Tensor, beta: float) -> Tensor:
    """T_beta(v' | v) = sum_h p_beta(h | v) p_beta(v' | h) of the joint exp((1 - beta) b_A.v + beta (-E)): (V, V)."""
    vs, hs = all_states(W.shape[1]), all_states(W.shape[0])
    h_given_v = bernoulli_probs(hs, torch.sigmoid(beta * (vs @ W.T + c)))  # (V, H_states)
    v_given_h = bernoulli_probs(vs, torch.sigmoid((1 - beta) * base + beta * (hs @ W + b)))  # (H_states, V)
    return h_given_v @ v_given_h


def annealing_model(W: Tensor, b: Tensor, c: Tensor, base: Tensor, betas: Tensor) -> Tensor:
    """p_ann = p_0 T_1 ... T_K over all 2^D visible states: (V,), the model RAISE's weights are unbiased for."""
    p = bernoulli_probs(all_states(W.shape[1]), torch.sigmoid(base)[None])  # (1, V)
    for beta in betas[1:].tolist():
        p = p @ tempered_kernel(W, b, c, base, beta)
    return p[0]


def draw_examples(p: Tensor, n: int, seed: int) -> Tensor:
    """n exact draws from p over all_states: (n, D)."""
    d = int(math.log2(len(p)))
    return all_states(d)[torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(seed))]


def mean_and_se(x: Tensor) -> tuple[float, float]:
    return x.mean().item(), (x.std() / math.sqrt(len(x))).item()


# --- the exact quantities ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, h", [(8, 4), (10, 6)])
def test_free_energy_is_minus_log_sum_over_hidden_states(d, h):
    W, b, c = random_rbm(d, h, seed=0)
    vs = all_states(d)
    brute = -torch.logsumexp(-energies(vs, all_states(h), W, b, c), 1)  # (V,)
    torch.testing.assert_close(free_energy(vs, W, b, c), brute, rtol=0, atol=1e-10)


@pytest.mark.parametrize("d, h", [(8, 4), (10, 6), (5, 9)])
def test_exact_log_partition_equals_the_sum_over_all_pairs(d, h):
    W, b, c = random_rbm(d, h, seed=1)
    brute = torch.logsumexp(-energies(all_states(d), all_states(h), W, b, c).flatten(), 0).item()
    assert exact_log_partition(W, b, c) == pytest.approx(brute, abs=1e-10)
    # the same RBM with the layers' roles swapped (E is symmetric in them): the other side is enumerated
    assert exact_log_partition(W.T, c, b) == pytest.approx(brute, abs=1e-10)
    # chunks of 7 states: many chunks and a partial last one
    assert exact_log_partition(W, b, c, chunk_states=7) == pytest.approx(brute, abs=1e-10)
    # float32 inputs are computed in float64
    assert exact_log_partition(W.float(), b.float(), c.float()) == pytest.approx(brute, abs=1e-5)


@pytest.mark.parametrize("d, h", [(8, 4), (4, 8)])
def test_model_probabilities_sum_to_one(d, h):
    W, b, c = random_rbm(d, h, seed=2)
    log_p = -free_energy(all_states(d), W, b, c) - exact_log_partition(W, b, c)  # (2^D,)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-10)
    assert log_p.exp().max() < 0.5  # not a trivial, single-state distribution


def test_too_wide_for_enumeration_names_the_way_out():
    message = ("exact log Z enumerates 2^H hidden states: H = 500 is too wide (at most 25 here, about 2^25 = 34M "
               "states); use --estimator ais (or raise)")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        exact_log_partition(torch.zeros(500, 784), torch.zeros(784), torch.zeros(500))
    # the narrower side is the one enumerated, and the caller's limit is the one quoted
    with pytest.raises(ValueError, match=re.escape("2^D visible states: D = 30 is too wide (at most 25 here")):
        exact_log_partition(torch.zeros(40, 30), torch.zeros(30), torch.zeros(40))
    with pytest.raises(ValueError, match=re.escape("H = 4 is too wide (at most 3 here, about 2^3 = 8 states)")):
        exact_log_partition(*random_rbm(8, 4, seed=0), max_hidden=3)
    assert exact_log_partition(*random_rbm(8, 4, seed=0), max_hidden=4) > 0  # at the limit it enumerates


# --- the shared transition --------------------------------------------------------------------------------------
def test_gibbs_step_is_the_tempered_kernel_and_leaves_f_beta_invariant():
    d, h, beta = 6, 3, 0.6
    W, b, c = random_rbm(d, h, seed=3)
    base = torch.linspace(-1, 1, d, dtype=F64)
    kernel = tempered_kernel(W, b, c, base, beta)  # (64, 64)
    # f_beta(v) by enumerating h in the tempered joint, independently of the module's closed form
    vs, hs = all_states(d), all_states(h)
    log_f = torch.logsumexp((1 - beta) * (vs @ base)[:, None] - beta * energies(vs, hs, W, b, c), 1)
    p_beta = torch.softmax(log_f, 0)
    torch.testing.assert_close(p_beta @ kernel, p_beta, rtol=0, atol=1e-12)  # invariant
    flow = p_beta[:, None] * kernel
    torch.testing.assert_close(flow, flow.T, rtol=0, atol=1e-12)  # reversible: RAISE's reverse kernel is T itself
    # 40,000 sweeps from one state: the empirical law of v' is row v of the kernel
    start, n = 37, 40_000
    v = vs[start].expand(n, d)
    after = gibbs_step(v, beta, W, b, c, base, torch.Generator().manual_seed(0))
    counts = torch.bincount(state_index(after), minlength=2**d).to(F64) / n
    row = kernel[start]
    assert (counts - row).abs().max() < 5 * (row * (1 - row) / n).sqrt().max()


# --- AIS --------------------------------------------------------------------------------------------------------
def test_ais_is_exact_when_the_model_is_the_base_plus_free_hidden_units():
    # W = 0 and b = b_A: every weight is prod_k exp(sum_j softplus(beta_k c_j) - softplus(beta_{k-1} c_j)), the same
    # for every run, so log Z-hat is exact and its standard error zero, on any schedule
    d, h = 8, 4
    _, base, c = random_rbm(d, h, seed=4)
    W = torch.zeros(h, d, dtype=F64)
    result = ais_log_partition(W, base, c, base, torch.linspace(0, 1, 7, dtype=F64), 50, torch.Generator())
    assert result.log_z == pytest.approx(exact_log_partition(W, base, c), abs=1e-10)
    assert result.log_z_std_err < 1e-6
    assert result.log_z_base == pytest.approx(exact_log_partition(W, base, torch.zeros(h, dtype=F64)), abs=1e-10)


@pytest.mark.parametrize("d, h", [(8, 4), (10, 6)])
def test_ais_long_schedule_is_within_three_standard_errors(d, h):
    W, b, c, _, base, log_z = model_and_base(d, h, seed=5)
    betas = torch.linspace(0, 1, 1000, dtype=F64)
    result = ais_log_partition(W, b, c, base, betas, 500, torch.Generator().manual_seed(0))
    assert result.log_weights.shape == (500,)
    assert abs(result.log_z - log_z) < 3 * result.log_z_std_err
    assert result.log_z_std_err < 0.01  # and the error is small: not a pass by a wide interval
    assert result.log_z == pytest.approx(result.log_z_base + torch.logsumexp(result.log_weights, 0).item()
                                         - math.log(500), abs=1e-12)


def test_ais_short_schedule_is_unbiased_in_z_and_low_in_log_z():
    # 400 independent estimates, each from 5 runs through 10 temperatures, from the base-rate model and from the
    # uniform one (b_A = 0, a poorer start: the same unbiasedness, a wider Jensen gap)
    W, b, c, _, rate, log_z = model_and_base(10, 6, seed=5)
    betas = torch.linspace(0, 1, 10, dtype=F64)
    for base, ratio_tolerance in [(rate, 0.01), (torch.zeros_like(rate), 0.05)]:
        estimates = torch.tensor([ais_log_partition(W, b, c, base, betas, 5, torch.Generator().manual_seed(s)).log_z
                                  for s in range(400)], dtype=F64)
        ratio_mean, ratio_se = mean_and_se(torch.exp(estimates - log_z))  # Z-hat / Z
        assert abs(ratio_mean - 1) < 3 * ratio_se and ratio_se < ratio_tolerance  # E[Z-hat] = Z
        log_mean, log_se = mean_and_se(estimates)
        assert log_mean - log_z < 3 * log_se  # E[log Z-hat] <= log Z
    assert log_mean + 3 * log_se < log_z  # from the uniform base clearly below: AIS underestimates log Z


# --- RAISE ------------------------------------------------------------------------------------------------------
def test_raise_is_unbiased_for_the_annealing_model():
    # p_ann = p_0 T_1 ... T_K exactly; over 400 chains per state, mean exp(RAISE) is p_ann(v), not p(v)
    d, h, chains = 8, 4, 400
    W, b, c, p, base, _ = model_and_base(d, h, seed=6)
    betas = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=F64)
    p_ann = annealing_model(W, b, c, base, betas)
    assert p_ann.sum().item() == pytest.approx(1.0, abs=1e-12)
    v = all_states(d).repeat(chains, 1)  # chain r of state i at row r * 256 + i
    weights = raise_log_likelihood(v, W, b, c, base, betas, torch.Generator().manual_seed(0)).exp().view(chains, -1)
    mean, se = weights.mean(0), weights.std(0) / math.sqrt(chains)  # (256,)
    z_ann, z_p = (mean - p_ann) / se, (mean - p) / se
    chi2_bound = 256 + 5 * math.sqrt(2 * 256)  # chi^2 with 256 degrees of freedom, 5 standard deviations up
    assert z_ann.abs().max() < 5 and (z_ann**2).sum() < chi2_bound
    assert (z_p**2).sum() > 4 * chi2_bound  # p_ann differs from p detectably: the check above tells them apart
    assert mean.sum().item() == pytest.approx(1.0, abs=0.02)  # a normalised model


@pytest.mark.parametrize("temperatures, base_kind", [(10, "uniform"), (1000, "base rate")])
def test_raise_is_conservative_and_brackets_the_exact_nll_with_ais(temperatures, base_kind):
    W, b, c, p, rate, log_z = model_and_base(10, 6, seed=5)
    base = rate if base_kind == "base rate" else torch.zeros_like(rate)
    v = draw_examples(p, 500, seed=7)  # test examples drawn from the model: E_p[log p_ann] <= E_p[log p]
    exact = -free_energy(v, W, b, c) - log_z  # (500,)
    torch.testing.assert_close(exact, exact_log_p(v, W, b, c), rtol=0, atol=1e-10)
    betas = torch.linspace(0, 1, temperatures, dtype=F64)
    estimate = raise_log_likelihood(v, W, b, c, base, betas, torch.Generator().manual_seed(1))
    gap, gap_se = mean_and_se(estimate - exact)  # RAISE - exact, per example
    assert gap <= 3 * gap_se  # a stochastic lower bound
    if temperatures == 10:
        assert gap + 3 * gap_se < 0  # a short schedule from a poor base errs clearly on the conservative side
    else:
        assert abs(gap) < 0.005  # a long one from the base rate is close
    # NLLs: AIS's (optimistic) <= exact <= RAISE's (conservative), each within its own error
    ais = ais_log_partition(W, b, c, base, betas, 500, torch.Generator().manual_seed(2))
    exact_nll, raise_nll = -exact.mean().item(), -estimate.mean().item()
    ais_nll = (free_energy(v, W, b, c).mean() + ais.log_z).item()
    assert ais_nll <= exact_nll + 3 * ais.log_z_std_err
    assert raise_nll >= exact_nll - 3 * gap_se


def test_raise_chains_average_in_weight_space():
    W, b, c, p, base, log_z = model_and_base(10, 6, seed=5)
    v = draw_examples(p, 200, seed=8)
    exact = -free_energy(v, W, b, c) - log_z
    betas = torch.linspace(0, 1, 10, dtype=F64)
    one = raise_log_likelihood(v, W, b, c, base, betas, torch.Generator().manual_seed(3))
    many = raise_log_likelihood(v, W, b, c, base, betas, torch.Generator().manual_seed(3), chains=20)
    assert many.shape == (200,)
    gap_one, _ = mean_and_se(one - exact)
    gap_many, se_many = mean_and_se(many - exact)
    assert gap_one < gap_many <= 3 * se_many  # tighter (Jensen's gap shrinks with more chains), still below
    # chains=2 is log mean exp of the two chains run side by side in one batch (rows r * N + i)
    pair = raise_log_likelihood(v[:5], W, b, c, base, betas, torch.Generator().manual_seed(4), chains=2)
    side_by_side = raise_log_likelihood(v[:5].repeat(2, 1), W, b, c, base, betas, torch.Generator().manual_seed(4))
    torch.testing.assert_close(pair, torch.logsumexp(side_by_side.view(2, 5), 0) - math.log(2), rtol=0, atol=1e-12)


# --- determinism, schedules, arguments --------------------------------------------------------------------------
def test_estimators_are_deterministic_given_a_generator_and_leave_the_global_rng_alone():
    W, b, c, p, base, _ = model_and_base(8, 4, seed=9)
    betas = torch.linspace(0, 1, 20, dtype=F64)
    v = draw_examples(p, 10, seed=0)
    state = torch.get_rng_state()

    def run(seed: int) -> tuple[Tensor, Tensor]:
        ais = ais_log_partition(W, b, c, base, betas, 30, torch.Generator().manual_seed(seed))
        return ais.log_weights, raise_log_likelihood(v, W, b, c, base, betas, torch.Generator().manual_seed(seed))

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not any(torch.equal(x, y) for x, y in zip(first, other, strict=True))
    assert torch.equal(torch.get_rng_state(), state)


def test_default_betas_is_salakhutdinov_and_murrays_schedule():
    betas = default_betas()
    assert betas.shape == (14_500,) and betas.dtype == F64
    assert betas[0].item() == 0 and betas[-1].item() == 1 and bool((betas.diff() > 0).all())
    assert [int(((betas >= lo) & (betas < hi)).sum()) for lo, hi in [(0, 0.5), (0.5, 0.9), (0.9, 1.01)]] == [
        500, 4_000, 10_000]
    for n in (2, 3, 4, 10, 1_000):  # other counts: n values from 0 to 1, increasing
        other = default_betas(n)
        assert len(other) == n and other[0] == 0 and other[-1] == 1 and bool((other.diff() > 0).all())


def test_base_rate_bias_is_the_clamped_logit_of_the_means():
    means = torch.tensor([0.0, 0.01, 0.3, 0.5, 1.0], dtype=F64)
    bias = base_rate_bias(means, eps=0.05)
    torch.testing.assert_close(torch.sigmoid(bias), means.clamp(0.05, 0.95), rtol=0, atol=1e-12)


def test_bad_schedules_and_shapes_fail_with_their_names():
    W, b, c = random_rbm(8, 4, seed=0)
    g = torch.Generator()
    with pytest.raises(ValueError, match="betas must increase from 0 to 1"):
        ais_log_partition(W, b, c, b, torch.linspace(0.1, 1, 5, dtype=F64), 10, g)
    with pytest.raises(ValueError, match="betas must increase from 0 to 1"):
        raise_log_likelihood(torch.zeros(2, 8), W, b, c, b, torch.tensor([0.0, 0.6, 0.4, 1.0]), g)
    with pytest.raises(ValueError, match="base_visible_bias must be"):
        ais_log_partition(W, b, c, c, torch.linspace(0, 1, 5), 10, g)
    with pytest.raises(ValueError, match=re.escape("v must be (N, D) with D = 8")):
        raise_log_likelihood(torch.zeros(2, 7), W, b, c, b, torch.linspace(0, 1, 5), g)
