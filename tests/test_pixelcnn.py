"""PixelCNN and Gated PixelCNN: the autoregressive property (sub-pixel order included), PixelCNN's
blind spot and its absence in the gated stacks, cached sampling equal to naive sampling draw for
draw, stepwise log-likelihoods equal to the one-pass one, completion, validation, training and
save/load. Tiny models on images of at most 8x8."""

from __future__ import annotations

import pytest
import torch
from autoregressive_checks import check_autoregressive, input_gradients

from genzoo.data.core import DataInfo
from genzoo.models.autoregressive.pixelcnn import GatedPixelCNN, GatedPixelCNNConfig, PixelCNN, PixelCNNConfig
from genzoo.nn.masked import MaskedConv2d

BINARY = DataInfo("binary8", (1, 8, 8), 10, "binary", 2)
RGB = DataInfo("toy", (3, 5, 5), 3, "discrete", 4)
RECT = DataInfo("rect", (2, 4, 7), 3, "discrete", 5)  # non-square: rows and columns cannot be swapped
MNIST = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)
SMALL = {
    "pixelcnn": (PixelCNN, PixelCNNConfig, {"channels": 8, "num_blocks": 2, "output_channels": 8}),
    "gated-pixelcnn": (GatedPixelCNN, GatedPixelCNNConfig, {"channels": 8, "num_layers": 3, "output_channels": 8}),
}
MODELS = sorted(SMALL)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(name: str, info: DataInfo, seed: int = 0, **overrides):
    """A small model; label biases (zero at initialisation) are randomised so that labels matter."""
    cls, config_cls, small = SMALL[name]
    torch.manual_seed(seed)
    model = cls(config_cls(**{**small, **overrides}), info)
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight)
    return model


