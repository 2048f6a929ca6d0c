"""Masked layers: the one place where autoregressive connectivity is enforced.

The mask multiplies the weight functionally in ``forward`` (``F.conv2d(x, weight * mask)``), so the
masked-out weights receive zero gradient and can never leak the future, whatever the optimizer does.
Masks are checked when a layer is built: a mask that lets an output see a position it must not
see raises ``ValueError`` at construction, not a wrong likelihood later.
"""

from __future__ import annotations

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
