"""Recipes: registered beside their models, valid for their datasets, moved from the old scripts unchanged."""

from __future__ import annotations

import json

import pytest

from genzoo.cli import main as genzoo
from genzoo.data.registry import dataset_info
from genzoo.models.recipes import Recipe
from genzoo.models.registry import (
    FAMILY_PACKAGES,
    MODELS,
    RECIPES,
    build_model,
    recipe,
    recipes_for,
)
from genzoo.train.flags import parse_train_flags

# Training examples per dataset on this project's machines (the MNIST subset: 9,000 of its 10,000).
TRAIN_EXAMPLES = {"binarized_mnist": 50_000, "mnist": 9_000, "eight-gaussians": 50_000}
# The epochs of the recipes in benchmarks/likelihood_binarized_mnist.py and sample_quality_mnist.py
# (removed when the recipes moved beside the models) and of benchmarks/arena_2d.py (5 epochs).
OLD_EPOCHS = {
    "vae-short": 20, "iwae-short": 4, "pixelcnn-short": 6, "gated-pixelcnn-short": 3, "pixelrnn-short": 1,
    "nade-short": 7, "made-short": 20, "vae-long": 80, "iwae-long": 45, "vae-conv": 100, "iwae-batch20": 36,
    "vae-selected": 1000, "vae-gated-selected": 1000, "vae-gated-cosine": 300, "vae-gated-finetuned": 100,
    "iwae-gated-finetuned": 40, "vae-vamp-cosine": 300, "iwae-vamp-finetuned": 40, "iwae-vamp-gentle": 20,
    "iwae-gated-cosine": 300, "iwae-selected": 1000,
    "dcgan-10ep": 10, "wgan-gp-10ep": 10, "cgan-10ep": 10, "aae-10ep": 10, "vae-conv-10ep": 10, "vae-mlp-10ep": 10,
    "cvae-10ep": 10, "vae-conv-60ep": 60, "vae-conv-60ep-bernoulli": 60, "dcgan-minimax": 10,
    "dcgan-minimax-noise": 10, "dcgan-non-saturating": 10, "dcgan-non-saturating-noise": 10,
    **{f"{model}-arena": 5 for model in ("vae", "iwae", "ae", "gan", "made", "nade")},
    "wgan-gp-arena": 1,  # the README's row: one epoch
}


def test_every_family_registers_its_recipes_under_unique_names():
    listed = [r.name for package in FAMILY_PACKAGES.values() for r in package.RECIPES]
    assert len(listed) == len(set(listed)) == len(RECIPES)
    moved = {r.name for family in ("latent", "adversarial", "autoregressive") for r in FAMILY_PACKAGES[family].RECIPES}
    assert set(OLD_EPOCHS) == moved  # the recipes that moved from the old scripts, and no other


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_builds_its_model_on_each_of_its_datasets(name):
    r = RECIPES[name]
    assert r.model in MODELS and r.description
    for data in r.data:
        given = ["--data", data, *(["--init-from", "RUN"] if r.init_from else [])]
        model_options, config = parse_train_flags(r.model, given, r)
        config.validate()
        assert config.max_steps == r.steps and config.max_minutes == r.max_minutes and config.data == data
        build_model(r.model, dataset_info(data), model_options)
    if r.init_from:
        assert set(r.data) <= set(RECIPES[r.init_from].data)


@pytest.mark.parametrize("name", sorted(OLD_EPOCHS))
def test_the_budget_in_steps_is_the_old_epochs_of_the_old_batch(name):
    r = RECIPES[name]
    data = r.data[0]
    _, config = parse_train_flags(r.model, [*r.train_flags(), "--data", data])
    examples = TRAIN_EXAMPLES[data] - config.holdout
    assert r.steps == OLD_EPOCHS[name] * (examples // config.batch_size)


def test_given_options_override_the_recipe_however_given_and_a_given_budget_replaces_its_budget():
    r = recipe("vae-selected")
    for given in (["--lr", "0.01"], ["--set", "lr=0.01"]):
        _, config = parse_train_flags("vae", given, r)
        assert config.lr == 0.01 and config.max_steps == 400_000 and config.holdout == 10_000
    _, config = parse_train_flags("vae", ["--set", "holdout=0", "--set", "patience=0"], r)
    assert config.holdout == 0 and config.patience == 0
    for given in (["--epochs", "2"], ["--set", "epochs=2"]):
        _, config = parse_train_flags("vae", given, r)
        assert config.epochs == 2 and config.max_steps is None
    model, config = parse_train_flags("vae", ["--set", "max_steps=5", "--latent-dim", "8"], r)
    assert config.max_steps == 5 and model["latent_dim"] == 8 and model["hidden_dim"] == 300
    with pytest.raises(ValueError, match="unknown flag"):  # no abbreviations: --epoch is not --epochs
        parse_train_flags("vae", ["--epoch", "3"], r)


def test_the_train_command_takes_the_recipe_in_either_form_and_refuses_it_on_resume(tmp_path, capsys):
    for form in (["--recipe", "vae-arena"], ["--recipe=vae-arena"]):
        out = tmp_path / form[0]
        assert genzoo(["train", "vae", *form, "--data", "two-moons", "--max-steps", "2", "--hidden-dim", "8",
                       "--eval-metrics", "", "--out", str(out)]) == 0
        saved = json.loads((out / "config.json").read_text())["train"]
        assert saved["lr_schedule"] == "cosine" and saved["max_steps"] == 2
        assert json.loads((out / "metrics.json").read_text())["recipe"] == {"name": "vae-arena", "version": 1}
    assert genzoo(["train", "vae", "--recipe", "vae-arena", "--resume", "--out", str(out)]) == 1
    assert "leave out --recipe" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "nope"], "unknown recipe 'nope'; the recipes of vae: vae-short"),
    (["--recipe", "made-short"], "trains made, not vae"),
    (["--recipe", "vae-short", "--data", "digits"], "is for binarized_mnist, not digits"),
    (["--recipe", "vae-arena"], "choose one with --data"),
    (["--recipe", "vae-short", "--max-steps", "0"], "must be >= 1 (a budget below one step trains nothing)"),
])
def test_a_recipe_that_cannot_run_says_why_in_one_line(argv, message, tmp_path, capsys):
    assert genzoo(["train", "vae", *argv, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="pass --init-from RUN_DIR"):
        parse_train_flags("iwae", ["--data", "binarized_mnist"], recipe("iwae-vamp-gentle"))


def test_a_model_without_a_recipe_for_a_dataset_gets_its_defaults_there():
    assert [r.name for r in recipes_for("vae", "binarized_mnist", "short")] == ["vae-short"]
    default, = recipes_for("pixelcnn", "digits", "short")
    assert default.name == "pixelcnn-default" and default.steps is None and default.train_flags() == []
    with pytest.raises(ValueError, match="unknown recipe set 'long'; one of: short, full"):
        recipes_for("vae", "digits", "long")


@pytest.mark.parametrize("fields, message", [
    ({"steps": 0}, "steps=0 must be >= 1"),
    ({"sets": ("medium",)}, "unknown recipe set"),
    ({"flags": ("--data", "digits")}, "--data belong"),
])
def test_a_malformed_recipe_fails_at_registration(fields, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**{"name": "x", "model": "vae", "data": ("digits",), "steps": 10, **fields})