def data(info: DataInfo, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    x = torch.randint(0, info.num_levels, (n, *info.shape), generator=g) / (info.num_levels - 1)
    return x, torch.randint(0, max(info.num_classes, 1), (n,), generator=g)


# --- the autoregressive property ---------------------------------------------------------------------
@pytest.mark.parametrize("info, conditional", [(BINARY, False), (RGB, True)], ids=["binary8x8", "rgb-conditional"])
@pytest.mark.parametrize("name", MODELS)
def test_each_conditional_reads_only_earlier_dimensions(name, info, conditional):
    """d params_i / d x_j = 0 for j >= i in the sub-pixel raster order, and some j < i is read."""
    model = make(name, info, class_conditional=conditional)
    y = torch.tensor([0, 2]) if conditional else None
    reads = check_autoregressive(model, y)
    assert reads[0] == 0 and min(reads[1:]) > 0
    if info.shape[0] > 1:  # the second channel of pixel 0 reads the first channel through the head's link
        assert reads[1] == 1 and reads[2] == 2


def test_pixelcnn_has_a_blind_spot_and_gated_pixelcnn_has_none():
    """Deep enough to reach every earlier pixel of an 8x8 image, PixelCNN still misses pixels above
    and to the right (van den Oord et al. 2016b, figure 1); the gated stacks read all of them."""
    pixelcnn = make("pixelcnn", BINARY, num_blocks=6)
    gated = make("gated-pixelcnn", BINARY, num_layers=6)
    pixelcnn_reads, gated_reads = check_autoregressive(pixelcnn), check_autoregressive(gated)
    assert gated_reads == list(range(64))  # every earlier pixel, for every pixel
    assert any(reads < position for position, reads in enumerate(pixelcnn_reads))
    # pixel (4, 2): the 7x7 mask-A layer reaches (3, 5) and no further right in the row above, and the
    # six 3x3 mask-B layers can only move up-and-right together; so (3, 6) is never read
    x = torch.rand(2, 1, 8, 8, generator=gen(0))
    blind = input_gradients(pixelcnn, x, None, 4 * 8 + 2).reshape(8, 8)
    assert blind[3, 6] == 0 and blind[3, 5] > 0 and blind[0, 7] > 0  # a hole inside the receptive field
    assert input_gradients(gated, x, None, 4 * 8 + 2).reshape(8, 8)[3, 6] > 0


# --- cached sampling -----------------------------------------------------------------------------
CASES = [(BINARY, "bernoulli", False), (BINARY, "bernoulli", True), (RGB, "categorical", False),
         (RGB, "logistic_mixture", True), (RECT, "categorical", True)]
CASE_IDS = ["binary", "binary-conditional", "rgb-categorical", "rgb-mixture-conditional", "rect-conditional"]


@pytest.mark.parametrize("info, likelihood, conditional", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", MODELS)
def test_cached_sampling_draws_exactly_the_naive_samples(name, info, likelihood, conditional):
    model = make(name, info, likelihood=likelihood, class_conditional=conditional)
    assert model.samplers[0].name == "cached"  # the default
    labels = torch.arange(5) % info.num_classes if conditional else None
    cached = model.sample(5, labels, gen(3), sampler="cached")
    naive = model.sample(5, labels, gen(3), sampler="naive")
    assert torch.equal(cached, naive)
    assert torch.equal(model.sample(5, labels, gen(3)), cached)  # cached by default
    assert not torch.equal(model.sample(5, labels, gen(4)), cached)
    levels = cached * (info.num_levels - 1)
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= info.num_levels - 1


@pytest.mark.parametrize("info, likelihood, conditional", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", MODELS)
def test_stepwise_log_likelihood_of_both_samplers_equals_the_one_pass_one(name, info, likelihood, conditional):
    """The steppers' parameters on real data, one dimension at a time, give the same chain rule sum."""
    model = make(name, info, likelihood=likelihood, class_conditional=conditional)
    x, y = data(info)
    y = y if conditional else None
    one_pass = model.log_likelihood(x, y)
    assert one_pass.kind == "exact" and torch.all(one_pass.value < 0)
    for sampler in [s.name for s in model.samplers]:
        stepwise = model.stepwise_log_likelihood(x, y, sampler=sampler)
        torch.testing.assert_close(stepwise, one_pass.value, rtol=0, atol=1e-4)


def test_labels_change_the_conditionals():
    for name in MODELS:
        model = make(name, RGB, class_conditional=True)
        x, _ = data(RGB, n=2)
        a = model.log_likelihood(x, torch.tensor([0, 0])).value
        b = model.log_likelihood(x, torch.tensor([1, 1])).value
        assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_completion_keeps_the_observed_pixels_with_either_sampler(name):
    model = make(name, RGB, likelihood="categorical", class_conditional=True)
    x, y = data(RGB, n=3, seed=1)
    observed = torch.zeros(5, 5, dtype=torch.bool)
    observed[:2] = True  # the top rows
    observed[3, 1] = observed[4, 4] = True  # and pixels after hidden ones
    done = {sampler: model.complete(x, observed, y, gen(5), sampler=sampler) for sampler in [s.name for s in model.samplers]}
    assert torch.equal(done["cached"], done["naive"])
    for result in done.values():
        assert torch.equal(result[:, :, observed], x[:, :, observed])
    again = model.complete(x, observed, y, gen(6))
    assert not torch.equal(again[:, :, ~observed], done["cached"][:, :, ~observed])


# --- validation ---------------------------------------------------------------------------------------
def test_masks_that_leak_the_future_or_have_no_name_fail_at_construction():
    leaky = torch.zeros(3, 3)
    leaky[1, 1] = 1  # the centre: allowed by mask B, a leak for mask A
    MaskedConv2d(1, 1, 3, "B", mask=leaky)
    with pytest.raises(ValueError, match=r"mask 'A' would leak the future.*\(1, 1\)"):
        MaskedConv2d(1, 1, 3, "A", mask=leaky)
    leaky = torch.ones(3, 3)
    with pytest.raises(ValueError, match="would leak the future"):
        MaskedConv2d(1, 1, 3, "B", mask=leaky)
    with pytest.raises(ValueError, match="unknown mask type 'C'"):
        MaskedConv2d(1, 1, 3, "C")


@pytest.mark.parametrize("name", MODELS)
def test_bad_inputs_and_configs_are_refused_with_a_clear_message(name):
    model = make(name, BINARY, class_conditional=True)
    x, y = data(BINARY, n=2)
    with pytest.raises(ValueError, match=r"built for images of shape \(B, 1, 8, 8\).*got \(2, 1, 28, 28\)"):
        model.loss(torch.rand(2, 1, 28, 28), y)
    with pytest.raises(ValueError, match="is conditional and needs class labels"):
        model.loss(x)
    with pytest.raises(ValueError, match="is conditional and needs class labels"):
        model.sample(2)
    with pytest.raises(ValueError, match="no sampler 'fast'; its samplers: cached, naive"):
        model.sample(2, y, sampler="fast")
    with pytest.raises(ValueError, match="likelihood 'bernoulli' needs binary pixels.*256 levels"):
        make(name, MNIST, likelihood="bernoulli")
    with pytest.raises(ValueError, match="Config.first_kernel_size=4 must be an odd integer"):
        make(name, BINARY, first_kernel_size=4)
    with pytest.raises(ValueError, match="Config.likelihood='gaussian'"):
        make(name, BINARY, likelihood="gaussian")
    with pytest.raises(ValueError, match="needs class labels, and dataset 'binary8'"):
        make(name, DataInfo("binary8", (1, 8, 8), 0, "binary", 2), class_conditional=True)
    with pytest.raises(ValueError, match="Config.channels=0"):
        make(name, BINARY, channels=0)


def test_pixelcnn_channels_must_be_even():
    with pytest.raises(ValueError, match="PixelCNNConfig.channels=7 must be even"):
        make("pixelcnn", BINARY, channels=7)


# --- training, save and load ------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_a_few_training_steps_lower_the_loss_and_save_load_keeps_the_likelihood(name):
    model = make(name, RGB, likelihood="logistic_mixture", class_conditional=True)
    x, y = data(RGB, n=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model.loss(x, y)
        assert out["loss"].shape == (8,) and torch.equal(out["loss"], out["nll"])
        optimizer.zero_grad()
        out["loss"].mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        optimizer.step()
        losses.append(out["loss"].mean().item())
    assert losses[-1] < losses[0]

    twin = make(name, RGB, seed=1, likelihood="logistic_mixture", class_conditional=True)
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin.log_likelihood(x, y).value, model.log_likelihood(x, y).value)
    assert torch.equal(twin.sample(2, y[:2], gen(0)), model.sample(2, y[:2], gen(0)))


def test_a_residual_block_whose_last_convolution_is_zero_is_the_identity():
    """Each block adds its residual once: zeroing its output 1x1 convolution leaves the features as
    if the block were absent."""
    model = make("pixelcnn", RGB, num_blocks=2)
    shallow = make("pixelcnn", RGB, num_blocks=0)
    shallow.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")})
    for block in model.blocks:
        torch.nn.init.zeros_(block.expand.weight)
        torch.nn.init.zeros_(block.expand.bias)
    x, _ = data(RGB)
    torch.testing.assert_close(model.conditionals(x), shallow.conditionals(x), rtol=0, atol=0)
