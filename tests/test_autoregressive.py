"""The shared autoregressive machinery: per-dimension likelihoods, orders, masks, sampling, completion.

A fully visible sigmoid belief net (logistic regression of each dimension on the earlier ones,
one masked linear layer) stands in for a model here, so these tests check the base alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch
from autoregressive_checks import check_autoregressive

from genzoo.data.core import DataInfo
from genzoo.evaluate.completion import parse_mask
from genzoo.distributions.likelihoods import Bernoulli, Categorical, DiscretizedLogistic, LogisticMixture
from genzoo.models.autoregressive.base import AutoregressiveConfig, AutoregressiveModel, observed_mask, observed_precede_hidden, PixelOutputHead, raster_order
from genzoo.models.base import ModelConfig
from genzoo.nn.masked import check_causal_mask, MaskedConv2d, MaskedLinear, spatial_mask

BINARY = DataInfo("toy-binary", (1, 3, 3), 0, "binary", 2)
LEVELS = DataInfo("toy-levels", (2, 2, 2), 3, "discrete", 5)


@dataclass
class SigmoidBeliefConfig(ModelConfig, AutoregressiveConfig):
    def validate(self, info: DataInfo) -> None:
        self.validate_likelihood(info, "fvsbn", ("bernoulli", "categorical", "logistic_mixture"))


class FullyVisibleSigmoidBelief(AutoregressiveModel):
    """p(x_d | x_<d) from a linear function of the earlier dimensions (strictly lower-triangular mask)."""

    name, description, Config = "fvsbn", "test model", SigmoidBeliefConfig

    def __init__(self, config: SigmoidBeliefConfig, info: DataInfo):
        super().__init__(config, info)
        d, p = info.dim, self.params_per_dim
        self.linear = MaskedLinear(d, d * p)
        rank = torch.empty(d, dtype=torch.long)
        rank[self.order] = torch.arange(d)  # position of each flat dimension in the order
        mask = (rank[:, None] > rank[None, :]).float().repeat_interleave(p, 0)  # output d reads inputs before d
        self.register_buffer("mask", mask)
        self.label = torch.nn.Embedding(max(info.num_classes, 1), d * p)

    def conditionals(self, x, y=None, component=0):
        out = self.linear(x.flatten(1), self.mask)  # (B, D*P)
        if y is not None:
            out = out + self.label(y)
        return out.reshape(len(x), *self.info.shape, self.params_per_dim)


def toy(info=BINARY, **config) -> FullyVisibleSigmoidBelief:
    torch.manual_seed(0)
    return FullyVisibleSigmoidBelief(SigmoidBeliefConfig(**config), info)


# --- per-dimension likelihoods ---------------------------------------------------------------------
LIKELIHOODS = [Bernoulli(), Categorical(5), LogisticMixture(5, 3), LogisticMixture(256, 2), DiscretizedLogistic(17)]


@pytest.mark.parametrize("likelihood", LIKELIHOODS, ids=lambda l: f"{l.name}")
def test_each_dimension_likelihood_sums_to_one_over_its_levels(likelihood):
    levels = 2 if likelihood.name == "bernoulli" else likelihood.num_levels
    params = 3 * torch.randn(7, likelihood.params_per_dim, generator=torch.Generator().manual_seed(1))
    values = torch.arange(levels, dtype=torch.float32) / (levels - 1)  # (K,)
    log_p = torch.stack([likelihood.log_prob(v.expand(7), params) for v in values])  # (K, 7)
    assert torch.allclose(torch.logsumexp(log_p.double(), 0), torch.zeros(7, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("likelihood", [*LIKELIHOODS[:3], LIKELIHOODS[4]], ids=lambda l: f"{l.name}")
def test_sampling_from_noise_draws_each_level_with_its_probability(likelihood):
    levels = 2 if likelihood.name == "bernoulli" else likelihood.num_levels
    generator = torch.Generator().manual_seed(2)
    params = 1.5 * torch.randn(likelihood.params_per_dim, generator=generator)
    n = 40_000
    draws = likelihood.sample(params.expand(n, -1), torch.rand(n, likelihood.noise_per_dim, generator=generator))
    values = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    expected = torch.stack([likelihood.log_prob(v[None], params[None]) for v in values]).exp()[:, 0]
    observed = torch.stack([(draws == v).float().mean() for v in values])
    assert observed.sum() == 1  # every draw is one of the levels
    assert torch.allclose(observed, expected, atol=4 * math.sqrt(0.25 / n))


# --- orders and masks -------------------------------------------------------------------------------
def test_raster_order_visits_pixels_row_by_row_and_channels_within_a_pixel():
    order = raster_order((3, 2, 2))  # flat index = c * 4 + row * 2 + col
    assert order.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


def test_observed_mask_broadcasts_and_names_a_wrong_shape():
    x = torch.zeros(2, 3, 4, 5)
    assert observed_mask(torch.ones(4, 5), x).shape == (2, 3, 4, 5)
    assert observed_mask(torch.ones(3, 4, 5), x).shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"mask of observed pixels has shape \(5, 4\).*\(H, W\) = \(4, 5\)"):
        observed_mask(torch.ones(5, 4), x)


def test_a_bottom_half_follows_the_top_half_in_raster_order_and_a_right_half_does_not():
    order = raster_order((1, 4, 4))
    assert observed_precede_hidden(parse_mask("bottom-half", 4, 4)[None], order)
    assert not observed_precede_hidden(parse_mask("right-half", 4, 4)[None], order)
    assert not observed_precede_hidden(parse_mask("top-half", 4, 4)[None], order)


def test_causal_masks_hide_the_centre_for_type_a_and_keep_it_for_type_b():
    a, b = spatial_mask(3, 3, "A"), spatial_mask(3, 3, "B")
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_masks_that_would_leak_the_future_fail_at_construction():
    leaking = spatial_mask(3, 3, "B")
    leaking[1, 2] = 1  # the pixel right of the centre
    with pytest.raises(ValueError, match=r"would leak the future.*\(1, 2\)"):
        MaskedConv2d(1, 1, 3, "B", mask=leaking)
    with pytest.raises(ValueError, match="would leak"):
        check_causal_mask(spatial_mask(3, 3, "B"), "A")  # B lets the centre through; A must not
    with pytest.raises(ValueError, match="unknown mask type 'C'"):
        MaskedConv2d(1, 1, 3, "C")
    with pytest.raises(ValueError, match="odd kernel"):
        MaskedConv2d(1, 1, 4, "A")


def test_masked_conv_at_one_position_equals_the_full_convolution_there():
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 4, 5, "A")
    x = torch.randn(2, 3, 6, 7)
    full = conv(x)  # (2, 4, 6, 7)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for row, col in [(0, 0), (3, 4), (5, 6)]:
        window = padded[:, :, row:row + 5, col:col + 5]
        assert torch.allclose(conv.at(window)[:, :, 0, 0], full[:, :, row, col], atol=1e-5)


def test_the_output_head_orders_the_channels_of_a_pixel():
    torch.manual_seed(0)
    head = PixelOutputHead(features=4, channels=3, params_per_dim=2)
    torch.nn.init.normal_(head.link.weight)
    x = torch.rand(1, 3, 1, 1, requires_grad=True)
    params = head(torch.randn(1, 4, 1, 1), x)  # (1, 3, 1, 1, 2)
    for channel in range(3):
        (grad,) = torch.autograd.grad(params[0, channel].sum(), x, retain_graph=True)
        reads = (grad[0, :, 0, 0] != 0).tolist()
        assert reads == [c < channel for c in range(3)], (channel, reads)


# --- the base model on a toy ---------------------------------------------------------------------------
@pytest.mark.parametrize("info, likelihood", [(BINARY, "bernoulli"), (LEVELS, "categorical"),
                                              (LEVELS, "logistic_mixture")])
def test_toy_model_is_autoregressive_and_normalised(info, likelihood):
    model = toy(info, likelihood=likelihood)
    torch.nn.init.normal_(model.linear.weight)
    check_autoregressive(model)
    if info is BINARY:  # enumerate all 2^9 images: the probabilities sum to one
        images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=info.dim))).reshape(-1, *info.shape)
        log_p = model.log_likelihood(images).value
        assert torch.logsumexp(log_p.double(), 0).abs() < 1e-5


def test_stepwise_conditionals_add_up_to_the_one_pass_log_likelihood():
    model = toy(LEVELS, likelihood="categorical", class_conditional=True)
    x = model.sample(4, torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0])
    assert torch.allclose(model.stepwise_log_likelihood(x, y), model.log_likelihood(x, y).value, atol=1e-5)


def test_sampling_is_deterministic_given_the_generator_and_draws_valid_levels():
    model = toy(LEVELS, likelihood="logistic_mixture")
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (6, *LEVELS.shape)
    assert torch.equal(a * 4, (a * 4).round()) and a.min() >= 0 and a.max() <= 1


def test_completion_keeps_observed_pixels_and_draws_hidden_ones_from_their_conditionals():
    model = toy(BINARY)
    torch.nn.init.normal_(model.linear.weight, std=2.0)
    x = torch.bernoulli(torch.full((1, *BINARY.shape), 0.5), generator=torch.Generator().manual_seed(0))
    observed = parse_mask("bottom-half", 3, 3)  # rows 0 observed, rows 1-2 hidden
    n = 4000
    done = model.complete(x.expand(n, -1, -1, -1), observed, generator=torch.Generator().manual_seed(1))
    assert torch.equal(done[:, :, observed], x.expand(n, -1, -1, -1)[:, :, observed])
    # the first hidden pixel (row 1, col 0) follows p(x_3 | x_0, x_1, x_2) exactly
    p = torch.sigmoid(model.conditionals(x)[0, 0, 1, 0, 0])
    assert abs(done[:, 0, 1, 0].mean() - p) < 4 * math.sqrt(0.25 / n)


def test_conditional_log_likelihood_of_a_bottom_half_is_exact_and_a_right_half_is_not():
    model = toy(BINARY)
    x = torch.bernoulli(torch.full((2, *BINARY.shape), 0.5), generator=torch.Generator().manual_seed(0))
    bottom = model.conditional_log_likelihood(x, parse_mask("bottom-half", 3, 3))
    full = model.log_likelihood(x).value
    top_only = model.dim_log_probs(x)[:, :, :1].flatten(1).sum(1)  # the observed first row
    assert bottom["exact"] and torch.allclose(bottom["log_likelihood"], full - top_only, atol=1e-6)
    assert not model.conditional_log_likelihood(x, parse_mask("right-half", 3, 3))["exact"]


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="needs binary pixels, and mnist has 256 levels"):
        toy(DataInfo("mnist", (1, 28, 28), 10, "discrete", 256), likelihood="bernoulli")
    with pytest.raises(ValueError, match="likelihood='gaussian' is not one of"):
        toy(BINARY, likelihood="gaussian")
    with pytest.raises(ValueError, match="needs class labels"):
        toy(BINARY, class_conditional=True)
    model = toy(BINARY)
    with pytest.raises(ValueError, match="no sampler 'fast'; its samplers: naive"):
        model.sample(2, sampler="fast")
    with pytest.raises(ValueError, match="built for images of shape"):
        model.log_likelihood(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        model.log_likelihood(torch.full((2, *BINARY.shape), float("nan")))


@pytest.mark.parametrize("spec, hidden", [("bottom-half", 8), ("top-half", 8), ("right-half", 8), ("left-half", 8)])
def test_named_masks_hide_half_of_the_image(spec, hidden):
    assert int((~parse_mask(spec, 4, 4)).sum()) == hidden


def test_random_masks_are_seeded_and_bad_specs_fail_by_name():
    a, b = parse_mask("random:0.5", 28, 28, seed=1), parse_mask("random:0.5", 28, 28, seed=1)
    assert torch.equal(a, b) and 0.4 < (~a).float().mean() < 0.6
    for spec, message in [("random:1.5", "strictly between 0 and 1"), ("random:x", "must be a number"),
                          ("middle", "unknown mask 'middle'")]:
        with pytest.raises(ValueError, match=message):
            parse_mask(spec, 4, 4)
