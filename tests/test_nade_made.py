"""NADE and MADE: the autoregressive property, the mathematics of each model, and their samplers.

NADE's vectorised O(DH) pass is checked against the definition computed one dimension at a time;
MADE's likelihood against the mixture of its mask sets computed set by set; both against the
normalisation of a distribution (summing p(x) over every image of a tiny data space).
"""

from __future__ import annotations

import itertools
import typing

import pytest
import torch
from autoregressive_checks import check_autoregressive

from genzoo.train.flags import parse_value
from genzoo.data.core import DataInfo
from genzoo.evaluate.completion import parse_mask
from genzoo.models.autoregressive.made import MADE, MADEConfig
from genzoo.nn.masked import check_masks, hidden_degrees, made_masks
from genzoo.models.autoregressive.nade import hidden_preactivations, NADE, NADEConfig
from genzoo.models.registry import config_from_dict

BINARY = DataInfo("toy-binary", (1, 4, 4), 0, "binary", 2)
LABELLED = DataInfo("toy-labelled", (1, 4, 4), 3, "binary", 2)
RGB = DataInfo("toy-rgb", (3, 3, 3), 0, "discrete", 4)  # categorical, sub-pixel order
TINY = DataInfo("toy-tiny", (1, 2, 3), 2, "binary", 2)  # 2^6 = 64 images
TINY_LEVELS = DataInfo("toy-tiny-levels", (3, 1, 1), 0, "discrete", 4)  # 4^3 = 64 images
MNIST = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)


def nade(info=BINARY, **config) -> NADE:
    torch.manual_seed(0)
    return NADE(NADEConfig(**{"hidden_dim": 16, **config}), info)


def made(info=BINARY, **config) -> MADE:
    torch.manual_seed(0)
    return MADE(MADEConfig(**{"hidden_dims": (32, 32), **config}), info)


def images(info: DataInfo, n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, info.num_levels, (n, *info.shape), generator=g) / (info.num_levels - 1)


def labels(info: DataInfo, n: int = 6) -> torch.Tensor | None:
    return torch.arange(n) % info.num_classes if info.num_classes else None


def every_image(info: DataInfo) -> torch.Tensor:
    """All num_levels^D images of a tiny data space: (L^D, C, H, W)."""
    levels = torch.arange(info.num_levels, dtype=torch.float32) / (info.num_levels - 1)
    grid = torch.tensor(list(itertools.product(range(info.num_levels), repeat=info.dim)))
    return levels[grid].reshape(-1, *info.shape)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero biases and label embeddings (both start at zero), so that every path is exercised."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


# --- the autoregressive property ---------------------------------------------------------------------
@pytest.mark.parametrize("info, config", [
    (BINARY, {}), (BINARY, {"ordering": "random"}), (RGB, {}), (LABELLED, {"class_conditional": True}),
], ids=["binary", "random-order", "rgb-categorical", "conditional"])
def test_nade_conditionals_read_exactly_the_earlier_dimensions(info, config):
    model = randomise(nade(info, **config))
    reads = check_autoregressive(model, labels(info, 2))
    assert reads == list(range(info.dim))  # weight sharing: a_i sums over every earlier input


@pytest.mark.parametrize("info, config", [
    (BINARY, {}), (BINARY, {"direct": True}), (RGB, {}), (LABELLED, {"class_conditional": True}),
    (RGB, {"hidden_dims": (8,)}),
], ids=["binary", "direct", "rgb-categorical", "conditional", "narrow"])
def test_every_made_mask_set_is_autoregressive(info, config):
    model = randomise(made(info, orderings=3, **config))
    with torch.no_grad():  # positive hidden weights and biases: every ReLU is active on inputs in [0, 1],
        for linear in model.hidden:  # so a zero gradient means no path, not a dead unit
            linear.weight.abs_(), linear.bias.abs_()
    orders = model.orders()
    assert orders.shape == (3, info.dim) and not torch.equal(orders[1], orders[2])
    assert torch.equal(orders[0], model.order)  # set 0 keeps raster (sub-pixel) order
    for k in range(3):
        reads = check_autoregressive(model, labels(info, 2), component=k)
        if config.get("hidden_dims") != (8,):
            assert reads == list(range(info.dim)), k  # >= D - 1 units per layer: every degree is present,
            paths = mask_paths(model.masks(k))  # so every output is wired to every earlier input
            position = torch.empty(info.dim, dtype=torch.long)
            position[orders[k]] = torch.arange(info.dim)
            assert torch.equal(paths > 0, position[:, None] > position[None, :]), k


