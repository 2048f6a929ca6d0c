"""PixelCNN and Gated PixelCNN, with cached (incremental) sampling.

1. ``pixelcnn``: van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
   2016 (arXiv:1601.06759), section 3.5 and figure 5. A 7x7 convolution with mask A (the centre
   pixel hidden), residual blocks

       2h -> ReLU, 1x1 conv -> h -> ReLU, 3x3 conv mask B -> h -> ReLU, 1x1 conv -> 2h,  + input

   then ReLU, 1x1 conv layers and the per-pixel output head. Stacked masked convolutions leave a
   blind spot: the receptive field of a pixel misses a growing triangle of pixels above and to
   its right.

2. ``gated-pixelcnn``: van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu,
   "Conditional Image Generation with PixelCNN Decoders", 2016 (arXiv:1606.05328), section 2 and
   figure 2. Two stacks remove the blind spot: a vertical stack that sees every row above (and is
   shifted down one row before the horizontal stack reads it) and a horizontal stack that sees
   the current row up to the pixel. Each layer is gated,

       y = tanh(W_f * x + V_f^T h) (.) sigmoid(W_g * x + V_g^T h)                         (eq. 2, 4)

   with the class label entering as a learned bias V^T h (one per layer and stack). The
   vertical pre-activations reach the horizontal stack through a 1x1 convolution; the
   horizontal stack has residual connections and (optionally) skip connections to the output.
   The stacks are plain convolutions with padding and shifts: the vertical kernel (k//2 + 1, k)
   covers the rows above and the current row; the horizontal kernel (1, k//2 + 1) the columns to
   the left and the current one; the first horizontal layer, (1, k//2), excludes the current
   pixel (mask A).

Deviations. Channels are not masked inside the network (the papers split the feature maps into
R, G, B groups): the network sees only earlier pixels, and the channels of one pixel are ordered
by ``PixelOutputHead``'s linear link (as in PixelCNN++). The default sizes are small, chosen for
a CPU on 28x28 binarised MNIST (the papers use h = 128 and up to 15-20 layers); the first layer
has a 7x7 receptive field and the others 3x3, as in both papers.

Cached sampling, after Ramachandran et al., "Fast Generation for Convolutional Autoregressive
Models", 2017 (arXiv:1704.06001). Naive sampling reruns the whole network for every pixel. Every
layer's output at a pixel depends only on its inputs at that pixel and the pixels before it, so
the cached stepper computes each layer only where the new pixel changes it:
- PixelCNN: per pixel, one position of every layer; each masked convolution keeps a zero-padded
  cache of its input map and multiplies the (kh, kw) window around the pixel by its weights.
- Gated PixelCNN: the vertical stack of row r once that row of the image is complete (a
  convolution over a slab of cached rows, all layers, the whole row), and per pixel one
  position of every horizontal layer from a cached row of its inputs.
Both compute the same sums as the one-pass network (in another order), so with the noise drawn up
front the samples equal the naive sampler's (tests/test_pixelcnn.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.models.autoregressive.base import (
    AR_LIKELIHOODS,
    AutoregressiveConfig,
    PixelModel,
    PixelOutputHead,
    label_bias,
)
from genzoo.models.base import ModelConfig, check_images, check_positive
from genzoo.nn.masked import MaskedConv2d


def check_odd_kernel(config: ModelConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, int) and value >= 3 and value % 2 == 1):
            raise ValueError(f"{type(config).__name__}.{name}={value!r} must be an odd integer >= 3 "
                             "(a causal kernel needs a centre and at least one earlier pixel)")


def as_matrix(weight: Tensor) -> Tensor:
    """A conv weight (C_out, C_in, kh, kw) as a (C_in*kh*kw, C_out) matrix: a window (B, C_in, kh, kw)
    flattened to (B, C_in*kh*kw) times it is the convolution's output at the window's centre."""
    return weight.detach().reshape(len(weight), -1).t().contiguous()


# =================================================================================================
# 1. PixelCNN (van den Oord et al. 2016a)
# =================================================================================================
@dataclass
class PixelCNNConfig(AutoregressiveConfig, ModelConfig):
    channels: int = 64  # 2h: channels between residual blocks (h inside them)
    num_blocks: int = 8  # residual blocks (1x1, masked kxk type B, 1x1)
    first_kernel_size: int = 7  # kernel of the first, mask-A convolution
    kernel_size: int = 3  # kernel of the mask-B convolution in each block
    output_channels: int = 64  # channels of the 1x1 layer before the output head

    def validate(self, info: DataInfo) -> None:
        check_images(info, "pixelcnn", "made or nade")
        self.validate_likelihood(info, "pixelcnn", AR_LIKELIHOODS)
        check_positive(self, "channels", "output_channels")
        check_positive(self, "num_blocks", allow_zero=True)
        check_odd_kernel(self, "first_kernel_size", "kernel_size")
        if self.channels % 2:
            raise ValueError(f"PixelCNNConfig.channels={self.channels} must be even (2h, halved inside each block)")


class ResidualBlock(nn.Module):
    """Figure 5 of the paper: 2h -> ReLU, 1x1 -> h -> ReLU, kxk mask B -> h -> ReLU, 1x1 -> 2h, + input.

    A class label adds a learned bias to the masked convolution's output (0 when unconditional).
    """

    def __init__(self, channels: int, kernel_size: int, num_classes: int):
        super().__init__()
        hidden = channels // 2
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.conv = MaskedConv2d(hidden, hidden, kernel_size, "B")
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.label = label_bias(num_classes, hidden) if num_classes else None

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:  # (B, 2h, H, W) -> (B, 2h, H, W)
        t = self.conv(F.relu(self.reduce(F.relu(x))))  # (B, h, H, W)
        if self.label is not None:
            t = t + self.label(y)[:, :, None, None]
        return x + self.expand(F.relu(t))  # the residual, added once


class PixelCNN(PixelModel):
    name = "pixelcnn"
    description = "PixelCNN (van den Oord et al. 2016): masked convolutions, residual blocks, exact likelihood"
    Config = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig, info: DataInfo):
        super().__init__(config, info)
        c = info.shape[0]
        num_classes = info.num_classes if config.class_conditional else 0
        self.conv_in = MaskedConv2d(c, config.channels, config.first_kernel_size, "A")
        self.blocks = nn.ModuleList(ResidualBlock(config.channels, config.kernel_size, num_classes)
                                    for _ in range(config.num_blocks))
        self.conv_out = nn.Conv2d(config.channels, config.output_channels, 1)
        self.head = PixelOutputHead(config.output_channels, c, self.params_per_dim)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, F, H, W) output features; those at a pixel see only the pixels before it."""
        t = self.conv_in(x)  # (B, 2h, H, W), mask A: strictly earlier pixels
        for block in self.blocks:
            t = block(t, y)
        return F.relu(self.conv_out(F.relu(t)))  # (B, F, H, W)

    # --- cached sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def cached_features(self, x: Tensor, y: Tensor | None) -> Callable[[int, int], Tensor]:
        """``features_at(row, col)`` -> (B, F): the network at one pixel, each layer at that position only.

        Must be called for every pixel in raster order; x is read as the sampler fills it in.
        Each masked convolution keeps a zero-padded cache of its input map and applies its masked
        weight to the (kh, kw) window around the pixel (``MaskedConv2d.at``, here as one matrix
        product); the pointwise layers run on (B, channels) rows with the same weights.
        """
        b, (c, height, width) = len(x), self.info.shape
        dtype, device = self.conv_in.weight.dtype, x.device

        def masked(conv: MaskedConv2d) -> tuple[Tensor, Tensor, int]:
            return as_matrix(conv.weight * conv.mask), conv.bias.detach(), conv.kernel_size[0] // 2

        # the image, zero-padded; already holds the observed pixels (mask A never reads the current one)
        w_in, b_in, p_in = masked(self.conv_in)
        image = torch.zeros(b, c, height + 2 * p_in, width + 2 * p_in, dtype=dtype, device=device)
        image[:, :, p_in:p_in + height, p_in:p_in + width] = x
        blocks = []
        for block in self.blocks:
            w_conv, b_conv, p = masked(block.conv)
            cache = torch.zeros(b, block.conv.in_channels, height + 2 * p, width + 2 * p, dtype=dtype, device=device)
            if block.label is not None:  # the label bias folds into the conv bias: (B, h)
                b_conv = b_conv + block.label(y).to(dtype)
            blocks.append((as_matrix(block.reduce.weight), block.reduce.bias.detach(), w_conv, b_conv, p, cache,
                           as_matrix(block.expand.weight), block.expand.bias.detach()))
        w_out, b_out = as_matrix(self.conv_out.weight), self.conv_out.bias.detach()
        k_in = 2 * p_in + 1

        def features_at(row: int, col: int) -> Tensor:
            if col or row:  # the previous pixel is complete now: copy it into the padded image
                prev_row, prev_col = divmod(row * width + col - 1, width)
                image[:, :, p_in + prev_row, p_in + prev_col] = x[:, :, prev_row, prev_col]
            window = image[:, :, row:row + k_in, col:col + k_in].reshape(b, -1)  # (B, C*k*k)
            t = torch.addmm(b_in, window, w_in)  # (B, 2h) first layer at (row, col)
            for w_reduce, b_reduce, w_conv, b_conv, p, cache, w_expand, b_expand in blocks:
                cache[:, :, row + p, col + p] = torch.addmm(b_reduce, t.relu(), w_reduce).relu_()  # (B, h)
                window = cache[:, :, row:row + 2 * p + 1, col:col + 2 * p + 1].reshape(b, -1)  # (B, h*k*k)
                t = t + torch.addmm(b_expand, torch.addmm(b_conv, window, w_conv).relu_(), w_expand)
            return torch.addmm(b_out, t.relu(), w_out).relu_()  # (B, F)

        return features_at


