"""Masked layers: the one place where autoregressive connectivity is enforced.

The mask multiplies the weight functionally in ``forward`` (``F.conv2d(x, weight * mask)``), so the
masked-out weights receive zero gradient and can never leak the future, whatever the optimizer does.
Masks are checked when a layer is built: a mask that lets an output see a position it must not
see raises ``ValueError`` at construction, not a wrong likelihood later.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASK_TYPES = ("A", "B")  # van den Oord et al. 2016: "A" hides the centre pixel, "B" lets it through


def spatial_mask(kernel_height: int, kernel_width: int, mask_type: str) -> Tensor:
    """A (kh, kw) raster-order causal mask around the centre: rows above, and the centre row left
    of the centre (mask "A") or up to and including it (mask "B"); zeros everywhere else."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask type {mask_type!r}; choose one of: {', '.join(MASK_TYPES)}")
    if kernel_height % 2 == 0 or kernel_width % 2 == 0:
        raise ValueError(f"a causal mask needs odd kernel sizes to have a centre, got {kernel_height}x{kernel_width}")
    mask = torch.zeros(kernel_height, kernel_width)
    centre_row, centre_col = kernel_height // 2, kernel_width // 2
    mask[:centre_row] = 1
    mask[centre_row, :centre_col + (mask_type == "B")] = 1
    return mask


def check_causal_mask(mask: Tensor, mask_type: str) -> None:
    """Raise ``ValueError`` if a (kh, kw) conv mask lets the centre output see a later pixel."""
    allowed = spatial_mask(mask.shape[-2], mask.shape[-1], mask_type)
    if ((mask != 0) & (allowed == 0)).any():
        rows, cols = torch.nonzero((mask != 0) & (allowed == 0), as_tuple=True)
        raise ValueError(f"mask {mask_type!r} would leak the future: it is non-zero at kernel offset(s) "
                         f"{list(zip(rows.tolist(), cols.tolist()))} (row, col), at or after the centre")


class MaskedConv2d(nn.Conv2d):
    """A "same"-padded 2-D convolution whose output at a pixel sees only earlier pixels (raster order).

    ``mask`` (kh, kw) defaults to the causal mask of ``mask_type``; a custom mask is checked against it.
    Channels are not masked: every model here is causal at the pixel level, and the channels of
    one pixel are ordered by its output head (``genzoo.models.autoregressive.PixelOutputHead``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 mask_type: str, mask: Tensor | None = None, bias: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        if mask is None:
            mask = spatial_mask(kh, kw, mask_type)
        elif tuple(mask.shape) != (kh, kw):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, the kernel is {kh}x{kw}")
        check_causal_mask(mask, mask_type)
        self.mask_type = mask_type
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)

    def at(self, window: Tensor) -> Tensor:
        """The output at one position from its (B, C_in, kh, kw) input window: (B, C_out, 1, 1).

        The same weights and sum as ``forward`` at that position; cached samplers call it with the
        window they keep, instead of convolving the whole image.
        """
        return F.conv2d(window, self.weight * self.mask, self.bias)


class MaskedLinear(nn.Linear):
    """A linear layer applied with a 0/1 connectivity mask (out_features, in_features) given per call.

    MADE keeps one mask per ordering/connectivity and passes the one it uses, so one set of
    weights serves every ordering (Germain et al. 2015, section 4).
    """

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x (B, in) -> (B, out)
        return F.linear(x, self.weight * mask, self.bias)


# --- MADE masks from degrees (Germain et al. 2015, section 4)  ----------------------------------------------------------------------------
def spread_degrees(units: int, low: int, high: int, generator: torch.Generator) -> Tensor:
    """(units,) degrees evenly spread over [low, high] (every value when units >= high - low + 1),
    assigned to the units in a random order."""
    span = max(high - low + 1, 1)  # D = 1: one (useless) degree
    degrees = low + torch.arange(units) * span // units
    return degrees[torch.randperm(units, generator=generator)]


def hidden_degrees(hidden_dims: Sequence[int], dim: int, generator: torch.Generator) -> list[Tensor]:
    """m^l for each hidden layer: in [min m^{l-1}, D - 1], the inputs' minimum degree being 1."""
    degrees, low = [], 1
    for units in hidden_dims:
        degrees.append(spread_degrees(units, low, dim - 1, generator))
        low = int(degrees[-1].min())
    return degrees


