"""Autoregressive models: exact likelihood by the chain rule, one network pass per image."""

from genzoo.models.autoregressive.made import MADE
from genzoo.models.autoregressive.nade import NADE
from genzoo.models.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN
from genzoo.models.autoregressive.pixelrnn import PixelRNN
from genzoo.models.autoregressive.recipes import RECIPES

MODELS = [NADE, MADE, PixelCNN, GatedPixelCNN, PixelRNN]
