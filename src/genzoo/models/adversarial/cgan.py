"""Class-conditional GAN.

Mirza & Osindero, "Conditional Generative Adversarial Nets", 2014 (arXiv:1411.1784): both players
see the class label y, G(z, y) and D(x, y), and the game is played for p(x | y).

Here as a conditional DCGAN (see ``dcgan``): G concatenates a learned label embedding to z, and D
is the projection discriminator of Miyato & Koyama, "cGANs with Projection Discriminator", 2018
(arXiv:1802.05637), logit = psi(phi(x)) + embed(y) . phi(x), rather than the paper's label input
to both MLPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from genzoo.data.core import DataInfo
from genzoo.models.adversarial.dcgan import DCGAN, DCGANConfig
from genzoo.models.base import check_images, check_labelled


@dataclass
class CGANConfig(DCGANConfig):
    def validate(self, info: DataInfo) -> None:
        super().validate(info)
        check_labelled(info, "cgan")

    def validate_data(self, info: DataInfo) -> None:
        check_images(info, "cgan", "gan or wgan-gp (unconditional)")
        super().validate_data(info)


class CGAN(DCGAN):
    name = "cgan"
    description = "Conditional DCGAN (Mirza & Osindero 2014): label embedding in G, projection discriminator"
    Config = CGANConfig

    @property
    def conditional(self) -> bool:
        return True
