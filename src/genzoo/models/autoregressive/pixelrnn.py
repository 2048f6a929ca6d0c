"""PixelRNN: Row LSTM and Diagonal BiLSTM layers, with cached (incremental) sampling.

van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", 2016
(arXiv:1601.06759), sections 3.1-3.4. The network (table 1 of the paper):

    7x7 convolution, mask A                                      C -> 2h   (the pixels before)
    ``num_layers`` recurrent layers, each with a residual link:  2h -> 2h
        u + 1x1 conv(LSTM(u))                                    (h-channel LSTM states)
    ReLU, 1x1 conv, ReLU, 1x1 conv (the output head)             2h -> F -> C x P

Both recurrent layers are LSTMs whose four gates come from an input-to-state and a
state-to-state convolution (eq. 3):

    [o, f, i, g] = [sigma, sigma, sigma, tanh](K_ss * h_prev + K_is * u)
    c = f (.) c_prev + i (.) g,        h = o (.) tanh(c)

- Row LSTM (section 3.1): rows are processed top to bottom; K_is is a 1x3 convolution along the
  row, masked to the columns c-1, c (mask B), and K_ss a 1-D convolution of width 3 over the
  previous row's h (columns c-1..c+1 of row r-1); c_prev is the cell of (r-1, c). Its receptive
  field is a triangle above the pixel: it has a blind spot.
- Diagonal BiLSTM (section 3.2): the map is skewed (row r shifted right by r, width W + H - 1),
  so that each column is one diagonal; K_is is 1x1 and K_ss a column-wise 2x1 convolution over
  rows r-1 and r of the previous column, i.e. the states of the pixel above and of the pixel to
  the left; c_prev is the left neighbour's cell. The second direction runs on the width-flipped
  map (above and right); its output is shifted down one row before the two are added, so that
  it reads rows above only. Processed column by column, then unskewed.

Deviations.
- Channels are not masked inside the network (the paper splits the maps into R, G, B groups): the
  network sees only earlier pixels, and the channels of one pixel are ordered by
  ``PixelOutputHead``'s linear link (as in PixelCNN++).
- Diagonal BiLSTM blind spot. As described, the layer misses the last pixel of the row above,
  (r-1, W-1), for every pixel (r, c) with c < W - 4: the shared input map at a position never
  contains that position's own pixel (mask A), the right-to-left direction reads positions of
  rows <= r-1 only, and the left-to-right one positions (r, <= c), whose 7x7 mask-A windows reach
  columns <= c + 3 of row r-1. Because the right-to-left output is shifted down a row, that
  direction may read every pixel of the rows above, its own included: in the first recurrent
  layer its input-to-state adds a 1x1 convolution of the image itself, which closes the gap. The
  receptive field is then every earlier pixel, after one layer (tests/test_pixelrnn.py).
- The input-to-state convolution carries the bias and the state-to-state one none, and K_is is
  applied before skewing: the padding of the skewed map on the left of the image then holds
  exactly zero states, as if the image were zero-padded (the paper leaves the padding
  unspecified). The padding on its right is never read, so only the band of each column that
  lies inside the image is computed (half the work on a square image).
- Sizes: the paper's MNIST model has 7 Diagonal BiLSTM layers with h = 16. The recurrences are
  sequential (H or W + H - 1 steps per layer), so the default is smaller, sized for a CPU.

Sampling (``samplers``). Both draw the same images from the same generator state.
- "naive" (the base): the whole network for every dimension, D = C*H*W passes.
- "cached": every layer's output at pixel (r, c) depends only on the pixels before it, and on a
  layer's states at earlier positions, which stay fixed once computed. So the cached stepper
  computes, per pixel, ONE position of every layer from cached states, with the same weights as
  the one-pass network (the same sums in another order, equal to float rounding):
  * Row LSTM: the first layer from the 7x7 window of the image; each recurrent layer from its
    input at (r, c-1), (r, c) (the current row, cached) and the h, c of row r-1 (cached).
  * Diagonal BiLSTM: the left-to-right direction at (r, c) from the state above (row r-1,
    cached) and the one to the left (computed at the previous pixel). The right-to-left
    direction's contribution to row r is its state in row r-1, which depends on rows <= r-1
    only: it is computed once per row, at column 0, by one right-to-left sweep over the cached
    inputs of row r-1 (and the complete image row r-1), from its states in row r-2.
  The stepper must be called for every pixel in raster order (the base's cached samplers are).
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
from genzoo.models.base import ModelConfig, check_choice, check_images, check_positive
from genzoo.nn.masked import MaskedConv2d

LAYERS = ("row_lstm", "diagonal_bilstm")
FIRST_KERNEL = 7  # the mask-A convolution of the paper's first layer


@dataclass
class PixelRNNConfig(AutoregressiveConfig, ModelConfig):
    layer: str = "diagonal_bilstm"  # recurrent layer: "row_lstm" | "diagonal_bilstm" (the paper's best)
    num_layers: int = 4  # recurrent layers, each with a residual connection (paper, MNIST: 7)
    hidden_channels: int = 16  # h: channels of each LSTM state; the residual stream has 2h (paper, MNIST: 16)
    output_channels: int = 32  # F: channels of the ReLU + 1x1 layer before the output head (paper, MNIST: 32)

    def validate(self, info: DataInfo) -> None:
        check_images(info, "pixelrnn", "made or nade")
        self.validate_likelihood(info, "pixelrnn", AR_LIKELIHOODS)
        check_choice(self, "layer", LAYERS)
        check_positive(self, "num_layers", "hidden_channels", "output_channels")


# --- building blocks -----------------------------------------------------------------------------
def lstm_cell(gates: Tensor, c: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Eq. 3: the gate pre-activations (4h along ``dim``, stored as i, f, o, g) and the previous
    cell c (h along ``dim``) -> the new (h, c)."""
    i, f, o, g = gates.chunk(4, dim)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def skew(t: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W + H - 1): row r shifted right by r, zeros elsewhere (section 3.2).

    Pad each row to W + H, flatten, and read it back H - 1 + W wide: element r*(W+H) + c lands at
    row r, column r + c.
    """
    b, c, height, width = t.shape
    flat = F.pad(t, (0, height)).flatten(2)[:, :, :height * (width + height - 1)]
    return flat.reshape(b, c, height, width + height - 1)


def unskew(t: Tensor) -> Tensor:
    """The inverse of ``skew``: (B, C, H, W + H - 1) -> (B, C, H, W), row r read from column r on."""
    b, c, height, skewed_width = t.shape
    width = skewed_width - height + 1
    flat = F.pad(t.flatten(2), (0, height))  # (B, C, H*(W+H))
    return flat.reshape(b, c, height, width + height)[..., :width]


class RowLSTM(nn.Module):
    """Section 3.1: an LSTM over the rows, top to bottom, plus the residual link (2h -> 2h).

    K_is: 1x3 mask-B convolution along the row (columns c-1, c), 2h -> 4h, with the bias.
    K_ss: width-3 convolution over the previous row's h (columns c-1..c+1), h -> 4h.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.input_to_state = MaskedConv2d(channels, 4 * hidden, (1, 3), "B")
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, 3, padding=1, bias=False)
        self.residual = nn.Conv2d(hidden, channels, 1)

    def forward(self, u: Tensor, x: Tensor) -> Tensor:  # (B, 2h, H, W) -> (B, 2h, H, W)
        b, _, height, width = u.shape
        from_input = self.input_to_state(u)  # (B, 4h, H, W), the whole map at once
        h = c = u.new_zeros(b, self.hidden, width)  # the row above row 0
        rows = []
        # rows first and contiguous; unbind, not indexing: one gradient buffer, not one per row
        for from_input_r in from_input.permute(2, 0, 1, 3).contiguous().unbind(0):  # (B, 4h, W)
            h, c = lstm_cell(from_input_r + self.state_to_state(h), c)  # (B, h, W) each
            rows.append(h)
        return u + self.residual(torch.stack(rows).permute(1, 2, 0, 3))

    # --- one position at a time (cached sampling) ---
    def new_cache(self, b: int, width: int, like: Tensor) -> dict[str, Tensor]:
        zeros = lambda *size: like.new_zeros(b, *size)  # noqa: E731
        return {"u": zeros(self.input_to_state.in_channels, width + 2),  # row r's inputs, columns -1..W
                "h": zeros(self.hidden, width + 2), "c": zeros(self.hidden, width),  # row r
                "h_above": zeros(self.hidden, width + 2), "c_above": zeros(self.hidden, width)}  # row r-1

    def step(self, cache: dict[str, Tensor], row: int, col: int, u: Tensor, x: Tensor) -> Tensor:
        """The layer's output at (row, col) from its input there, u (B, 2h): (B, 2h)."""
        if col == 0:  # row - 1 is complete: it becomes the row above
            cache["h_above"], cache["h"] = cache["h"], torch.zeros_like(cache["h"])
            cache["c_above"], cache["c"] = cache["c"], torch.zeros_like(cache["c"])
        cache["u"][:, :, col + 1] = u
        from_input = self.input_to_state.at(cache["u"][:, :, None, col:col + 3])[:, :, 0, 0]  # (B, 4h)
        from_state = F.conv1d(cache["h_above"][:, :, col:col + 3], self.state_to_state.weight)[:, :, 0]
        h, cache["c"][:, :, col] = lstm_cell(from_input + from_state, cache["c_above"][:, :, col])
        cache["h"][:, :, col + 1] = h
        return u + self.residual(h[:, :, None, None])[:, :, 0, 0]