# =================================================================================================
# 2. Gated PixelCNN (van den Oord et al. 2016b)
# =================================================================================================
@dataclass
class GatedPixelCNNConfig(AutoregressiveConfig, ModelConfig):
    channels: int = 32  # h: channels of each stack (the gated convolutions output 2h)
    num_layers: int = 8  # gated layers (each one vertical and one horizontal convolution)
    first_kernel_size: int = 7  # k of the first layer: vertical (k//2+1, k), horizontal (1, k//2) mask A
    kernel_size: int = 3  # k of the other layers: vertical (k//2+1, k), horizontal (1, k//2+1)
    skip: bool = True  # sum skip connections of every horizontal layer into the output (else: the last layer)
    output_channels: int = 64  # channels of the 1x1 layer before the output head

    def validate(self, info: DataInfo) -> None:
        check_images(info, "gated-pixelcnn", "made or nade")
        self.validate_likelihood(info, "gated-pixelcnn", AR_LIKELIHOODS)
        check_positive(self, "channels", "num_layers", "output_channels")
        check_odd_kernel(self, "first_kernel_size", "kernel_size")
        if not isinstance(self.skip, bool):
            raise ValueError(f"GatedPixelCNNConfig.skip={self.skip!r} must be true or false")


def gate(t: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) of the two halves of the channels (dim 1): (B, 2h, ...) -> (B, h, ...)."""
    a, b = t.chunk(2, 1)
    return torch.tanh(a) * torch.sigmoid(b)


def down_shift(t: Tensor) -> Tensor:
    """Move a (B, C, H, W) map down one row (zeros enter at the top): row r then holds row r-1."""
    return F.pad(t, (0, 0, 1, 0))[:, :, :-1]


class GatedLayer(nn.Module):
    """Figure 2 of the paper: one vertical and one horizontal gated convolution, linked.

    Vertical: v_pre = conv (k//2+1, k) over the rows above and the current one; v' = gate(v_pre).
    Horizontal: h_pre = conv (1, k//2+1) over the columns left and the current one (the first layer
    (1, k//2): the columns left only) + 1x1 (v_pre shifted down one row); h' = 1x1 gate(h_pre) + h
    (no residual in the first layer, whose input is the image), skip = 1x1 gate(h_pre).
    The last layer has no vertical output, and with skip connections no h' either (nothing reads them).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool, last: bool,
                 num_classes: int, skip: bool):
        super().__init__()
        self.first, self.last, self.pad = first, last, kernel_size // 2
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (self.pad + 1, kernel_size))
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, self.pad + (0 if first else 1)))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)  # vertical -> horizontal
        self.residual = None if last and skip else nn.Conv2d(channels, channels, 1)
        self.skip = nn.Conv2d(channels, channels, 1) if skip else None
        # V^T h: a label bias for each stack (only the horizontal one in the last layer)
        self.label = label_bias(num_classes, (2 if last else 4) * channels) if num_classes else None

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        p = self.pad
        v_pre = self.vertical(F.pad(v, (p, p, p, 0)))  # (B, 2h, H, W): row r reads rows r-p..r
        h_pre = self.horizontal(F.pad(h, (p, 0, 0, 0)))  # (B, 2h, H, W) (first: W+1 columns)
        if self.first:
            h_pre = h_pre[..., :-1]  # column c reads columns c-p..c-1
        h_pre = h_pre + self.link(down_shift(v_pre))  # the rows strictly above
        if self.label is not None:
            bias = self.label(y)[:, :, None, None]  # (B, 4h, 1, 1): vertical, horizontal (last layer: horizontal)
            h_pre = h_pre + bias[:, -h_pre.shape[1]:]
            if not self.last:
                v_pre = v_pre + bias[:, :v_pre.shape[1]]
        gated = gate(h_pre)  # (B, h, H, W)
        h_out = None
        if self.residual is not None:
            h_out = self.residual(gated) if self.first else h + self.residual(gated)
        v_out = None if self.last else gate(v_pre)
        return v_out, h_out, None if self.skip is None else self.skip(gated)


