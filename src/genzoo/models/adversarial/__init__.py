"""Adversarial models: GANs with MLP and convolutional players, conditional and Wasserstein variants."""

from genzoo.models.adversarial.cgan import CGAN
from genzoo.models.adversarial.dcgan import DCGAN
from genzoo.models.adversarial.gan import GAN
from genzoo.models.adversarial.wgan_gp import WGANGP
from genzoo.models.adversarial.recipes import RECIPES

MODELS = [GAN, DCGAN, CGAN, WGANGP]