def band_rows(t: Tensor, start: int, lo: int, hi: int) -> Tensor:
    """Rows lo..hi-1 of a band t (2, B, rows, h) of a skewed column whose first row is ``start``;
    zero outside the band (the states of the padding on the left of the image)."""
    first, last = max(lo, start), max(min(hi, start + t.shape[2]), max(lo, start))
    return F.pad(t[:, :, first - start:last - start], (0, 0, first - lo, hi - last))


class DiagonalBiLSTM(nn.Module):
    """Section 3.2: two diagonal LSTMs over the skewed map, plus the residual link (2h -> 2h).

    Per direction d (0: left to right, 1: right to left on the width-flipped map): K_is a 1x1
    convolution 2h -> 4h with the bias (and, in the first recurrent layer, one from the image for
    d = 1: see the module docstring); K_ss a 2x1 convolution h -> 4h over the previous column's
    states at rows r-1, r, kept as a (2h, 4h) matrix on [h(r-1), h(r)], so that one loop over the
    columns runs both directions as one batched matrix product.
    """

    def __init__(self, channels: int, hidden: int, image_channels: int = 0):
        super().__init__()
        self.hidden = hidden
        self.input_to_state = nn.Conv2d(channels, 4 * hidden, 1)  # left to right
        self.input_to_state_reverse = nn.Conv2d(channels, 4 * hidden, 1)  # right to left
        self.image_to_state = nn.Conv2d(image_channels, 4 * hidden, 1, bias=False) if image_channels else None
        bound = (2 * hidden) ** -0.5  # nn.Conv1d's default initialisation for this fan-in
        self.state_to_state = nn.Parameter(torch.empty(2, 2 * hidden, 4 * hidden).uniform_(-bound, bound))
        self.residual = nn.Conv2d(hidden, channels, 1)

    def reverse_input(self, u: Tensor, x: Tensor) -> Tensor:  # (B, 2h, ., W), (B, C, ., W) -> (B, 4h, ., W)
        out = self.input_to_state_reverse(u)
        if self.image_to_state is not None:  # the pixels themselves: this direction is shifted down
            out = out + self.image_to_state(x)
        return out

    def forward(self, u: Tensor, x: Tensor) -> Tensor:  # (B, 2h, H, W) -> (B, 2h, H, W)
        b, _, height, width = u.shape
        # 1. input-to-state, then skew, so that column j is the j-th diagonal: (2, B, 4h, H, W + H - 1),
        #    stored column by column, channels last: (W + H - 1, 2, B, H, 4h)
        from_input = torch.stack([skew(self.input_to_state(u)), skew(self.reverse_input(u, x).flip(-1))])
        from_input = from_input.permute(4, 0, 1, 3, 2).contiguous()
        # 2. both LSTMs, column by column (unbind: one gradient buffer, not one per column). Column j
        #    holds image rows lo..hi-1; its other entries are padding, whose states are zero on the
        #    left of the image and never read on its right: only the band lo..hi-1 is computed.
        h = c = u.new_zeros(2, b, 0, self.hidden)  # the band of the previous column, from row `start`
        start, columns = 0, []
        for j, from_input_j in enumerate(from_input.unbind(0)):  # (2, B, H, 4h)
            lo, hi = max(0, j - width + 1), min(height, j + 1)
            # K_ss on the previous column's states at rows r-1 and r: (2, B, rows, 2h) -> (2, B, rows, 4h)
            previous = torch.cat([band_rows(h, start, lo - 1, hi - 1), band_rows(h, start, lo, hi)], -1)
            from_state = torch.bmm(previous.flatten(1, 2), self.state_to_state).view(2, b, hi - lo, -1)
            h, c = lstm_cell(from_input_j[:, :, lo:hi] + from_state, band_rows(c, start, lo, hi), dim=-1)
            start = lo
            columns.append(F.pad(h, (0, 0, lo, height - hi)))  # (2, B, H, h)
        # 3. unskew; flip the right-to-left direction back and shift it down one row
        h = torch.stack(columns, -1).permute(1, 0, 3, 2, 4).flatten(1, 2)  # (B, 2h, H, W + H - 1)
        h_forward, h_reverse = unskew(h).chunk(2, 1)  # (B, h, H, W) each
        h_reverse = F.pad(h_reverse.flip(-1), (0, 0, 1, 0))[:, :, :height]
        return u + self.residual(h_forward + h_reverse)

    # --- one position at a time (cached sampling) ---
    def new_cache(self, b: int, width: int, like: Tensor) -> dict[str, Tensor]:
        zeros = lambda *size: like.new_zeros(b, *size)  # noqa: E731
        return {"u": zeros(self.input_to_state.in_channels, width),  # row r's inputs
                "h": zeros(width + 1, self.hidden),  # left to right, row r, columns -1..W-1
                "c": zeros(self.hidden),  # left to right, the cell of the pixel to the left
                "h_above": zeros(width, self.hidden),  # left to right, row r-1
                "reverse": zeros(width, self.hidden)}  # right to left, row r-1 (row r after the shift)

    def reverse_row(self, cache: dict[str, Tensor], u: Tensor, x: Tensor) -> Tensor:
        """The right-to-left states of one complete row from its inputs u (B, 2h, W), its image row
        x (B, C, W) and the states of the row above, ``cache["reverse"]``: (B, W, h)."""
        b, _, width = u.shape
        from_input = self.reverse_input(u[:, :, None], x[:, :, None])[:, :, 0].transpose(1, 2)  # (B, W, 4h)
        above, out = cache["reverse"], torch.zeros_like(cache["reverse"])
        h_right = c = u.new_zeros(b, self.hidden)
        for col in reversed(range(width)):
            from_state = torch.cat([above[:, col], h_right], -1) @ self.state_to_state[1]  # (B, 4h)
            h_right, c = lstm_cell(from_input[:, col] + from_state, c)
            out[:, col] = h_right
        return out

    def step(self, cache: dict[str, Tensor], row: int, col: int, u: Tensor, x: Tensor) -> Tensor:
        """The layer's output at (row, col) from its input there, u (B, 2h): (B, 2h)."""
        if col == 0:
            if row > 0:  # row - 1 is complete: its right-to-left states, and it becomes the row above
                cache["reverse"] = self.reverse_row(cache, cache["u"], x[:, :, row - 1])
                cache["h_above"] = cache["h"][:, 1:].clone()
            cache["c"] = torch.zeros_like(cache["c"])
        cache["u"][:, :, col] = u
        from_input = self.input_to_state(u[:, :, None, None])[:, :, 0, 0]  # (B, 4h)
        from_state = torch.cat([cache["h_above"][:, col], cache["h"][:, col]], -1) @ self.state_to_state[0]
        h, cache["c"] = lstm_cell(from_input + from_state, cache["c"])  # above, left
        cache["h"][:, col + 1] = h
        return u + self.residual((h + cache["reverse"][:, col])[:, :, None, None])[:, :, 0, 0]


