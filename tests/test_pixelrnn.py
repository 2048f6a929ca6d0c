"""PixelRNN (Row LSTM, Diagonal BiLSTM): the autoregressive property and the receptive field, the
skew, the cached sampler against the naive one and the one-pass likelihood, completion, validation,
training and save/load. Tiny models on 6x6-ish images."""

from __future__ import annotations

import pytest
import torch
from autoregressive_checks import check_autoregressive, input_gradients

from genzoo.data.core import DataInfo
from genzoo.models.autoregressive.pixelrnn import PixelRNN, PixelRNNConfig, skew, unskew

BINARY = DataInfo("binary", (1, 6, 6), 0, "binary", 2)
RGB = DataInfo("toy", (3, 4, 4), 0, "discrete", 4)  # sub-pixel order: R, G, B of each pixel
LAYERS = ("row_lstm", "diagonal_bilstm")
TINY = {"num_layers": 2, "hidden_channels": 4, "output_channels": 8}


def make(info: DataInfo, layer: str, seed: int = 0, **overrides) -> PixelRNN:
    torch.manual_seed(seed)
    return PixelRNN(PixelRNNConfig(layer=layer, **{**TINY, **overrides}), info)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(info: DataInfo, n: int = 3, seed: int = 0) -> torch.Tensor:
    levels = torch.randint(0, info.num_levels, (n, *info.shape), generator=gen(seed))
    return levels / (info.num_levels - 1)


# --- the skew (section 3.2) ----------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(1, 1), (4, 4), (3, 7), (7, 3)])
def test_skew_shifts_row_r_right_by_r_and_unskew_inverts_it(height, width):
    t = torch.randn(2, 3, height, width)
    skewed = skew(t)
    assert skewed.shape == (2, 3, height, width + height - 1)
    for r in range(height):
        assert torch.equal(skewed[:, :, r, r:r + width], t[:, :, r])
        assert skewed[:, :, r, :r].eq(0).all() and skewed[:, :, r, r + width:].eq(0).all()
    assert torch.equal(unskew(skewed), t)


# --- the autoregressive property -----------------------------------------------------------------------
@pytest.mark.parametrize("info", [BINARY, RGB], ids=["binary6x6", "rgb4x4"])
@pytest.mark.parametrize("layer", LAYERS)
def test_every_conditional_reads_only_earlier_dimensions(layer, info):
    seen = check_autoregressive(make(info, layer))  # asserts zero gradient w.r.t. itself and later dims
    if layer == "diagonal_bilstm":  # no blind spot: every earlier dimension is read
        assert seen == list(range(info.dim))
    elif info is BINARY:  # the Row LSTM's triangular receptive field (section 3.1) misses some earlier
        assert seen[6] < 6  # pixels: (1, 0) reads the row above up to (0, 3), through the 7x7 layer


def test_class_conditional_model_is_autoregressive_and_reads_the_label():
    info = DataInfo("labelled", (1, 5, 5), 3, "binary", 2)
    model = make(info, "diagonal_bilstm", class_conditional=True)
    torch.nn.init.normal_(model.label.weight)  # zero at initialisation
    y = torch.tensor([0, 2])
    check_autoregressive(model, y)
    x = images(info, 2)
    assert not torch.equal(model.log_likelihood(x, y).value, model.log_likelihood(x, y.flip(0)).value)


def test_diagonal_bilstm_as_published_misses_the_last_pixel_of_the_row_above():
    """The deviation in the module docstring: without the image link of the right-to-left direction,
    pixel (r, c) never reads (r-1, W-1) when c < W - 4, however many layers; with it, nothing is missed."""
    info = DataInfo("wide", (1, 5, 8), 0, "binary", 2)
    model = make(info, "diagonal_bilstm", num_layers=3).eval()
    x = torch.rand(2, *info.shape, generator=gen(0))

    def missed() -> set[tuple[int, int, int, int]]:
        out = set()
        for d in range(info.dim):
            grad = input_gradients(model, x, None, d)
            out |= {(*divmod(d, 8), *divmod(j, 8)) for j in range(d) if grad[j] == 0}
        return out

    assert missed() == set()
    with torch.no_grad():
        model.layers[0].image_to_state.weight.zero_()
    assert missed() == {(r, c, r - 1, 7) for r in range(1, 5) for c in range(4)}


# --- cached sampling against the naive sampler and the one-pass likelihood -----------------------------
CASES = [(BINARY, {}), (RGB, {}), (RGB, {"likelihood": "logistic_mixture", "mixture_components": 2}),
         (DataInfo("wide", (1, 3, 7), 0, "binary", 2), {}), (DataInfo("tall", (1, 7, 3), 0, "binary", 2), {})]
