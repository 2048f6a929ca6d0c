"""Command-line flags from config dataclasses, for `genzoo train` and for recipes.

Every hyperparameter is a flag generated from the dataclass that defines it (``TrainConfig``
and the model's own config), so ``genzoo train MODEL --help`` lists each one with its default;
``--set name=value`` sets the same fields by their Python names. A recipe's flags are parsed by
the same parser (``parse_train_flags``), so a recipe means exactly what its command line means.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing

from genzoo.data.registry import DATASETS
from genzoo.models.recipes import Recipe
from genzoo.models.registry import MODELS, model_class
from genzoo.train.config import TrainConfig, train_config


def _base_type(hint) -> tuple[type, bool]:
    """(the scalar or tuple type of a hint, whether None is allowed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in args if a is not type(None)), True
    return hint, False


def parse_value(text: str, hint, name: str):
    """Parse a command-line string into a value of a dataclass field's type."""
    base, optional = _base_type(hint)
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(base) is tuple:
            return tuple(typing.get_args(base)[0](v) for v in text.split(","))
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return base(text)
    except ValueError:
        raise ValueError(f"option {name}: cannot read {text!r} as {getattr(base, '__name__', base)}") from None


FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^=]+=[^#]*#\s*(.+)$")


def field_comments(cls) -> dict[str, str]:
    """The end-of-line comment of each field in a config dataclass and its bases: the help text."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                if match := FIELD_COMMENT.match(line):
                    comments[match[1]] = match[2]
    return comments


def dataset_default_epochs() -> str:
    """The registry's default epochs, grouped by value: "digits 100; mnist, ... 20"."""
    by_epochs: dict[int, list[str]] = {}
    for name, spec in DATASETS.items():
        by_epochs.setdefault(spec.default_epochs, []).append(name)
    return "; ".join(f"{', '.join(names)} {epochs}" for epochs, names in sorted(by_epochs.items(), reverse=True))


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, title: str, defaults: dict | None = None) -> None:
    """One flag per field; ``defaults`` overrides the defaults shown (a model's training defaults).

    The help is the field's comment and its default, unless the comment already says the default.
    """
    group = parser.add_argument_group(title)
    hints, comments = typing.get_type_hints(cls), field_comments(cls)
    for f in dataclasses.fields(cls):
        default = (defaults or {}).get(f.name, f.default)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if isinstance(default, dict):  # a model's default by the data's kind
            shown = "; ".join(f"{kind} data {value:g}" for kind, value in default.items())
        base, _ = _base_type(hints[f.name])
        help_text = f"{comments[f.name]} " if f.name in comments else ""
        if cls is TrainConfig and f.name == "epochs" and default is None:  # None: the dataset's, so name them
            help_text, shown = "passes over the training split ", f"the dataset's: {dataset_default_epochs()}"
        suffix = "" if "(default:" in help_text else f"(default: {shown})"
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           metavar=getattr(base, "__name__", "X").upper(), help=f"{help_text}{suffix}".strip())


def collect_options(args: argparse.Namespace, cls, overrides: dict[str, str]) -> dict:
    """Field values given on the command line (flags and --set), parsed to their types."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        text = overrides.pop(f.name, None)
        flag = getattr(args, f.name, None)
        if flag is not None:
            text = flag
        if text is not None:
            values[f.name] = parse_value(text, hints[f.name], f.name)
    return values


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects name=value, got {pair!r}")
        name, value = pair.split("=", 1)
        out[name.strip().replace("-", "_")] = value.strip()
    return out


def add_train_flags(parser: argparse.ArgumentParser, model_name: str | None) -> None:
    """--set, the training options and (for a known model) its options, each with its default."""
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="set any option by name (repeatable)")
    add_dataclass_flags(parser, TrainConfig, "training options",
                        MODELS[model_name].training_defaults if model_name in MODELS else None)
    if model_name in MODELS:
        add_dataclass_flags(parser, MODELS[model_name].Config, f"{model_name} options")


def given_options(model_name: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """(model options, training options) that parsed train flags set, flags and --set alike; unknown names fail."""
    cls = model_class(model_name)
    overrides = parse_sets(args.set or [])
    train = collect_options(args, TrainConfig, overrides)
    model = collect_options(args, cls.Config, overrides)
    if overrides:
        valid = sorted(f.name for f in dataclasses.fields(cls.Config)) + sorted(f.name for f in dataclasses.fields(TrainConfig))
        raise ValueError(f"unknown option(s) {', '.join(sorted(overrides))} for {model_name}; "
                         f"valid options: {', '.join(valid)}")
    return model, train


def parse_given_options(model_name: str, flags: list[str]) -> tuple[dict, dict]:
    """``given_options`` of `genzoo train MODEL FLAGS`, parsed by the train command's own flags."""
    parser = argparse.ArgumentParser(prog=f"genzoo train {model_name}", add_help=False, exit_on_error=False,
                                     allow_abbrev=False)
    add_train_flags(parser, model_name)
    try:
        args, unknown = parser.parse_known_args(flags)
    except argparse.ArgumentError as e:
        raise ValueError(f"genzoo train {model_name}: {e}") from None
    if unknown:
        raise ValueError(f"genzoo train {model_name}: unknown flag(s) {' '.join(unknown)}")
    return given_options(model_name, args)


def with_recipe(recipe: Recipe, model: dict, train: dict) -> tuple[dict, dict]:
    """The recipe's options under the given ones: a given value wins however it was given (flag or --set).

    The data defaults to the recipe's only dataset; the recipe's budget gives way to a given
    ``epochs`` or ``max_steps``; a recipe that starts from another's run needs ``init_from``.
    """
    recipe_model, recipe_train = parse_given_options(recipe.model, recipe.train_flags())
    data = train.get("data")
    if data is None and len(recipe.data) > 1:
        raise ValueError(f"recipe {recipe.name} is for {', '.join(recipe.data)}: choose one with --data")
    if data is not None and data not in recipe.data:
        raise ValueError(f"recipe {recipe.name} is for {', '.join(recipe.data)}, not {data}; "
                         f"train {recipe.model} on {data} without --recipe, or with one of its recipes for {data}")
    if recipe.init_from and not train.get("init_from"):
        raise ValueError(f"recipe {recipe.name} starts from the weights of a run of recipe {recipe.init_from}: "
                         "pass --init-from RUN_DIR")
    if "epochs" in train or "max_steps" in train:
        recipe_train.pop("max_steps", None)
    return {**recipe_model, **model}, {**recipe_train, "data": data or recipe.data[0], **train}


def train_options(model_name: str, args: argparse.Namespace, recipe: Recipe | None = None) -> tuple[dict, TrainConfig]:
    """(the model options given, the training config) from parsed train flags, over ``recipe`` when given."""
    model, train = given_options(model_name, args)
    if recipe is not None:
        model, train = with_recipe(recipe, model, train)
    return model, train_config(model_name, **train)


def parse_train_flags(model_name: str, flags: list[str], recipe: Recipe | None = None) -> tuple[dict, TrainConfig]:
    """What `genzoo train MODEL [--recipe NAME] FLAGS` would train: (model options, training config)."""
    model, train = parse_given_options(model_name, flags)
    if recipe is not None:
        model, train = with_recipe(recipe, model, train)
    return model, train_config(model_name, **train)