def mask_paths(masks: list[torch.Tensor]) -> torch.Tensor:
    """(D, D): the number of paths from input j to (any parameter of) output d through the masks."""
    paths = masks[0].double()
    for mask in masks[1:]:
        paths = mask.double() @ paths
    d = paths.shape[1]
    return paths.reshape(d, -1, d).sum(1)


def test_hidden_degrees_cover_one_to_d_minus_one_when_the_layer_is_wide_enough():
    for degrees in hidden_degrees((40, 15, 7), 16, torch.Generator().manual_seed(0)):
        assert degrees.min() == 1 and degrees.max() <= 15
    wide, narrow, narrower = hidden_degrees((40, 15, 7), 16, torch.Generator().manual_seed(0))
    assert set(wide.tolist()) == set(range(1, 16)) and set(narrow.tolist()) == set(range(1, 16))


def test_check_masks_rejects_a_leaking_mask_set():
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    masks, direct = made_masks(order, hidden_degrees((32, 32), 16, torch.Generator().manual_seed(1)))
    masks[-1], direct = masks[-1].repeat_interleave(3, 0), direct.repeat_interleave(3, 0)  # 3 parameters a dimension
    check_masks(masks, order, direct)  # the degree construction is causal
    diagonal = direct.clone()
    diagonal[3 * order[5] + 1, order[5]] = True  # one parameter of output d reads x_d itself
    with pytest.raises(ValueError, match=rf"leak the future: output {order[5]} \(step 5\) reads input {order[5]} \(step 5\)"):
        check_masks(masks, order, diagonal)
    dense = [masks[0], torch.ones_like(masks[1]), masks[2]]  # a hidden unit reads a later-degree unit
    with pytest.raises(ValueError, match="leak the future"):
        check_masks(dense, order)
    with pytest.raises(ValueError, match="do not fit"):
        check_masks(masks[1:], order)


@pytest.mark.parametrize("build, components", [(lambda: made(orderings=3), 3), (nade, 1)], ids=["made", "nade"])
def test_a_mixture_component_that_does_not_exist_is_refused(build, components):
    model, x = build(), torch.zeros(2, *BINARY.shape)
    for sampler in [s.name for s in model.samplers]:
        with pytest.raises(ValueError, match=f"{components} mixture component.*component {components} does not exist"):
            model.stepper(sampler, x, None, components)
    with pytest.raises(ValueError, match="component -1 does not exist"):
        model.dim_log_probs(x, component=-1)


def test_made_refuses_to_build_with_masks_that_leak(monkeypatch):
    import genzoo.models.autoregressive.made as made_module

    def leaking(order, degrees):
        masks, direct = made_masks(order, degrees)
        return masks[:-1] + [torch.ones_like(masks[-1])], direct

    monkeypatch.setattr(made_module, "made_masks", leaking)
    with pytest.raises(ValueError, match="leak the future"):
        made()


