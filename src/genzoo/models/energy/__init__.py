"""Energy-based models: p(x) = exp(-E(x)) / Z, with the partition function Z enumerated or estimated."""

from genzoo.models.energy.ebm import EBM
from genzoo.models.energy.rbm import RBM
from genzoo.models.energy.recipes import RECIPES

MODELS = [RBM, EBM]