class GatedPixelCNN(PixelModel):
    name = "gated-pixelcnn"
    description = "Gated PixelCNN (van den Oord et al. 2016): vertical and horizontal stacks, no blind spot"
    Config = GatedPixelCNNConfig

    def __init__(self, config: GatedPixelCNNConfig, info: DataInfo):
        super().__init__(config, info)
        c = info.shape[0]
        num_classes = info.num_classes if config.class_conditional else 0
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else config.channels, config.channels,
                       config.first_kernel_size if i == 0 else config.kernel_size, i == 0, i == config.num_layers - 1,
                       num_classes, config.skip)
            for i in range(config.num_layers))
        self.conv_out = nn.Conv2d(config.channels, config.output_channels, 1)
        self.head = PixelOutputHead(config.output_channels, c, self.params_per_dim)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, F, H, W) output features; those at a pixel see every pixel before it."""
        v = h = x
        skips = 0
        for layer in self.layers:
            v, h, skip = layer(v, h, y)
            if skip is not None:
                skips = skips + skip
        out = skips if self.config.skip else h  # (B, h, H, W)
        return F.relu(self.conv_out(F.relu(out)))  # (B, F, H, W)

    # --- cached sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def cached_features(self, x: Tensor, y: Tensor | None) -> Callable[[int, int], Tensor]:
        """``features_at(row, col)`` -> (B, F), called for every pixel in raster order.

        At column 0 of row r the image rows < r are complete: the vertical stack of row r-1 is
        computed then, every layer across the whole row, each from a slab of its cached input rows
        (B, C_in, k//2+1, W + 2p). Its 1x1 link gives row r's vertical term of every horizontal
        layer, folded with the biases into one (B, W, 2h) row per layer. Per pixel, each
        horizontal layer reads a window of its cached inputs in the current row (B, C_in, kw).
        """
        b, (_, height, width) = len(x), self.info.shape
        dtype, device = self.conv_out.weight.dtype, x.device
        n = self.config.channels
        layers = []
        for layer in self.layers:
            p, cin = layer.pad, layer.vertical.in_channels
            label = (layer.label(y).to(dtype) if layer.label is not None
                     else torch.zeros(b, 4 * n, dtype=dtype, device=device))  # (B, [2h vertical,] 2h horizontal)
            outputs = [conv for conv in (layer.residual, layer.skip) if conv is not None]  # 1x1 convs of gate(h_pre)
            layers.append(dict(
                p=p, kw=layer.horizontal.kernel_size[1], residual=layer.residual is not None,
                # vertical inputs: image rows r-p..r live at cache rows r..r+p; horizontal inputs: the current row
                v_cache=torch.zeros(b, cin, height + p, width + 2 * p, dtype=dtype, device=device),
                h_cache=torch.zeros(b, cin, width + p, dtype=dtype, device=device),
                v_weight=layer.vertical.weight.detach(), v_bias=layer.vertical.bias.detach(), v_label=label[:, :2 * n],
                link_weight=layer.link.weight.detach(),
                h_weight=as_matrix(layer.horizontal.weight),
                h_const=(layer.horizontal.bias + layer.link.bias + label[:, -2 * n:])[:, None, :],  # (B, 1, 2h)
                out_weight=as_matrix(torch.cat([conv.weight for conv in outputs])),  # (h, h or 2h)
                out_bias=torch.cat([conv.bias.detach() for conv in outputs]),
            ))
            # "row": everything in h_pre but the horizontal conv, (B, W, 2h) for the current row. Row 0 has
            # nothing above: the shifted vertical map is zero there, and its link gives the link bias.
            layers[-1]["row"] = layers[-1]["h_const"].expand(b, width, 2 * n).contiguous()
        skip = self.config.skip
        w_final, b_final = as_matrix(self.conv_out.weight), self.conv_out.bias.detach()

        def vertical_row(r: int) -> None:
            """The vertical stack at image row r (complete now), every layer across the row."""
            first = layers[0]
            first["v_cache"][:, :, r + first["p"], first["p"]:first["p"] + width] = x[:, :, r]
            for i, layer in enumerate(layers):
                slab = layer["v_cache"][:, :, r:r + layer["p"] + 1]  # (B, C_in, p+1, W+2p): rows r-p..r
                v_pre = F.conv2d(slab, layer["v_weight"], layer["v_bias"])  # (B, 2h, 1, W)
                link = F.conv2d(v_pre, layer["link_weight"])[:, :, 0].transpose(1, 2)  # (B, W, 2h), row r+1's link
                layer["row"] = link + layer["h_const"]
                if i + 1 < len(layers):
                    following = layers[i + 1]
                    v_out = gate(v_pre[:, :, 0] + layer["v_label"][:, :, None])  # (B, h, W)
                    following["v_cache"][:, :, r + following["p"], following["p"]:following["p"] + width] = v_out

        def features_at(row: int, col: int) -> Tensor:
            if col == 0 and row > 0:
                vertical_row(row - 1)
            h_in = total = None  # the previous horizontal layer's output at (row, col); the skip sum
            for i, layer in enumerate(layers):
                h_cache, p, kw = layer["h_cache"], layer["p"], layer["kw"]
                # columns of this row are written before they are read, so stale ones from the row above never are
                if i == 0:  # the first layer reads the image: columns col-p..col-1
                    if col:
                        h_cache[:, :, p + col - 1] = x[:, :, row, col - 1]
                else:  # the others: columns col-p..col
                    h_cache[:, :, p + col] = h_in
                window = h_cache[:, :, col:col + kw].reshape(b, -1)  # (B, C_in*kw)
                gated = gate(torch.addmm(layer["row"][:, col], window, layer["h_weight"]))  # (B, h)
                out = torch.addmm(layer["out_bias"], gated, layer["out_weight"])  # (B, [h residual,] [h skip])
                if layer["residual"]:
                    h_in, out = (out[:, :n] if i == 0 else out[:, :n] + h_in), out[:, n:]
                if skip:
                    total = out if total is None else total + out
            final = total if skip else h_in
            return torch.addmm(b_final, final.relu(), w_final).relu_()  # (B, F)

        return features_at
