"""The partition function of a Bernoulli RBM: exact enumeration, annealed importance sampling (AIS), and
per-example log-likelihoods by reverse annealing (RAISE).

- R. Salakhutdinov and I. Murray, "On the quantitative analysis of deep belief networks", ICML 2008:
  AIS from a base-rate RBM (zero weights, visible biases from the data's pixel means) to the model.
- Y. Burda, R. Grosse and R. Salakhutdinov, "Accurate and conservative estimates of MRF log-likelihood using
  reverse annealing", AISTATS 2015, arXiv:1412.8566: RAISE, the same annealing run backwards from each example.
- R. Neal, "Annealed importance sampling", Statistics and Computing 11, 2001: the estimator both rest on.

The RBM: v in {0,1}^D, h in {0,1}^H, weights W (H, D), visible bias b (D,), hidden bias c (H,),

    E(v, h) = -b.v - c.h - h.W v,    F(v) = -b.v - sum_j softplus(c_j + W_j.v),    p(v) = exp(-F(v)) / Z.

The annealing path (S&M 2008, from their base model A with W_A = 0 and zero hidden biases to the model B):

    f_beta(v) = exp((1 - beta) b_A.v + beta b.v) prod_j (1 + exp(beta (W_j.v + c_j))),

their p*_k(v) with the base's hidden units dropped (with W_A = 0 they contribute a constant 2^{H_A} that
cancels in every ratio). f_0 is the base, Z_0 = 2^H prod_i (1 + exp(b_A,i)); f_1(v) = exp(-F(v)), Z_1 = Z.
f_beta is the visible marginal of the joint exp((1 - beta) b_A.v + beta (b.v + c.h + h.W v)), so one block-Gibbs
sweep of that joint (``gibbs_step``) leaves f_beta invariant and is reversible with respect to it: AIS runs it
forwards, RAISE backwards, with the same function.

Which way each estimate errs (log p(v) = -F(v) - log Z):

- ``exact_log_partition``: no error; 2^min(H, D) states, so only for a narrow side.
- ``ais_log_partition``: Z-hat is unbiased, E[Z-hat] = Z, so E[log Z-hat] <= log Z (Jensen): log Z is
  underestimated and the NLL F(v) + log Z-hat is optimistic (too low) on average.
- ``raise_log_likelihood``: exp(log p-hat(v)) is unbiased for p_ann(v), the probability of v under the annealing
  chain run forwards (a model of its own), so E[log p-hat(v)] <= log p_ann(v); on data drawn from p,
  E_p[log p_ann] = E_p[log p] - KL(p || p_ann) <= E_p[log p] too. The NLL it gives is conservative (too high) on
  average, and with AIS's it brackets the exact NLL.

Everything runs in float64 by default, batched over runs/chains; all noise comes from the ``generator`` passed in
(``genzoo.distributions.numerics.draw``; None means the global RNG, the caller's choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.functional import softplus

from genzoo.distributions.numerics import (
    draw,
    importance_weighted_log_mean,
    log_mean_exp,
)

MAX_ENUMERATED = 25  # exact log Z enumerates at most 2^25 (about 34M) states by default
CHUNK_ELEMENTS = 2**22  # entries of one (states, other side) block: 32 MiB in float64, whatever H and D are
SM_TEMPERATURES = (500, 4_000, 10_000)  # Salakhutdinov & Murray's schedule: in [0, 0.5), [0.5, 0.9), [0.9, 1]
SM_EDGES = (0.0, 0.5, 0.9, 1.0)


@dataclass(frozen=True)
class AISResult:
    """log Z-hat = log_z_base + log mean exp(log_weights), and its standard error by the delta method."""

    log_z: float
    log_z_std_err: float  # std(w) / (sqrt(runs) mean(w)); nan from one run
    log_weights: Tensor  # (runs,) log w of each run
    log_z_base: float  # log Z_0 of the base-rate model


# --- the RBM and its exact partition function ------------------------------------------------------------------
def free_energy(v: Tensor, W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """F(v) = -b.v - sum_j softplus(c_j + W_j.v) = -log sum_h exp(-E(v, h)): (N,) for v (N, D).

    Differentiable, in the parameters' dtype (no cast: training calls it too).
    """
    v = v.to(W.dtype)
    return -(v @ b) - softplus(v @ W.T + c).sum(-1)


def _check_rbm(W: Tensor, b: Tensor, c: Tensor, base_visible_bias: Tensor | None = None) -> None:
    if W.dim() != 2 or b.shape != (W.shape[1],) or c.shape != (W.shape[0],):
        raise ValueError(f"an RBM needs W (H, D), b (D,), c (H,): got W {tuple(W.shape)}, b {tuple(b.shape)}, "
                         f"c {tuple(c.shape)}")
    if base_visible_bias is not None and base_visible_bias.shape != b.shape:
        raise ValueError(f"base_visible_bias must be (D,) = {tuple(b.shape)}: got {tuple(base_visible_bias.shape)}")


def _binary_states(start: int, stop: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The binary expansions of the integers start..stop-1, least significant bit first: (stop - start, width)."""
    index = torch.arange(start, stop, device=device)
    return ((index[:, None] >> torch.arange(width, device=device)) & 1).to(dtype)


