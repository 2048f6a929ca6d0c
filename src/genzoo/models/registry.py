"""The model registry: every genzoo model by its command-line name, and every recipe by its name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from genzoo import checkpoint
from genzoo.data.core import DataInfo
from genzoo.models import (
    adversarial,
    autoregressive,
    diffusion,
    energy,
    flows,
    latent,
    mixtures,
)
from genzoo.models.base import GenerativeModel, ModelConfig
from genzoo.models.recipes import RECIPE_SETS, Recipe, default_recipe

# One line per family: a new family is a folder under models/ (its MODELS and RECIPES) and a line here.
FAMILY_PACKAGES = {
    "latent": latent,
    "adversarial": adversarial,
    "autoregressive": autoregressive,
    "flows": flows,
    "diffusion": diffusion,
    "mixtures": mixtures,
    "energy": energy,
}
FAMILIES: dict[str, list[type[GenerativeModel]]] = {name: package.MODELS for name, package in FAMILY_PACKAGES.items()}
MODEL_CLASSES: list[type[GenerativeModel]] = [cls for classes in FAMILIES.values() for cls in classes]
MODELS: dict[str, type[GenerativeModel]] = {cls.name: cls for cls in MODEL_CLASSES}
MODEL_FAMILY: dict[str, str] = {cls.name: family for family, classes in FAMILIES.items() for cls in classes}
RECIPES: dict[str, Recipe] = {r.name: r for package in FAMILY_PACKAGES.values() for r in package.RECIPES}


def model_class(name: str) -> type[GenerativeModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def recipe(name: str, model: str | None = None) -> Recipe:
    """The registered recipe ``name`` (of ``model``, when given); an unknown name lists the valid ones."""
    if name not in RECIPES:
        of = [r for r in RECIPES.values() if model is None or r.model == model]
        raise ValueError(f"unknown recipe {name!r}; {'the recipes of ' + model if model else 'recipes'}: "
                         f"{', '.join(r.name for r in of) or 'none'} (genzoo list --recipes)")
    found = RECIPES[name]
    if model is not None and found.model != model:
        raise ValueError(f"recipe {name!r} trains {found.model}, not {model}: genzoo train {found.model} --recipe {name}")
    return found


def recipes_for(model: str, data: str, recipe_set: str) -> list[Recipe]:
    """The recipes of ``model`` on ``data`` in ``recipe_set``, or the model's defaults there when it has none."""
    if recipe_set not in RECIPE_SETS:
        raise ValueError(f"unknown recipe set {recipe_set!r}; one of: {', '.join(RECIPE_SETS)}")
    found = [r for r in RECIPES.values() if r.model == model and data in r.data and recipe_set in r.sets]
    return found or [default_recipe(model, data)]


def build_model(name: str, info: DataInfo, config: ModelConfig | dict | None = None) -> GenerativeModel:
    """Build model ``name`` for data ``info`` from a config object, a dict of field values, or defaults."""
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = config_from_dict(cls.Config, config or {})
    return cls(config, info)


def config_from_dict(config_cls: type[ModelConfig], values: dict) -> ModelConfig:
    """A config from a dict (a saved config.json or command-line overrides); unknown keys fail loudly."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {config_cls.__name__}; "
                         f"valid options: {', '.join(sorted(known))}")
    return config_cls(**values)


def load_run(run_dir: Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from its run directory: (model in eval mode, run config dict)."""
    config = checkpoint.read_run_config(run_dir)
    try:
        model = build_model(config["model"], DataInfo.from_dict(config["data"]), config["model_config"])
    except (ValueError, TypeError, KeyError) as e:
        path = Path(run_dir) / checkpoint.CONFIG_FILE
        raise checkpoint.CheckpointError(f"{path} cannot rebuild its model: {e}") from None
    path = Path(run_dir) / checkpoint.MODEL_FILE
    tensors, _ = checkpoint.read_tensors(path)
    # an older run's weights may hold a buffer no longer saved with them (an RBM's chains, now training state)
    unsaved = set(dict(model.named_buffers())) - set(model.state_dict())
    tensors = {name: value for name, value in tensors.items() if name not in unsaved}
    what = f"model {config['model']!r} as configured in {checkpoint.CONFIG_FILE}"
    checkpoint.load_state_dict_checked(model, tensors, path, what)
    return model.to(device, memory_format=model.info.memory_format).eval(), config
