"""Latent-variable models: autoencoders, VAEs and their variants, adversarial autoencoders."""

from genzoo.models.latent.aae import AdversarialAutoencoder
from genzoo.models.latent.ae import AutoEncoder
from genzoo.models.latent.avb import AVB
from genzoo.models.latent.cvae import CVAE
from genzoo.models.latent.dvae import DVAE
from genzoo.models.latent.iwae import IWAE
from genzoo.models.latent.vae import VAE
from genzoo.models.latent.recipes import RECIPES

MODELS = [AutoEncoder, VAE, CVAE, DVAE, IWAE, AdversarialAutoencoder, AVB]
