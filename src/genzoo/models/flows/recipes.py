"""Recipes of the flow family (``genzoo.models.recipes``)."""

from genzoo.models.recipes import Recipe

RECIPES: list[Recipe] = []
