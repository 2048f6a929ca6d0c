"""MADE: a masked autoencoder for distribution estimation.

Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation",
ICML 2015 (arXiv:1502.03509). An MLP from the D inputs to the parameters of the D conditionals
becomes autoregressive when its weights are multiplied by 0/1 masks built from degrees
(section 4 of the paper):

    m^0(d) = position of dimension d in the order, 1..D                         (input degrees)
    m^l(k) in [min m^{l-1}, D - 1]                                               (hidden degrees)
    M^l[k, k'] = [m^l(k) >= m^{l-1}(k')]                                         (hidden masks)
    M^V[d, k]  = [m^0(d) > m^L(k)]                                               (output mask)

so output d reads an input only through a path of non-decreasing degrees that ends strictly
below m^0(d): only the dimensions before d. Optional direct input-to-output connections use the
strictly lower-triangular mask [m^0(d) > m^0(d')]; they are off by default, since their D*P x D
weights grow with the levels (157M for 256-level MNIST), though on binary data they help (binarized
MNIST, one 500-unit layer, 20 epochs: 92.5 nats with them, 100.5 without).

Order- and connectivity-agnostic training (section 4): the model keeps K mask sets (``orderings``)
over one set of weights, each with its own input order and/or its own hidden degrees, and trains
on set k = step mod K at each step. Every set is an exact autoregressive model p_k(x); the test
likelihood is that of their uniform mixture, p(x) = (1/K) sum_k p_k(x), computed exactly as a
log-mean-exp of the K chain-rule log-likelihoods (not an average of the K sets' outputs).
Sampling draws a mixture component per image, then the image in that set's order.

Deviations from the paper:
- Hidden degrees: each layer's degrees are an evenly spread list over [min m^{l-1}, D - 1] in a
  random (seeded) assignment to the units, instead of i.i.d. uniform draws, so that every degree
  is present when the layer has at least D - 1 units (each unit's degree is still about uniform
  on the range). The K sets are fixed at construction (seeded by ``mask_seed``) and saved as buffers,
  instead of being redrawn at every update.
- L-level pixels (17-level digits, 8-bit MNIST) get an L-way softmax per dimension: the output layer
  has D*L units whose mask repeats the dimension's row L times; the input is the pixel's value.
- Real-valued vectors (the 2-D arena) get a mixture of M Gaussians per dimension, the conditionals
  of RNADE (Uria, Murray & Larochelle 2013): 3M output units per dimension (M logits, M means,
  M log-scales), masked like the softmax's; the input is the value itself.
- A class-conditional MADE adds a learned per-class bias to every hidden layer and to the output
  layer (unmasked: the label is known before the first dimension).
- The hidden units are ReLUs.

Sampling: the "cached" sampler computes, at step i, only the hidden units of degree i (they read
the inputs at positions < i, all drawn by then, and no later step changes them), and then the
output of the i-th dimension from the final units: one forward pass of work spread over the D
steps. The "naive" sampler reruns the whole network at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.models.autoregressive.base import (
    CACHED,
    NAIVE,
    AutoregressiveConfig,
    AutoregressiveModel,
    Stepper,
    label_bias,
    observed_mask,
    observed_precede_hidden,
    raster_order,
)
from genzoo.models.base import LogLikelihood, ModelConfig
from genzoo.nn.masked import MaskedLinear, check_masks, hidden_degrees, made_masks
from genzoo.nn.mode import eval_mode


@dataclass
class MADEConfig(ModelConfig, AutoregressiveConfig):
    hidden_dims: tuple[int, ...] = (500,)  # widths of the masked hidden layers, e.g. 500 or 500,500
    orderings: int = 1  # K mask sets (orderings/connectivities), trained in turn (set = step mod K); p(x) is their mixture
    order_agnostic: bool = True  # with orderings > 1: mask sets 1..K-1 take random input orders (set 0 stays raster)
    connectivity_agnostic: bool = True  # with orderings > 1: each mask set draws its own hidden degrees
    direct: bool = False  # direct input-to-output connections (masked strictly lower-triangular in the order)
    mask_seed: int = 0  # seed of the orders and hidden degrees of the mask sets

    def __post_init__(self) -> None:
        if isinstance(self.hidden_dims, list):  # a saved config.json holds lists
            self.hidden_dims = tuple(self.hidden_dims)
        elif isinstance(self.hidden_dims, int):
            self.hidden_dims = (self.hidden_dims,)

    def validate(self, info: DataInfo) -> None:
        name = type(self).__name__
        dims = self.hidden_dims
        if not (isinstance(dims, tuple) and dims and all(isinstance(h, int) and h > 0 for h in dims)):
            raise ValueError(f"{name}.hidden_dims={dims!r} must be one or more positive widths, e.g. 500 or 500,500")
        if not (isinstance(self.orderings, int) and self.orderings >= 1):
            raise ValueError(f"{name}.orderings={self.orderings!r} (the number K of mask sets) must be an integer >= 1")
        for flag in ("order_agnostic", "connectivity_agnostic", "direct"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{name}.{flag}={getattr(self, flag)!r} must be true or false")
        if self.orderings > 1 and not (self.order_agnostic or self.connectivity_agnostic):
            raise ValueError(f"{name}.orderings={self.orderings} with neither order_agnostic nor "
                             "connectivity_agnostic would give K identical mask sets; set orderings=1")
        self.validate_likelihood(info, "made", MADE.supported_likelihoods)


# --- the model -------------------------------------------------------------------------------------
class MADE(AutoregressiveModel):
    name = "made"
    description = ("MADE (Germain et al. 2015): masked autoencoder, K order/connectivity-agnostic mask sets, "
                   "exact mixture likelihood")
    Config = MADEConfig
    supported_likelihoods: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical", "gaussian_mixture")
    samplers = (CACHED, NAIVE)

    def __init__(self, config: MADEConfig, info: DataInfo):
        super().__init__(config, info)
        d, p, dims = info.dim, self.params_per_dim, config.hidden_dims
        sizes = [d, *dims]
        self.hidden = nn.ModuleList(MaskedLinear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.out = MaskedLinear(dims[-1], d * p)
        self.direct = MaskedLinear(d, d * p, bias=False) if config.direct else None
        self.labels = None
        if config.class_conditional:  # one unmasked per-class bias per hidden layer and for the output
            self.labels = nn.ModuleList(label_bias(info.num_classes, n) for n in [*dims, d * p])

        # the K mask sets, fixed by mask_seed: buffers, so a checkpoint carries them
        generator = torch.Generator().manual_seed(config.mask_seed)
        orders, degrees, masks, directs = [], [], [], []
        for k in range(config.orderings):
            random_order = k > 0 and config.order_agnostic
            order = torch.randperm(d, generator=generator) if random_order else raster_order(info.shape)
            if k == 0 or config.connectivity_agnostic:
                set_degrees = hidden_degrees(dims, d, generator)
            set_masks, set_direct = made_masks(order, set_degrees)
            check_masks(set_masks, order, set_direct if config.direct else None)
            orders.append(order), degrees.append(set_degrees), masks.append(set_masks), directs.append(set_direct)
        self.register_buffer("mask_orders", torch.stack(orders))  # (K, D) generation order of each set
        for layer in range(len(dims)):  # boolean masks: a byte per weight
            self.register_buffer(f"degrees_{layer}", torch.stack([s[layer] for s in degrees]))  # (K, H_l)
            self.register_buffer(f"masks_{layer}", torch.stack([s[layer] for s in masks]))  # (K, H_l, H_{l-1})
        self.register_buffer("masks_out", torch.stack([s[-1] for s in masks]))  # (K, D, H_L), a row per dimension
        if config.direct:
            self.register_buffer("masks_direct", torch.stack(directs))  # (K, D, D)

    @property
    def num_sets(self) -> int:
        return self.config.orderings

    def orders(self) -> Tensor:
        return self.mask_orders

    def masks(self, k: int) -> list[Tensor]:
        """The (out, in) masks of set k, input layer to output layer (the output's D*P rows)."""
        return [getattr(self, f"masks_{layer}")[k] for layer in range(len(self.hidden))] + [self.per_unit(self.masks_out[k])]

    def per_unit(self, mask: Tensor) -> Tensor:
        """A dimension's mask row for each of its P output units: (D, n) -> (D*P, n)."""
        return mask if self.params_per_dim == 1 else mask.repeat_interleave(self.params_per_dim, 0)

    # --- one pass: every conditional of one mask set ---------------------------------------------
    def conditionals(self, x: Tensor, y: Tensor | None = None, component: int = 0) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W, P): the conditionals of mask set ``component``.

        The mixture of the K sets has no single set of conditionals; set 0 is the default.
        """
        k, b = self.check_component(component), len(x)
        inputs = h = x.reshape(b, -1).to(self.out.weight.dtype)  # (B, D)
        masks = self.masks(k)
        for layer, (linear, mask) in enumerate(zip(self.hidden, masks)):
            a = linear(h, mask)  # (B, H_l)
            if self.labels is not None:
                a = a + self.labels[layer](y)
            h = F.relu(a)
        out = self.out(h, masks[-1])  # (B, D*P)
        if self.direct is not None:
            out = out + self.direct(inputs, self.per_unit(self.masks_direct[k]))
        if self.labels is not None:
            out = out + self.labels[-1](y)
        return out.reshape(b, *self.info.shape, self.params_per_dim)

    def set_log_likelihoods(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p_k(x) of every mask set: (K, B) nats, one network pass each."""
        return torch.stack([self.dim_log_probs(x, y, k).flatten(1).sum(1) for k in range(self.num_sets)])

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model",
             step: int | None = None) -> dict[str, Tensor]:
        """-log p_k(x) of mask set k = step mod K (order-agnostic training); set 0 when step is None."""
        k = 0 if step is None else step % self.num_sets
        nll = -self.dim_log_probs(x, y, k).flatten(1).sum(1)  # (B,) nats
        return {"loss": nll, "nll": nll}

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> LogLikelihood:
        """log p(x) = log (1/K) sum_k p_k(x), the uniform mixture of the K mask sets (exact)."""
        value = torch.logsumexp(self.set_log_likelihoods(x, y), 0) - math.log(self.num_sets)
        how = ("chain rule: the sum of every dimension's conditional, one network pass" if self.num_sets == 1 else
               f"log-mean-exp over the {self.num_sets} mask sets of their chain-rule likelihoods, one pass each")
        return LogLikelihood(value, "exact", how)

    @torch.no_grad()
    def conditional_log_likelihood(self, x: Tensor, observed: Tensor, y: Tensor | None = None) -> dict:
        """log p(x_hidden | x_observed) under the mixture: log sum_k p_k(x) - log sum_k p_k(x_observed).

        log p_k(x_observed) is the sum of the observed dimensions' conditionals, exact when they all
        precede the hidden ones in order k; otherwise the observed conditionals after a hidden
        dimension read it, and ``exact`` is False. With one set this is the base class's value.
        """
        keep = observed_mask(observed, x)
        with eval_mode(self):
            log_probs = torch.stack([self.dim_log_probs(x, y, k) for k in range(self.num_sets)])  # (K, B, C, H, W)
        joint = log_probs.flatten(2).sum(2)  # (K, B)
        observed_part = (log_probs * keep).flatten(2).sum(2)  # (K, B)
        value = torch.logsumexp(joint, 0) - torch.logsumexp(observed_part, 0)
        exact = all(observed_precede_hidden(keep_b, order) for keep_b in keep for order in self.orders())
        return {"log_likelihood": value, "exact": exact}

    # --- one dimension at a time -----------------------------------------------------------------
    def stepper(self, sampler: str, x: Tensor, y: Tensor | None, component: int = 0) -> Stepper:
        if sampler != "cached":
            return super().stepper(sampler, x, y, component)  # naive, or names the valid samplers
        k = self.check_component(component)
        flat, dtype, p = x.view(len(x), -1), self.out.weight.dtype, self.params_per_dim  # flat: (B, D), filled in place
        order = self.mask_orders[k].tolist()
        masks = [getattr(self, f"masks_{layer}")[k] for layer in range(len(self.hidden))]
        biases = [linear.bias.expand(len(x), -1) for linear in self.hidden]  # (B, H_l)
        out_bias = self.out.bias.expand(len(x), -1)  # (B, D*P)
        if self.labels is not None:
            biases = [bias + label(y) for bias, label in zip(biases, self.labels)]
            out_bias = out_bias + self.labels[-1](y)
        # the units of each layer grouped by degree, once: groups[l][m] = indices of degree m
        groups = []
        for layer in range(len(self.hidden)):
            degrees = getattr(self, f"degrees_{layer}")[k]
            by_degree = torch.argsort(degrees, stable=True)
            counts = torch.bincount(degrees, minlength=len(order) + 1).tolist()
            groups.append(dict(enumerate(torch.split(by_degree, counts))))
        hidden = [torch.zeros(len(x), linear.out_features, dtype=dtype, device=x.device) for linear in self.hidden]
        state = {"i": 0}

        def step(d: int) -> Tensor:
            i = state["i"]
            if order[i] != d:
                raise ValueError(f"the cached MADE sampler expects dimension {order[i]} at step {i}, got {d}")
            state["i"] = i + 1
            h = flat.to(dtype)  # (B, D): positions < i are drawn
            for layer, linear in enumerate(self.hidden):
                units = groups[layer].get(i)
                if units is not None and len(units):  # degree i: reads inputs at positions < i, now final
                    weight = linear.weight[units] * masks[layer][units]  # (n, H_{l-1})
                    hidden[layer][:, units] = F.relu(h @ weight.T + biases[layer][:, units])
                h = hidden[layer]  # units of degree > i are still zero, and masked out of every use below
            rows = slice(d * p, (d + 1) * p)
            params = h @ (self.out.weight[rows] * self.masks_out[k, d]).T + out_bias[:, rows]  # (B, P)
            if self.direct is not None:
                params = params + flat.to(dtype) @ (self.direct.weight[rows] * self.masks_direct[k, d]).T
            return params

        return step