# --- NADE: the one-pass recursion is the definition ----------------------------------------------------
def nade_by_definition(model: NADE, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """log p(x) (B,) from a_i = c + W[:, <i] x_<i, h_i = sigmoid(a_i), params_i = b_i + V_i h_i, one i at a time."""
    xo = x.flatten(1).double()[:, model.order]  # (B, D) in order
    W, c, V, b = (t.detach().double() for t in (model.W, model.c, model.V, model.b))
    total = torch.zeros(len(x), dtype=torch.float64)
    for i in range(model.info.dim):
        a = c + xo[:, :i] @ W[:, :i].T  # (B, H)
        if y is not None:
            a = a + model.label.weight.detach().double()[y]
        params = torch.sigmoid(a) @ V[i].T + b[i]  # (B, P)
        if model.likelihood.name == "bernoulli":
            total += xo[:, i] * torch.nn.functional.logsigmoid(params[:, 0]) \
                + (1 - xo[:, i]) * torch.nn.functional.logsigmoid(-params[:, 0])
        else:
            level = (xo[:, i] * (model.info.num_levels - 1)).round().long()
            total += torch.log_softmax(params, -1).gather(1, level[:, None])[:, 0]
    return total


@pytest.mark.parametrize("d", [1, 2, 7, 16, 50])
def test_blocked_prefix_sums_equal_the_exclusive_cumulative_sum_and_its_gradients(d):
    g = torch.Generator().manual_seed(d)
    x, W, c = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
               for shape in ((3, d), (5, d), (3, 5)))
    blocked = hidden_preactivations(x, W, c).view(-1, 3, 5)[:d]  # (D, B, H)
    terms = (x[:, :, None] * W.T).transpose(0, 1)  # (D, B, H) the terms W[:, j] x_j
    reference = c + torch.cumsum(terms, 0) - terms  # a_i = c + sum_{j<i}
    torch.testing.assert_close(blocked, reference)
    weights = torch.randn(d, 3, 5, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((blocked * weights).sum(), (x, W, c))
    expected = torch.autograd.grad((reference * weights).sum(), (x, W, c))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("info, config", [
    (BINARY, {"ordering": "random"}), (RGB, {}), (LABELLED, {"class_conditional": True}),
], ids=["binary-random-order", "rgb-categorical", "conditional"])
def test_nade_vectorised_pass_equals_the_per_dimension_definition(info, config):
    model = randomise(nade(info, **config)).double()
    x, y = images(info), labels(info)
    expected = nade_by_definition(model, x, y)
    got = model.log_likelihood(x.double(), y)
    assert got.kind == "exact"
    torch.testing.assert_close(got.value.double(), expected, rtol=0, atol=1e-5)


# --- MADE: the test likelihood is the mixture of the mask sets ------------------------------------------
def test_made_likelihood_is_the_log_mean_exp_over_its_mask_sets():
    model = randomise(made(BINARY, orderings=4, direct=True))
    x = images(BINARY)
    per_set = []
    for k in range(4):  # each set separately: its conditionals and the Bernoulli chain rule
        logits = model.conditionals(x, component=k).flatten(1, 4)  # (B, D)
        per_set.append(-torch.nn.functional.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1))
    per_set = torch.stack(per_set)  # (K, B)
    assert (per_set.max(0).values - per_set.min(0).values).min() > 0.1  # the sets really differ
    expected = torch.log(per_set.double().exp().mean(0))
    value = model.log_likelihood(x).value
    torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-5)
    averaged_logits = torch.stack([model.conditionals(x, component=k) for k in range(4)]).mean(0).flatten(1)
    not_a_mixture = -torch.nn.functional.binary_cross_entropy_with_logits(averaged_logits, x.flatten(1), reduction="none").sum(1)
    assert not torch.allclose(value, not_a_mixture, atol=1e-3)
    for k in range(4):  # training step k fits set k mod K
        torch.testing.assert_close(model.loss(x, step=k + 4)["loss"], -per_set[k], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.loss(x)["loss"], -per_set[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("build, info, config", [
    (nade, TINY, {}), (nade, TINY, {"ordering": "random", "class_conditional": True}), (nade, TINY_LEVELS, {}),
    (made, TINY, {"orderings": 4, "direct": True}), (made, TINY, {"orderings": 3, "class_conditional": True}),
    (made, TINY_LEVELS, {"orderings": 3}),
], ids=["nade", "nade-random-conditional", "nade-levels", "made-direct", "made-conditional", "made-levels"])
def test_probabilities_sum_to_one_over_every_image(build, info, config):
    model = randomise(build(info, **config)).double()
    x = every_image(info).double()
    for y in ([None] if not model.conditional else [torch.full((len(x),), c) for c in range(info.num_classes)]):
        total = torch.logsumexp(model.log_likelihood(x, y).value, 0)
        assert abs(total.item()) < 1e-9


# --- one dimension at a time -------------------------------------------------------------------------
@pytest.mark.parametrize("info, config", [
    (BINARY, {"ordering": "random"}), (RGB, {}), (LABELLED, {"class_conditional": True}),
], ids=["binary-random-order", "rgb-categorical", "conditional"])
def test_nade_stepwise_likelihood_of_each_sampler_equals_the_one_pass_value(info, config):
    model = randomise(nade(info, **config))
    x, y = images(info), labels(info)
    one_pass = model.log_likelihood(x, y).value
    for sampler in [s.name for s in NADE.samplers]:
        torch.testing.assert_close(model.stepwise_log_likelihood(x, y, sampler=sampler), one_pass, rtol=0, atol=1e-4)


@pytest.mark.parametrize("info, config", [
    (BINARY, {"direct": True}), (RGB, {"hidden_dims": (40,)}), (LABELLED, {"class_conditional": True}),
], ids=["binary-direct", "rgb-categorical", "conditional"])
def test_made_stepwise_likelihood_of_each_sampler_and_set_equals_log_p_k(info, config):
    model = randomise(made(info, orderings=3, **config))
    x, y = images(info), labels(info)
    for k in range(3):
        log_p_k = model.dim_log_probs(x, y, component=k).flatten(1).sum(1)
        for sampler in [s.name for s in MADE.samplers]:
            stepwise = model.stepwise_log_likelihood(x, y, sampler=sampler, component=k)
            torch.testing.assert_close(stepwise, log_p_k, rtol=0, atol=1e-4)


@pytest.mark.parametrize("build, info, config", [
    (nade, RGB, {"ordering": "random"}), (nade, LABELLED, {"class_conditional": True}),
    (made, RGB, {"orderings": 3, "direct": True}), (made, LABELLED, {"orderings": 2, "class_conditional": True}),
], ids=["nade-rgb", "nade-conditional", "made-rgb", "made-conditional"])
def test_cached_and_naive_samplers_draw_the_same_images(build, info, config):
    model = randomise(build(info, **config))
    y = labels(info, 8)
    cached = model.sample(8, y, torch.Generator().manual_seed(5), sampler="cached")
    naive = model.sample(8, y, torch.Generator().manual_seed(5), sampler="naive")
    assert torch.equal(cached, naive)
    assert model.samplers[0].name == "cached"
    levels = cached * (info.num_levels - 1)
    assert torch.equal(levels, levels.round()) and len(cached.unique()) > 1
    with pytest.raises(ValueError, match="no sampler 'fast'; its samplers: cached, naive"):
        model.sample(2, labels(info, 2), sampler="fast")


@pytest.mark.parametrize("build, config", [(nade, {}), (made, {"orderings": 3})], ids=["nade", "made"])
def test_completion_keeps_the_observed_pixels(build, config):
    model = randomise(build(RGB, **config))
    x = images(RGB, 8)
    observed = parse_mask("top-half", 3, 3)  # (H, W) True where kept
    done = model.complete(x, observed, generator=torch.Generator().manual_seed(2))
    keep = observed.expand_as(x)
    assert torch.equal(done[keep], x[keep])
    assert not torch.equal(done[~keep], x[~keep])  # the hidden rows were redrawn
    levels = done * (RGB.num_levels - 1)
    assert torch.equal(levels, levels.round())


def test_made_conditional_likelihood_of_a_bottom_half_is_the_mixture_conditional():
    """Observed pixels before the hidden ones in every order: log p(x_h | x_o) equals brute force
    log p(x) - log sum_{x_h'} p(x_o, x_h') over every completion, under the mixture of the sets."""
    model = randomise(made(TINY, orderings=3, order_agnostic=False)).double()  # raster orders, 3 connectivities
    every = every_image(TINY).double()  # (64, 1, 2, 3)
    log_p = model.log_likelihood(every, None).value
    observed = parse_mask("bottom-half", 2, 3)  # the top row kept, the bottom row hidden
    x = every[37:38]
    same_top = (every[:, 0, 0] == x[0, 0, 0]).all(1)
    expected = log_p[37] - torch.logsumexp(log_p[same_top], 0)
    result = model.conditional_log_likelihood(x, observed)
    assert result["exact"]
    torch.testing.assert_close(result["log_likelihood"][0], expected, rtol=0, atol=1e-9)
    agnostic = made(TINY, orderings=3)
    assert not agnostic.conditional_log_likelihood(x.float(), observed)["exact"]


# --- training, configuration and checkpoints ------------------------------------------------------------
@pytest.mark.parametrize("build, config", [(nade, {}), (made, {"orderings": 4, "direct": True})], ids=["nade", "made"])
def test_a_few_training_steps_lower_the_loss(build, config):
    model = build(BINARY, **config)
    prototypes = torch.tensor([[0.0] * 8 + [1.0] * 8, [1.0, 0.0] * 8]).reshape(2, 1, 4, 4)
    x = prototypes[torch.arange(64) % 2]  # two images: a model that learns them gains ~11 nats
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model.log_likelihood(x).value.mean()
    for step in range(40):
        loss = model.loss(x, step=step)["loss"]
        assert loss.shape == (64,) and torch.isfinite(loss).all()
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
    after = model.log_likelihood(x).value.mean()
    assert after > before + 1.0, (before, after)


@pytest.mark.parametrize("build, config", [
    (nade, {"ordering": "random", "ordering_seed": 3}), (made, {"orderings": 3, "direct": True, "mask_seed": 3}),
], ids=["nade", "made"])
def test_state_dict_round_trip_gives_the_same_likelihood(build, config):
    model = randomise(build(RGB, **config))
    other_seed = {k: 0 for k in ("ordering_seed", "mask_seed") if k in config}
    twin = build(RGB, **{**config, **other_seed})  # different orders and masks until loaded
    x = images(RGB)
    assert not torch.allclose(twin.log_likelihood(x).value, model.log_likelihood(x).value)
    twin.load_state_dict(model.state_dict())  # the orders and masks travel with the weights
    assert torch.equal(twin.orders(), model.orders())
    torch.testing.assert_close(twin.log_likelihood(x).value, model.log_likelihood(x).value, rtol=0, atol=0)
    g = torch.Generator
    assert torch.equal(twin.sample(3, generator=g().manual_seed(1)), model.sample(3, generator=g().manual_seed(1)))


@pytest.mark.parametrize("build, config, field", [
    (nade, {"hidden_dim": 0}, "hidden_dim"),
    (nade, {"ordering": "spiral"}, "ordering"),
    (nade, {"likelihood": "logistic_mixture"}, "likelihood"),
    (made, {"orderings": 0}, "orderings"),
    (made, {"hidden_dims": ()}, "hidden_dims"),
    (made, {"hidden_dims": (32, 0)}, "hidden_dims"),
    (made, {"orderings": 2, "order_agnostic": False, "connectivity_agnostic": False}, "orderings"),
    (made, {"likelihood": "logistic_mixture"}, "likelihood"),
    (made, {"class_conditional": True}, "class labels"),
], ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else getattr(v, "__name__", v))
def test_invalid_config_raises_naming_the_field(build, config, field):
    with pytest.raises(ValueError, match=field):
        build(RGB, **config)


@pytest.mark.parametrize("build", [nade, made])
def test_bernoulli_on_8_bit_pixels_is_refused_clearly(build):
    with pytest.raises(ValueError, match=r"likelihood 'bernoulli' needs binary pixels, and mnist has 256 levels"):
        build(MNIST, likelihood="bernoulli")


def test_made_options_parse_from_the_command_line_and_from_a_saved_config():
    hint = typing.get_type_hints(MADEConfig)["hidden_dims"]
    assert parse_value("500,500", hint, "hidden_dims") == (500, 500)
    assert parse_value("500", hint, "hidden_dims") == (500,)
    saved = MADEConfig(hidden_dims=(8, 8), orderings=8).to_dict() | {"hidden_dims": [8, 8]}  # JSON has lists
    config = config_from_dict(MADEConfig, saved)
    assert config.hidden_dims == (8, 8) and config.orderings == 8
    model = MADE(config, BINARY)
    assert model.orders().shape == (8, 16) and model.masks_0.shape == (8, 8, 16) and model.masks_out.shape == (8, 16, 8)
    assert torch.all(model.log_likelihood(images(BINARY)).value < 0)