# --- the model -----------------------------------------------------------------------------------
class PixelRNN(PixelModel):
    name = "pixelrnn"
    description = "PixelRNN (van den Oord et al. 2016): Row LSTM or Diagonal BiLSTM layers, exact likelihood"
    Config = PixelRNNConfig

    def __init__(self, config: PixelRNNConfig, info: DataInfo):
        super().__init__(config, info)
        c, channels, hidden = info.shape[0], 2 * config.hidden_channels, config.hidden_channels
        self.first = MaskedConv2d(c, channels, FIRST_KERNEL, "A")
        self.label = label_bias(info.num_classes, channels) if config.class_conditional else None
        if config.layer == "row_lstm":
            layers = [RowLSTM(channels, hidden) for _ in range(config.num_layers)]
        else:
            layers = [DiagonalBiLSTM(channels, hidden, c if i == 0 else 0) for i in range(config.num_layers)]
        self.layers = nn.ModuleList(layers)
        self.output = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, config.output_channels, 1), nn.ReLU())
        self.head = PixelOutputHead(config.output_channels, c, self.params_per_dim)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, F, H, W) output features; those at a pixel see only the pixels before it."""
        u = self.first(x)  # (B, 2h, H, W), mask A: strictly earlier pixels
        if self.label is not None:
            u = u + self.label(y)[:, :, None, None]
        for layer in self.layers:
            u = layer(u, x)  # (B, 2h, H, W)
        return self.output(u)  # (B, F, H, W)

    # --- cached sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def cached_features(self, x: Tensor, y: Tensor | None) -> Callable[[int, int], Tensor]:
        """``features_at(row, col)`` -> (B, F): one position of every layer (see the module docstring).

        Must be called for every pixel in raster order; x is read as the sampler fills it in.
        """
        b, width = len(x), self.info.shape[2]
        like = x.new_zeros(()).to(self.first.weight.dtype)
        caches = [layer.new_cache(b, width, like) for layer in self.layers]
        label = self.label(y) if self.label is not None else 0
        p = FIRST_KERNEL // 2
        expected = [0]  # the next pixel, flat

        def features_at(row: int, col: int) -> Tensor:
            if row * width + col != expected[0]:
                raise RuntimeError(f"the cached PixelRNN stepper must see every pixel in raster order: "
                                   f"asked for ({row}, {col}), expected {divmod(expected[0], width)}")
            expected[0] += 1
            image = x.to(like.dtype)
            window = F.pad(image[:, :, max(row - p, 0):row + 1], (p, p, max(p - row, 0), p))  # (B, C, 7, W+6)
            u = self.first.at(window[:, :, :, col:col + FIRST_KERNEL])[:, :, 0, 0] + label  # (B, 2h)
            for layer, cache in zip(self.layers, caches):
                u = layer.step(cache, row, col, u, image)
            return self.output(u[:, :, None, None])[:, :, 0, 0]  # (B, F)

        return features_at
