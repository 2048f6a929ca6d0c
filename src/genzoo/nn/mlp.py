"""Plain networks: tensors in, tensors out. The probabilistic models take them as parts.

- ``mlp``: a multilayer perceptron builder.
- ``ImageEncoder``: (B, C, H, W) [+ (B, c) conditioning] -> (B, out_dim).
- ``ImageDecoder``: (B, in_dim) -> (B, P*C, H, W), P output parameters per pixel.

Both come as ``"mlp"`` or ``"conv"``. The convolutional pair halves the resolution twice with
stride-2 4x4 convolutions (28 -> 14 -> 7, 8 -> 4 -> 2) and mirrors it with transposed ones, so it
fits any image whose height and width are multiples of 4 (MNIST and the 8x8 digits).

GAN players: ``MLPGenerator``/``MLPDiscriminator`` and the DCGAN pair (``DCGANGenerator``,
``DCGANDiscriminator``, optionally class-conditional), and ``spectral_normalize``.
"""

from __future__ import annotations

from torch import nn

ARCHITECTURES = ("mlp", "conv")
# Hidden units of the MLPs by name. "gated" is the gated linear unit h = (W x + b) * sigmoid(V x + c)
# (Dauphin et al. 2017), the hidden layer of Tomczak & Welling's VampPrior VAEs: nn.GLU halves a
# linear layer of twice the width.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gated": nn.GLU}


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    widen = 2 if activation is nn.GLU else 1  # GLU's input: the values and their gates
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2
        layers.append(nn.Linear(n_in, widen * n_out if hidden else n_out))
        if hidden:
            layers.append(activation())
    return nn.Sequential(*layers)