CASE_IDS = ["binary6x6", "rgb4x4", "rgb4x4-logistic", "wide3x7", "tall7x3"]


@pytest.mark.parametrize("info, overrides", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layer", LAYERS)
def test_cached_and_naive_samplers_draw_the_same_images(layer, info, overrides):
    model = make(info, layer, **overrides)
    cached = model.sample(4, generator=gen(1), sampler="cached")
    naive = model.sample(4, generator=gen(1), sampler="naive")
    assert torch.equal(cached, naive)
    levels = cached * (info.num_levels - 1)
    assert torch.equal(levels, levels.round())  # on the data's levels
    assert model.samplers[0].name == "cached"  # the default


@pytest.mark.parametrize("info, overrides", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layer", LAYERS)
def test_stepwise_likelihood_of_each_sampler_equals_the_one_pass_likelihood(layer, info, overrides):
    model = make(info, layer, **overrides)
    x = images(info)
    one_pass = model.log_likelihood(x).value
    assert torch.all(one_pass < 0)
    for sampler in ("cached", "naive"):
        torch.testing.assert_close(model.stepwise_log_likelihood(x, sampler=sampler), one_pass, rtol=0, atol=1e-4)


def test_cached_sampler_with_labels_matches_naive():
    info = DataInfo("labelled", (1, 5, 5), 3, "binary", 2)
    model = make(info, "row_lstm", class_conditional=True)
    torch.nn.init.normal_(model.label.weight)
    labels = torch.tensor([0, 1, 2, 1])
    assert torch.equal(model.sample(4, labels, gen(3), "cached"), model.sample(4, labels, gen(3), "naive"))
    x = images(info, 4)
    torch.testing.assert_close(model.stepwise_log_likelihood(x, labels, sampler="cached"),
                               model.log_likelihood(x, labels).value, rtol=0, atol=1e-4)


def test_cached_stepper_refuses_pixels_out_of_raster_order():
    model = make(BINARY, "diagonal_bilstm")
    features_at = model.cached_features(torch.zeros(1, *BINARY.shape), None)
    features_at(0, 0)
    with pytest.raises(RuntimeError, match="raster order"):
        features_at(0, 2)


@pytest.mark.parametrize("layer", LAYERS)
def test_completion_keeps_the_observed_pixels(layer):
    model = make(RGB, layer)
    x = images(RGB, 4, seed=5)
    observed = torch.zeros(4, 4, dtype=torch.bool)
    observed[:2] = True  # the top half
    observed[3, 1] = True  # and one pixel after the hidden ones
    out = model.complete(x, observed, generator=gen(2))
    keep = observed.expand_as(x)
    assert torch.equal(out[keep], x[keep])
    assert not torch.equal(out[~keep], x[~keep])
    assert torch.equal(out, model.complete(x, observed, generator=gen(2), sampler="naive"))


# --- validation ----------------------------------------------------------------------------------------
def test_unknown_layer_names_the_valid_ones():
    with pytest.raises(ValueError, match="layer.*row_lstm.*diagonal_bilstm"):
        PixelRNN(PixelRNNConfig(layer="lstm"), BINARY)


@pytest.mark.parametrize("field", ["num_layers", "hidden_channels", "output_channels"])
def test_sizes_must_be_positive(field):
    with pytest.raises(ValueError, match=field):
        PixelRNN(PixelRNNConfig(**{field: 0}), BINARY)


def test_bernoulli_on_8_bit_data_is_refused():
    mnist = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)
    with pytest.raises(ValueError, match="bernoulli.*binary"):
        PixelRNN(PixelRNNConfig(likelihood="bernoulli"), mnist)


def test_images_of_the_wrong_shape_are_refused():
    model = make(BINARY, "diagonal_bilstm")
    with pytest.raises(ValueError, match=r"built for images of shape \(B, 1, 6, 6\)"):
        model.log_likelihood(torch.zeros(2, 1, 6, 7))
    with pytest.raises(ValueError, match="shape"):
        model.complete(torch.zeros(2, 3, 6, 6), torch.ones(6, 6, dtype=torch.bool))


# --- training and save/load ----------------------------------------------------------------------------
@pytest.mark.parametrize("layer", LAYERS)
def test_training_steps_reduce_the_loss_with_finite_gradients(layer):
    model = make(RGB, layer)
    x = images(RGB, 8, seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.loss(x)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        optimizer.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("layer", LAYERS)
def test_state_dict_round_trip_gives_the_same_likelihood(layer):
    model = make(RGB, layer, seed=1)
    twin = PixelRNN(PixelRNNConfig(**model.config.to_dict()), RGB)
    twin.load_state_dict(model.state_dict())
    x = images(RGB)
    assert torch.equal(twin.log_likelihood(x).value, model.log_likelihood(x).value)