def _count(n: int) -> str:
    return f"{n / 1e6:.0f}M" if n >= 10**6 else f"{n / 1e3:.0f}k" if n >= 10**3 else str(n)


@torch.no_grad()
def exact_log_partition(W: Tensor, b: Tensor, c: Tensor, max_hidden: int = MAX_ENUMERATED,
                        chunk_states: int | None = None, dtype: torch.dtype = torch.float64) -> float:
    """log Z, by enumerating the 2^H hidden states (the visible ones when D < H), log-sum-exp throughout.

    Summing v out in closed form, log sum_v exp(-E(v, h)) = c.h + sum_i softplus(b_i + (W^T h)_i), so
    log Z = logsumexp_h of that; by the symmetry of E the visible side gives logsumexp_v -F(v). States go in
    chunks of ``chunk_states`` (default: CHUNK_ELEMENTS / width of the other side, at most 2^16), so memory stays
    bounded. Raises ValueError when min(H, D) > max_hidden.
    """
    _check_rbm(W, b, c)
    W, b, c = W.to(dtype), b.to(dtype), c.to(dtype)
    side, letter = "hidden", "H"
    if W.shape[1] < W.shape[0]:  # fewer visible units: enumerate v, as the hidden side of the transposed RBM
        W, b, c = W.T, c, b
        side, letter = "visible", "D"
    width, other = W.shape  # 2^width states enumerated, each against `other` units summed in closed form
    if width > max_hidden:
        raise ValueError(f"exact log Z enumerates 2^{letter} {side} states: {letter} = {width} is too wide (at most "
                         f"{max_hidden} here, about 2^{max_hidden} = {_count(2**max_hidden)} states); "
                         "use --estimator ais (or raise)")
    total = 2**width
    chunk = chunk_states or max(1, min(2**16, CHUNK_ELEMENTS // max(other, 1)))
    logs = []
    for start in range(0, total, chunk):
        h = _binary_states(start, min(start + chunk, total), width, dtype, W.device)  # (S, width)
        # a float per chunk: keeping the 0-d results as tensors grew memory by ~10 MB a chunk here (OOM at H = 25)
        logs.append(torch.logsumexp(h @ c + softplus(h @ W + b).sum(-1), 0).item())  # (S, other) -> ()
    return torch.logsumexp(torch.tensor(logs, dtype=torch.float64), 0).item()


# --- the annealing path shared by AIS and RAISE ----------------------------------------------------------------
def default_betas(temperatures: int = sum(SM_TEMPERATURES), dtype: torch.dtype = torch.float64) -> Tensor:
    """Salakhutdinov & Murray's inverse temperatures: 500 uniform in [0, 0.5), 4,000 in [0.5, 0.9), 10,000 in
    [0.9, 1] (14,500 from 0 to 1, increasing); another count keeps those proportions (at least one per range).
    """
    if temperatures < 2:
        raise ValueError(f"default_betas: {temperatures} temperatures: annealing needs at least 2 (0 and 1)")
    if temperatures < 4:  # too few for three ranges and the end point: uniform
        return torch.linspace(0, 1, temperatures, dtype=dtype)
    total = sum(SM_TEMPERATURES)
    first, second = (max(1, round(temperatures * n / total)) for n in SM_TEMPERATURES[:2])
    lo, mid, hi, top = SM_EDGES
    return torch.cat([torch.linspace(lo, mid, first + 1, dtype=dtype)[:-1],  # [0, 0.5): end point dropped
                      torch.linspace(mid, hi, second + 1, dtype=dtype)[:-1],  # [0.5, 0.9)
                      torch.linspace(hi, top, temperatures - first - second, dtype=dtype)])  # [0.9, 1]


def base_rate_bias(mean_pixels: Tensor, eps: float = 0.05) -> Tensor:
    """The base-rate model's visible biases b_A = logit(clamp(mean, eps, 1 - eps)), the ML fit of independent
    Bernoullis to the training data's pixel means. The clamp keeps pixels never (or always) on in the data
    reachable from the base; S&M's code smooths instead with 5 pseudo-counts per 100 examples, a floor of ~0.048.
    """
    p = mean_pixels.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def _check_betas(betas: Tensor) -> list[float]:
    if betas.dim() != 1 or len(betas) < 2 or betas[0].item() != 0 or betas[-1].item() != 1 \
            or bool((betas.diff() < 0).any()):
        raise ValueError(f"betas must increase from 0 to 1 (at least 2 values): got {len(betas)} values from "
                         f"{betas.min().item() if betas.numel() else None} to "
                         f"{betas.max().item() if betas.numel() else None}")
    return betas.tolist()  # Python floats: the loops below index them 14,500 times


def _bernoulli(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """0/1 draws with the given probabilities, same shape and dtype."""
    return (draw(torch.rand, tuple(probs.shape), generator, probs.device, probs.dtype) < probs).to(probs.dtype)


def _log_f_ratio(visible_gap: Tensor, hidden_input: Tensor, beta: float, beta_before: float) -> Tensor:
    """log f_beta(v) - log f_beta_before(v): (N,), from visible_gap = (b - b_A).v (N,) and x = W v + c (N, H)."""
    return (beta - beta_before) * visible_gap + (softplus(beta * hidden_input)
                                                 - softplus(beta_before * hidden_input)).sum(-1)


def gibbs_step(v: Tensor, beta: float, W: Tensor, b: Tensor, c: Tensor, base_visible_bias: Tensor,
               generator: torch.Generator | None, hidden_input: Tensor | None = None) -> Tensor:
    """One block-Gibbs sweep at inverse temperature beta: h ~ p_beta(h | v), then v' ~ p_beta(v | h): (N, D).

    The joint is exp((1 - beta) b_A.v + beta (b.v + c.h + h.W v)), so p_beta(h_j = 1 | v) = sigmoid(beta (W_j.v
    + c_j)) and p_beta(v_i = 1 | h) = sigmoid((1 - beta) b_A,i + beta (b_i + (W^T h)_i)). The sweep v -> v' is
    reversible with respect to f_beta (both orders of sum_h p(v) p(h | v) p(v' | h) are the joint of v and v'),
    so it is its own reversal: AIS's T_k and RAISE's reverse kernel alike. ``hidden_input`` = W v + c if known.
    """
    x = v @ W.T + c if hidden_input is None else hidden_input  # (N, H)
    h = _bernoulli(torch.sigmoid(beta * x), generator)  # (N, H)
    return _bernoulli(torch.sigmoid((1 - beta) * base_visible_bias + beta * (h @ W + b)), generator)  # (N, D)


def _base_log_partition(base_visible_bias: Tensor, n_hidden: int) -> float:
    """log Z_0 = sum_i softplus(b_A,i) + H log 2: independent visible units, and the model's H hidden units
    free at beta = 0 (the base's own hidden units, with zero weights and biases, cancel and are dropped)."""
    return softplus(base_visible_bias).sum().item() + n_hidden * math.log(2)


def _cast(dtype: torch.dtype, *tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.to(dtype) for t in tensors)


# --- AIS and RAISE ---------------------------------------------------------------------------------------------
@torch.no_grad()
def ais_log_partition(W: Tensor, b: Tensor, c: Tensor, base_visible_bias: Tensor, betas: Tensor, runs: int,
                      generator: torch.Generator | None, dtype: torch.dtype = torch.float64) -> AISResult:
    """log Z by annealed importance sampling from the base-rate RBM (Salakhutdinov & Murray 2008; Neal 2001).

    With inverse temperatures 0 = beta_0 < ... < beta_K = 1 and f_k = f_{beta_k} (module docstring), each of
    ``runs`` independent runs draws v_1 ~ p_0 and v_{k+1} ~ T_k(. | v_k) (``gibbs_step`` at beta_k), and weighs

        w = f_1(v_1)/f_0(v_1) * f_2(v_2)/f_1(v_2) * ... * f_K(v_K)/f_{K-1}(v_K),     E[w] = Z_K / Z_0,

    so Z-hat = Z_0 mean(w) is unbiased (S&M's r_AIS = (1/M) sum_i w^(i) estimates Z_B / Z_A). Which way it errs:
    E[log Z-hat] <= log Z by Jensen, so log Z is underestimated on average (badly so when the schedule is short or
    the weights heavy-tailed, with no sign of it in the spread) and log p(v) = -F(v) - log Z-hat overestimated:
    AIS's NLL is optimistic. ``log_z_std_err`` is the delta method's std(w) / (sqrt(runs) mean(w)), the error of
    log Z-hat from the runs' spread alone; it does not see that bias.
    """
    if runs < 1:
        raise ValueError(f"ais_log_partition: runs = {runs}: need at least 1")
    _check_rbm(W, b, c, base_visible_bias)
    beta = _check_betas(betas)
    W, b, c, base = _cast(dtype, W, b, c, base_visible_bias)
    log_z_base = _base_log_partition(base, W.shape[0])
    # 1. v_1 ~ p_0: independent Bernoulli(sigmoid(b_A)) pixels  (runs, D)
    v = _bernoulli(torch.sigmoid(base).expand(runs, -1), generator)
    log_w = torch.zeros(runs, dtype=dtype, device=W.device)
    # 2. log w += log f_k(v_k) - log f_{k-1}(v_k), then v_{k+1} ~ T_k(. | v_k); the last T_K would be wasted
    for k in range(1, len(beta)):
        x = v @ W.T + c  # (runs, H)
        log_w += _log_f_ratio(v @ (b - base), x, beta[k], beta[k - 1])
        if k < len(beta) - 1:
            v = gibbs_step(v, beta[k], W, b, c, base, generator, hidden_input=x)
    # 3. log Z-hat = log Z_0 + log mean w; Var[log Z-hat] ~ Var[w] / (runs mean(w)^2)
    log_mean, variance = importance_weighted_log_mean(torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0), runs)
    std_err = math.nan if variance is None else variance.sqrt().item()
    return AISResult(log_z_base + log_mean.item(), std_err, log_w, log_z_base)


@torch.no_grad()
def raise_log_likelihood(v: Tensor, W: Tensor, b: Tensor, c: Tensor, base_visible_bias: Tensor, betas: Tensor,
                         generator: torch.Generator | None, chains: int = 1,
                         dtype: torch.dtype = torch.float64) -> Tensor:
    """log p(v) per example (N,) by reverse annealed importance sampling (RAISE; Burda, Grosse & Salakhutdinov 2015).

    The annealing model p_ann(v_K) = sum p_0(v_0) T_1(v_1 | v_0) ... T_K(v_K | v_{K-1}) (``gibbs_step`` at beta_k,
    T_K at beta = 1 the model's own) is a normalised model near p when the schedule is long. Its reverse, started
    at the example v_K = v with h ~ p(h | v) and run down v_{k-1} ~ T_k(. | v_k) to the base, is the proposal;
    T_k being reversible with respect to f_k, the importance weight is

        w = p_0(v_0) prod_k T_k(v_k | v_{k-1}) / T_k(v_{k-1} | v_k)
          = (f_K(v) / Z_0) prod_{k=0}^{K-1} f_k(v_k) / f_{k+1}(v_k),     E[w] = p_ann(v),

    with f_K(v) = exp(-F(v)): no Z of the model is needed. Which way it errs: E[log w] <= log p_ann(v) (Jensen), and
    on data from p, E_p[log p_ann] <= E_p[log p] (Gibbs' inequality), so the estimate is a stochastic lower bound,
    its NLL conservative (too high) on average, unlike AIS's. ``chains`` > 1 averages that many independent chains
    per example in weight space (log mean exp), still unbiased for p_ann(v) and so still conservative, but tighter.
    """
    if chains < 1:
        raise ValueError(f"raise_log_likelihood: chains = {chains}: need at least 1")
    _check_rbm(W, b, c, base_visible_bias)
    if v.dim() != 2 or v.shape[1] != W.shape[1]:
        raise ValueError(f"v must be (N, D) with D = {W.shape[1]}: got {tuple(v.shape)}")
    beta = _check_betas(betas)
    W, b, c, base, v = _cast(dtype, W, b, c, base_visible_bias, v)
    n = len(v)
    # 1. w starts at f_K(v) / Z_0 for `chains` copies of every example: (chains * N,), chain r of example i at r N + i
    log_w = (-free_energy(v, W, b, c) - _base_log_partition(base, W.shape[0])).repeat(chains)
    state = v.repeat(chains, 1)  # (chains * N, D)
    x = state @ W.T + c  # (chains * N, H)
    # 2. for k = K..1: v_{k-1} ~ T_k(. | v_k) (at k = K: h ~ p(h | v), v' ~ p(v | h)), w *= f_{k-1} / f_k at v_{k-1}
    for k in range(len(beta) - 1, 0, -1):
        state = gibbs_step(state, beta[k], W, b, c, base, generator, hidden_input=x)
        x = state @ W.T + c
        log_w -= _log_f_ratio(state @ (b - base), x, beta[k], beta[k - 1])
    # 3. log mean_r w_r per example
    return log_mean_exp(log_w.view(chains, n), 0)
