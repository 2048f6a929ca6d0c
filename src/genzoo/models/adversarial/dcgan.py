"""Deep convolutional GAN.

Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", 2016 (arXiv:1511.06434). The game and the options are those of ``gan``;
the players follow the paper's architecture rules: strided convolutions in D and fractionally
strided ones in G instead of pooling, batch norm in both (not on G's output nor D's input), ReLU
in G with a tanh output, LeakyReLU(0.2) in D, weights initialised N(0, 0.02).

Deviation: the networks are sized for 28x28 and 8x8 images (any size divisible by 4), with one
fully connected hidden layer in each player as in the MNIST DCGAN of Chen et al. 2016 (InfoGAN,
arXiv:1606.03657): G: z -> hidden_dim -> (2ch, H/4, W/4) -> (ch, H/2, W/2) -> (C, H, W);
D mirrors it and ends in a linear logit.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from genzoo.data.core import DataInfo
from genzoo.models.adversarial.gan import GAN, GANConfig
from genzoo.models.base import check_choice, check_images, check_positive
from genzoo.nn.players import (
    NORMS,
    DCGANDiscriminator,
    DCGANGenerator,
    check_dcgan_shape,
)


@dataclass
class DCGANConfig(GANConfig):
    hidden_dim: int = 1024  # width of the fully connected hidden layer of G and of D's feature layer
    channels: int = 64  # channels of the convolution next to the image (2x that at 1/4 resolution)
    d_norm: str = "batch"  # normalisation in D's hidden layers: "batch" | "layer" | "none"

    def validate(self, info: DataInfo) -> None:
        self.validate_data(info)
        super().validate(info)
        check_positive(self, "channels")
        check_choice(self, "d_norm", NORMS)

    def validate_data(self, info: DataInfo) -> None:
        """The convolutional players need images whose height and width are multiples of 4."""
        check_images(info, "dcgan", "gan or wgan-gp")
        check_dcgan_shape(info.shape)


class DCGAN(GAN):
    name = "dcgan"
    description = "DCGAN (Radford et al. 2016): strided (transposed) convolutions, batch norm, for 28x28 and 8x8"
    Config = DCGANConfig

    def networks(self, config: DCGANConfig, info: DataInfo) -> tuple[nn.Module, nn.Module]:
        num_classes = info.num_classes if self.conditional else 0
        return (DCGANGenerator(config.latent_dim, info.shape, config.hidden_dim, config.channels, num_classes),
                DCGANDiscriminator(info.shape, config.hidden_dim, config.channels, num_classes, config.d_norm))