def input_degrees(order: Tensor) -> Tensor:
    """m^0 (D,): the position (1..D) of each flat dimension in ``order``."""
    degrees = torch.empty_like(order)
    degrees[order] = torch.arange(1, len(order) + 1)
    return degrees


def made_masks(order: Tensor, degrees: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
    """The boolean (out, in) masks of one set, input to output (eq. 12, 13), and its direct mask (D, D).

    The output mask has one row per dimension; each of the dimension's P output units uses it.
    """
    m0 = input_degrees(order)  # (D,)
    masks, previous = [], m0
    for m in degrees:
        masks.append(m[:, None] >= previous[None, :])  # (H_l, H_{l-1})
        previous = m
    masks.append(m0[:, None] > previous[None, :])  # (D, H_L)
    direct = m0[:, None] > m0[None, :]  # (D, D): strictly lower-triangular in the order
    return masks, direct


def check_masks(masks: Sequence[Tensor], order: Tensor, direct: Tensor | None = None) -> None:
    """Raise ``ValueError`` unless every output reads only the inputs before it in ``order``.

    ``masks``: the (out, in) masks from the input layer to the output layer, whose D*P rows are P
    per dimension in flat order (P >= 1); ``direct``: an optional (D*P, D) input-to-output mask. The product
    of the masks counts the paths from input j to output d; it must vanish unless j precedes d.
    """
    d = len(order)
    if masks[0].shape[1] != d or masks[-1].shape[0] % d or (direct is not None and tuple(direct.shape) != (masks[-1].shape[0], d)):
        raise ValueError(f"masks of shapes {[tuple(m.shape) for m in masks]} (direct: "
                         f"{None if direct is None else tuple(direct.shape)}) do not fit {d} dimensions")
    p = masks[-1].shape[0] // d
    reach = (masks[0] != 0).double()  # (H_1, D): which inputs each unit reads
    for mask in masks[1:-1]:
        reach = ((mask != 0).double() @ reach).clamp(max=1)
    out = (masks[-1] != 0).reshape(d, p, -1).any(1).double()  # (D, H_L): a dimension reads what its P rows read
    reads = (out @ reach) > 0  # (D, D) output dimension x input dimension
    if direct is not None:
        reads |= (direct != 0).reshape(d, p, d).any(1)
    position = input_degrees(order.cpu())
    allowed = position[:, None] > position[None, :]
    leaks = (reads.cpu() & ~allowed).nonzero().tolist()
    if leaks:
        shown = ", ".join(f"output {o} (step {position[o] - 1}) reads input {i} (step {position[i] - 1})"
                          for o, i in leaks[:3])
        raise ValueError(f"masks would leak the future: {shown}" + (f", and {len(leaks) - 3} more" if len(leaks) > 3 else ""))




class MaskedMLP(nn.Module):
    """A MADE network for one order: x (B, D) [+ context (B, E)] -> (B, D, P), where output (d, p) reads
    only the inputs before d in ``order``; the context (a class label's one-hot) reaches every unit.

    The conditioner of a masked autoregressive flow (MAF, autoregressive NSF). Hidden units are ReLUs;
    the output layer starts at zero, so a flow built on it starts as the identity.
    """

    def __init__(self, order: Tensor, hidden_dims: Sequence[int], params_per_dim: int, context_dim: int = 0,
                 seed: int = 0):
        super().__init__()
        dim, self.params_per_dim = len(order), params_per_dim
        masks, _ = made_masks(order, hidden_degrees(hidden_dims, dim, torch.Generator().manual_seed(seed)))
        masks[-1] = masks[-1].repeat_interleave(params_per_dim, 0)  # (D*P, H_L): P rows per dimension
        check_masks(masks, order)
        sizes = [dim, *hidden_dims, dim * params_per_dim]
        self.layers = nn.ModuleList(MaskedLinear(n_in, n_out) for n_in, n_out in itertools.pairwise(sizes))
        for i, mask in enumerate(masks):
            self.register_buffer(f"mask_{i}", mask.float(), persistent=False)
        self.context = nn.ModuleList(nn.Linear(context_dim, n, bias=False) for n in hidden_dims) if context_dim else None
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = x
        for i, layer in enumerate(self.layers[:-1]):
            h = layer(h, getattr(self, f"mask_{i}"))  # (B, H_i)
            if self.context is not None:
                h = h + self.context[i](context)
            h = F.relu(h)
        out = self.layers[-1](h, getattr(self, f"mask_{len(self.layers) - 1}"))  # (B, D*P)
        return out.unflatten(1, (-1, self.params_per_dim))  # (B, D, P)
