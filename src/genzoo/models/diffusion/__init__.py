"""Diffusion models: a noise process, a denoising network and samplers, with a variational bound on -log p(x)."""

from genzoo.models.diffusion.d3pm import D3PM
from genzoo.models.diffusion.ddpm import DDPM
from genzoo.models.diffusion.recipes import RECIPES

MODELS = [DDPM, D3PM]
