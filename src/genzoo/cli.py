"""The ``genzoo`` command: list, train, eval, sample, inpaint.

Every hyperparameter is a flag generated from the dataclass that defines it (``TrainConfig``
and the model's own config), so ``genzoo train MODEL --help`` lists each one with its default;
``--set name=value`` sets the same fields by their Python names.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import time
import types
import typing
from pathlib import Path

from genzoo import checkpoint, figures
from genzoo.data.core import SPLITS
from genzoo.data.registry import dataset_info, list_datasets, load_split
from genzoo.evaluate import completion
from genzoo.evaluate.likelihood import fixed_inputs, format_metrics
from genzoo.evaluate.metrics import METRICS, parse_metrics, run_metrics
from genzoo.models.base import SAMPLING_OPTIONS
from genzoo.models.registry import FAMILIES, MODELS, load_run, model_class
from genzoo.train.config import TrainConfig, train_config
from genzoo.train.loop import Trainer, TrainingDiverged
from genzoo.train.state import OutputExists

TRAIN_EVAL_DRAWS = 100  # draws per example of an estimated test NLL after training (at most the model's default)
METRICS_HELP = "; ".join(f"{kind} data: {','.join(names)}" for kind, names in METRICS.items())


# --- flags from dataclass fields ---------------------------------------------------------------
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
    from genzoo.data.registry import DATASETS

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


# --- commands ----------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> None:
    for family, classes in FAMILIES.items():
        print(f"{family} models:")
        for cls in classes:
            print(f"  {cls.name:<16} {cls.description}")
    print("datasets:")
    for kind in ("image", "vector"):
        for name, description in list_datasets():
            if dataset_info(name).kind == kind:
                print(f"  {name:<16} {kind:<7} {description}")


def cmd_train(args: argparse.Namespace) -> None:
    cls = model_class(args.model)
    overrides = parse_sets(args.set or [])
    train_options = collect_options(args, TrainConfig, overrides)
    model_options = collect_options(args, cls.Config, overrides)
    if overrides:
        valid = sorted(f.name for f in dataclasses.fields(cls.Config)) + sorted(f.name for f in dataclasses.fields(TrainConfig))
        raise ValueError(f"unknown option(s) {', '.join(sorted(overrides))} for {args.model}; "
                         f"valid options: {', '.join(valid)}")
    config = train_config(args.model, **train_options)
    out = Path(args.out or f"runs/{args.model}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume and model_options:
        raise ValueError("--resume continues the saved configuration; model options cannot change")
    eval_metrics = parse_metrics(args.eval_metrics, dataset_info(config.data))
    trainer = Trainer(args.model, model_options, config, out, resume=args.resume,
                      callbacks=[figures.SamplesOverTraining()])
    summary = trainer.fit()
    if trainer.is_main:
        report_run(trainer, summary, args.eval_draws, eval_metrics)


def sampling_options(args: argparse.Namespace) -> dict:
    """--sampler and the SAMPLING_OPTIONS given on the command line (None: the model's default)."""
    return {"sampler": args.sampler, **{name: getattr(args, name) for name in SAMPLING_OPTIONS}}


def report_run(trainer: Trainer, summary: dict, draws: int | None, eval_metrics: list[str]) -> None:
    """After training: metrics on the test split, pictures, and a short summary."""
    model, out = trainer.final_model.eval(), trainer.out
    info, test = load_split(trainer.config.data, "test", trainer.config.data_root)
    metrics = {"model": trainer.model_name, "data": trainer.config.data, "train_steps": summary["steps"],
               "train_epochs": summary["epochs"], "train_seconds": summary["seconds"],
               "final_train_terms": summary["last"], "training_warnings": summary["warnings"]}
    if "selection" in summary:  # the weights evaluated below are the held-out best, not the last
        metrics["selection"] = summary["selection"]
    if draws == 0:
        eval_metrics = [m for m in eval_metrics if m != "nll"]
    draws = min(TRAIN_EVAL_DRAWS, model.eval_defaults.draws) if draws is None else draws
    metrics.update(run_metrics(model, test, info, eval_metrics, draws))
    checkpoint.write_json(out / "metrics.json", metrics)
    if info.kind == "vector":
        written = figures.write_arena_figures(model, test.images, out)
    else:
        x, split, _ = fixed_inputs(test, info, model.input_kind, limit=32)
        written = figures.write_run_figures(model, x.to(model.device),
                                            None if split.labels is None else split.labels.to(model.device), out)
    curves = figures.save_loss_curves(out / "log.csv", out / "loss_curves.png")
    progress = figures.save_samples_over_training(out, out / "samples_over_training.png")
    written += [progress] if progress else []
    print(f"trained {trainer.model_name} on {trainer.config.data}: {summary['steps']} steps "
          f"({summary['epochs']:.1f} epochs) -> {out}")
    if "selection" in summary:
        best = summary["selection"]
        print(f"selected the weights of step {best['best_step']} (epoch {best['best_epoch']:.1f}): best held-out "
              f"score {best['best_nats']:.2f} nats on {best['holdout']:,} held-out training examples")
    if eval_metrics:
        print(format_metrics(metrics))
    print("wrote: " + ", ".join(p.name for p in [*written, *([curves] if curves else [])]) + ", metrics.json")


def cmd_eval(args: argparse.Namespace) -> None:
    model, config = load_run(Path(args.run_dir))
    data_root = args.data_root or config["train"].get("data_root")
    info, split = load_split(config["data"]["name"], args.split, data_root)
    if model.conditional and split.labels is None:
        raise ValueError(f"{config['model']} is conditional and the {args.split} split has no labels")
    metrics = run_metrics(model, split, info, parse_metrics(args.metrics, info), args.draws,
                          batch_size=args.batch_size, seed=args.seed, limit=args.limit, estimator=args.estimator,
                          sampling=sampling_options(args))
    metrics["run_dir"] = str(args.run_dir)
    name = f"eval_{args.split}{'' if args.limit is None else f'_limit{args.limit}'}.json"
    checkpoint.write_json(Path(args.run_dir) / name, metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_metrics(metrics))


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    model, _ = load_run(Path(args.run_dir))
    labels = None
    if args.label is not None:
        if not model.conditional:
            raise ValueError(f"--label needs a conditional model; {model.name} is unconditional")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
    elif model.conditional:
        labels = torch.arange(args.n) % model.info.num_classes
    generator = torch.Generator().manual_seed(args.seed)
    options = sampling_options(args)
    spec = model.sampler_spec(options["sampler"])  # an unknown sampler fails here, listing the model's
    start = time.perf_counter()
    samples = model.generate(args.n, labels, generator, **options)
    seconds = time.perf_counter() - start
    out = Path(args.out or Path(args.run_dir) / f"samples_seed{args.seed}.png")
    if model.info.kind == "vector":
        figures.save_points(samples, out, model.info.name)
    else:
        figures.save_image_grid(samples, out, nrow=int(max(1, round(args.n**0.5))))
    given = "".join(f", {name} {value}" for name, value in options.items() if value is not None and name != "sampler")
    print(f"wrote {args.n} samples to {out} ({seconds:.2f} s with the {spec.name} sampler{given})")


def cmd_inpaint(args: argparse.Namespace) -> None:

    model, config = load_run(Path(args.run_dir))
    completion.check_can_inpaint(model)  # before loading any data
    data_root = args.data_root or config["train"].get("data_root")
    info, split = load_split(config["data"]["name"], args.split, data_root)
    if not 0 <= args.image_index < len(split):
        raise ValueError(f"--image-index {args.image_index} is out of range: the {args.split} split has "
                         f"{len(split)} images (0..{len(split) - 1})")
    x, split, _ = fixed_inputs(split, info, model.input_kind)
    label = None if split.labels is None else int(split.labels[args.image_index])
    observed = completion.parse_mask(args.mask, *info.shape[1:], seed=args.seed)
    result = completion.inpaint(model, x[args.image_index], observed, args.n, label, args.seed, args.sampler)
    out = Path(args.out or Path(args.run_dir) / f"inpaint_{args.split}{args.image_index}_{args.mask.replace(':', '')}.png")
    figures.save_inpainting(x[args.image_index].cpu(), result["masked"], result["completions"], out)
    report = {"run_dir": str(args.run_dir), "split": args.split, "image_index": args.image_index, "mask": args.mask,
              "n": args.n, "hidden_dims": result["hidden_pixels"],
              "conditional_nll_nats": result["conditional_nll_nats"], "conditional_exact": result["conditional_exact"],
              "out": str(out)}
    if args.json:
        print(json.dumps(report))
        return
    exactness = ("exact: every observed pixel precedes every hidden one in the model's order"
                 if result["conditional_exact"] else
                 "not exact: some hidden pixels precede observed ones in the model's order, so each hidden "
                 "pixel conditions only on the observed pixels before it")
    print(f"-log p(hidden | observed) = {result['conditional_nll_nats']:.2f} nats over "
          f"{result['hidden_pixels']} hidden dimensions ({exactness})")
    print(f"wrote the image, its observed pixels and {args.n} completions to {out}")


# --- parser ------------------------------------------------------------------------------------
def add_sampling_flags(parser: argparse.ArgumentParser, purpose: str) -> None:
    """--sampler and one flag per SAMPLING_OPTIONS; a model refuses by name what its sampler lacks."""
    parser.add_argument("--sampler", help=f"how the model generates {purpose}; one of the model's samplers: "
                                          "autoregressive models 'cached' (default) or 'naive', other models "
                                          "'ancestral' (default: the model's declared default)")
    parser.add_argument("--steps", type=int, help="sampling steps, for samplers that take them")
    parser.add_argument("--temperature", type=float, help="sampling temperature, for samplers that take one")
    parser.add_argument("--guidance", type=float, help="guidance weight, for samplers that take one")


def build_parser(model_name: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genzoo", description="Deep generative models side by side.")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="list models and datasets").set_defaults(run=cmd_list)

    train = commands.add_parser("train", help="train a model", description=(
        "Train MODEL and write weights, metrics and pictures to --out. Options are listed below with "
        "their defaults; --set name=value sets any of them by name."))
    train.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(sorted(MODELS))}")
    train.add_argument("--out", help="run directory (default: runs/MODEL-DATA-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--set", action="append", metavar="NAME=VALUE", help="set any option by name (repeatable)")
    train.add_argument("--eval-draws", "--eval-iw-samples", dest="eval_draws", type=int,
                       help=f"draws per example of an estimated test NLL after training (importance samples "
                            f"of a VAE's bound); 0 skips the NLL (default: {TRAIN_EVAL_DRAWS}, or the model's "
                            "default when smaller)")
    train.add_argument("--eval-metrics",
                       help=f"metrics on the test split after training; '' skips them (default: all for the "
                            f"data's kind: {METRICS_HELP})")
    add_dataclass_flags(train, TrainConfig, "training options",
                        MODELS[model_name].training_defaults if model_name in MODELS else None)
    if model_name in MODELS:
        add_dataclass_flags(train, MODELS[model_name].Config, f"{model_name} options")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a trained run")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--data-root", help="data directory (default: the one the run was trained with)")
    evaluate.add_argument("--draws", "--iw-samples", dest="draws", type=int,
                          help="draws per example of an estimated likelihood: importance samples of a VAE's "
                               "bound (default: the model's, e.g. 1000 for the VAE family; exact likelihoods "
                               "take none)")
    evaluate.add_argument("--estimator", help="the likelihood estimator, among the model's (default: its first)")
    evaluate.add_argument("--metrics", help=f"comma-separated (default: all for the data's kind: {METRICS_HELP})")
    add_sampling_flags(evaluate, "for the sample metrics")
    evaluate.add_argument("--limit", type=int, help="evaluate a fixed random subset of this many examples")
    evaluate.add_argument("--batch-size", type=int, default=100)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.set_defaults(run=cmd_eval)

    sample = commands.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--label", type=int, help="class label for conditional models")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", help="PNG file (default: RUN_DIR/samples_seedS.png)")
    add_sampling_flags(sample, "")
    sample.set_defaults(run=cmd_sample)

    inpaint = commands.add_parser("inpaint", help="fill in hidden pixels of a data image (autoregressive models)")
    inpaint.add_argument("run_dir", metavar="RUN_DIR")
    inpaint.add_argument("--image-index", type=int, default=0, help="which image of the split (default: 0)")
    inpaint.add_argument("--mask", default="bottom-half", help=f"{completion.MASK_HELP} (default: bottom-half)")
    inpaint.add_argument("--n", type=int, default=8, help="completions to draw (default: 8)")
    inpaint.add_argument("--split", default="test", choices=SPLITS)
    inpaint.add_argument("--data-root", help="data directory (default: the one the run was trained with)")
    inpaint.add_argument("--seed", type=int, default=0, help="seeds the completions and a random mask")
    inpaint.add_argument("--sampler", help="'cached' or 'naive' (default: the model's first)")
    inpaint.add_argument("--out", help="PNG file: the image, its observed pixels, then the completions")
    inpaint.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    inpaint.set_defaults(run=cmd_inpaint)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    model_name = argv[1] if len(argv) > 1 and argv[0] == "train" else None
    args = build_parser(model_name).parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, OutputExists, TrainingDiverged, checkpoint.CheckpointError) as e:
        print(f"genzoo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genzoo: interrupted; the last checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
