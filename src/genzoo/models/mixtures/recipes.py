"""Recipes of the mixtures family (``genzoo.models.recipes``): EM runs to its own convergence, so no step budget."""

from genzoo.data.toy2d import TOY2D
from genzoo.models.recipes import Recipe

ARENA = tuple(TOY2D)

RECIPES = [
    Recipe("gmm-arena", "gmm", ARENA, None, ("--set", "components=8"), "K = 8, full covariances, k-means++",
           sets=("short",)),
]
