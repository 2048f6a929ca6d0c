"""The ``genzoo`` command: list, train, eval, sample, inpaint, bench, report, app.

Every hyperparameter is a flag generated from the dataclass that defines it
(``genzoo.train.flags``), so ``genzoo train MODEL --help`` lists each one with its default;
``--recipe NAME`` stands for a registered recipe's options and budget, which options given beside it
(flags or ``--set``) override.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from genzoo import checkpoint, figures
from genzoo.bench.records import RESULTS_FILE, append_record, import_run, read_results
from genzoo.bench.runner import run_bench
from genzoo.bench.tables import VIEWS, regenerate_readme, render
from genzoo.checkpoint import METRICS_FILE, REPORT_FILE, eval_file
from genzoo.data.core import SPLITS
from genzoo.data.registry import dataset_info, list_datasets, load_split
from genzoo.evaluate import completion
from genzoo.evaluate.likelihood import fixed_inputs, format_metrics
from genzoo.evaluate.metrics import METRICS, parse_metrics, run_metrics
from genzoo.models.base import SAMPLING_OPTIONS
from genzoo.models.recipes import RECIPE_SETS
from genzoo.models.registry import FAMILIES, MODELS, RECIPES, load_run, recipe
from genzoo.runs import TRAIN_EVAL_DRAWS, train_run
from genzoo.train.flags import add_train_flags, train_options
from genzoo.train.loop import TrainingDiverged
from genzoo.train.state import OutputExists
from genzoo.window.report import write_report

METRICS_HELP = "; ".join(f"{kind} data: {','.join(names)}" for kind, names in METRICS.items())


# --- commands ----------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> None:
    if args.recipes:
        for r in RECIPES.values():
            budget = ("EM to its tol" if MODELS[r.model].training_mode == "closed_form" else "defaults") \
                if r.steps is None else f"{r.steps:,} steps"
            sets = f" [{', '.join(r.sets)}]" if r.sets else ""
            print(f"  {r.name:<28} {r.model:<15} {','.join(r.data):<20} {budget:>15}{sets}  {r.description}")
        return
    for family, classes in FAMILIES.items():
        print(f"{family} models:")
        for cls in classes:
            print(f"  {cls.name:<16} {cls.description}")
    print("datasets:")
    for kind in ("image", "vector"):
        for name, description in list_datasets():
            if dataset_info(name).kind == kind:
                print(f"  {name:<16} {kind:<7} {description}")
    print(f"recipes: {len(RECIPES)} (genzoo list --recipes)")


def cmd_train(args: argparse.Namespace) -> None:
    found = recipe(args.recipe, args.model) if args.recipe else None
    if args.resume and found:
        raise ValueError("--resume continues the run's saved configuration, its recipe included: leave out --recipe")
    model_options, config = train_options(args.model, args, found)
    out = Path(args.out or f"runs/{args.model}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume and model_options:
        raise ValueError("--resume continues the saved configuration; model options cannot change")
    eval_metrics = parse_metrics(args.eval_metrics, dataset_info(config.data))
    if train_run(args.model, model_options, config, out, resume=args.resume, draws=args.eval_draws,
                 eval_metrics=eval_metrics, recipe=found):  # {} on processes other than the main one
        print(f"report: {write_report([out], out / REPORT_FILE)} (every figure and metric on one page)")


def sampling_options(args: argparse.Namespace) -> dict:
    """--sampler and the SAMPLING_OPTIONS given on the command line (None: the model's default)."""
    return {"sampler": args.sampler, **{name: getattr(args, name) for name in SAMPLING_OPTIONS}}


def cmd_eval(args: argparse.Namespace) -> None:
    model, config = load_run(Path(args.run_dir))
    data_root = args.data_root or config["train"].get("data_root")
    info, split = load_split(config["data"]["name"], args.split, data_root)
    if model.conditional and split.labels is None:
        raise ValueError(f"{config['model']} is conditional and the {args.split} split has no labels")
    metrics = run_metrics(model, split, info, parse_metrics(args.metrics, info), args.draws,
                          batch_size=args.batch_size, seed=args.seed, limit=args.limit, estimator=args.estimator,
                          sampling=sampling_options(args))
    metrics.update(run_dir=str(args.run_dir), seed=args.seed)
    checkpoint.write_json(Path(args.run_dir) / eval_file(args.split, args.limit), metrics)
    if (Path(args.run_dir) / REPORT_FILE).exists():  # the run's page shows every evaluation: this one too
        write_report([args.run_dir], Path(args.run_dir) / REPORT_FILE)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_metrics(metrics))


def cmd_sample(args: argparse.Namespace) -> None:
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


def cmd_compare(args: argparse.Namespace) -> None:
    models = [load_run(Path(run))[0] for run in args.run_dirs]
    datasets = sorted({m.info.name for m in models})
    if len(datasets) > 1 or models[0].info.kind != "vector":
        raise ValueError(f"genzoo compare draws runs of one 2-D dataset side by side; these are of {', '.join(datasets)}"
                         + ("" if models[0].info.kind == "vector" else ": for images compare each run's samples.png"))
    titles = [f"{m.name} ({Path(run).name})" if [x.name for x in models].count(m.name) > 1 else m.name
              for m, run in zip(models, args.run_dirs)]
    out = figures.save_arena_comparison(models, titles, args.out, args.seed)
    print(f"wrote {out}: the true density, then each run's density and samples")


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
    print(completion.conditional_nll_text(result, model.name, args.sampler))
    print(f"wrote the image, its observed pixels and {args.n} completions to {out}")


def cmd_bench(args: argparse.Namespace) -> None:
    if args.data is None:
        raise ValueError("genzoo bench needs --data DATASET (genzoo list shows them), or a subcommand: import, "
                         "table, readme")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "genzoo " + " ".join(shlex.quote(a) for a in args.argv)
    new = run_bench(args.data, args.models, args.recipe_set, names(args.recipes), args.max_steps, args.out,
                    args.data_root, args.eval_minutes, args.seed, command)
    out = Path(args.out)
    records = read_results(out / RESULTS_FILE)
    print(render(records, data=[args.data]))
    for run_dir in bench_run_dirs(new, args.data):  # as `genzoo train` leaves it: the run's own page
        write_report([run_dir], run_dir / REPORT_FILE)
    if run_dirs := bench_run_dirs(records, args.data):
        print(f"report: {write_report(run_dirs, out / REPORT_FILE, bench=out)} (the bench's runs side by side)")


def bench_run_dirs(records: list[dict], data: str) -> list[Path]:
    """The run directories of ``records``' finished runs on ``data`` that are still on disk, once each."""
    dirs = [Path(r["provenance"]["run_dir"]) for r in records
            if r["status"] == "ok" and r["dataset"] == data and "run_dir" in r.get("provenance", {})]
    return [d for d in dict.fromkeys(dirs) if (d / METRICS_FILE).is_file()]


def cmd_bench_import(args: argparse.Namespace) -> None:
    found = recipe(args.recipe) if args.recipe else None
    results = Path(args.out) / RESULTS_FILE
    if results.exists():
        read_results(results)  # a file of another schema or a malformed line fails before anything is added
    for run_dir in args.run_dirs:
        record = import_run(run_dir, found)
        append_record(results, record)
        print(f"imported {run_dir} ({record['model']} on {record['dataset']}, from "
              f"{record['provenance']['evaluation_file']}) into {results}")


def add_table_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="a results.jsonl file")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv"))
    parser.add_argument("--view", choices=VIEWS, help="markdown columns (default: arena for 2-D data, else overview)")
    for name, what in (("data", "datasets"), ("family", "families"), ("models", "models"),
                       ("recipes", "recipes, in this order")):
        parser.add_argument(f"--{name}", help=f"only these {what} (comma-separated)")
    parser.add_argument("--sort", help="rank by this metric (e.g. nll_nats, fd); marks keep the kinds apart")


def names(text: str | None) -> list[str] | None:
    """"a, b" -> ["a", "b"]; None or "" -> None."""
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def table_text(args: argparse.Namespace, base: Path = Path(".")) -> str:
    records = read_results(base / args.results)
    return render(records, args.format, args.view, data=names(args.data), families=names(args.family),
                  models=names(args.models), recipes=names(args.recipes), sort=args.sort)


def render_table_command(arguments: list[str], base: Path) -> str:
    """One `genzoo bench table ARGUMENTS` (paths relative to ``base``), as a README block holds it."""
    parser = argparse.ArgumentParser(prog="genzoo bench table", exit_on_error=False)
    add_table_flags(parser)
    return table_text(parser.parse_args(arguments), base)


def cmd_bench_table(args: argparse.Namespace) -> None:
    print(table_text(args), end="" if args.format == "csv" else "\n")


def cmd_bench_readme(args: argparse.Namespace) -> None:
    text, changed = regenerate_readme(args.readme, render_table_command)
    if not changed:
        print(f"{args.readme}: every generated table agrees with its command")
    elif args.check:
        raise ValueError(f"{args.readme}: the generated tables at line(s) {', '.join(map(str, changed))} disagree "
                         f"with their results; run `genzoo bench readme {args.readme}`")
    else:
        Path(args.readme).write_text(text)
        print(f"{args.readme}: rewrote the generated tables at line(s) {', '.join(map(str, changed))}")


def cmd_report(args: argparse.Namespace) -> None:
    out = Path(args.out or Path(args.run_dirs[0]) / REPORT_FILE)
    write_report(args.run_dirs, out, bench=args.bench)
    print(f"wrote {out} ({len(args.run_dirs)} run{'s' if len(args.run_dirs) > 1 else ''}; one file, no network needed)")


def cmd_app(args: argparse.Namespace) -> None:
    try:
        from genzoo.window.app import serve
    except ModuleNotFoundError as e:
        raise ValueError(f"genzoo app needs {e.name}, which is not installed: pip install 'genzoo[app]'") from None
    serve(args.run_dirs, bench=args.bench, port=args.port, host=args.host, share=args.share)


# --- parser ------------------------------------------------------------------------------------
def add_sampling_flags(parser: argparse.ArgumentParser, purpose: str) -> None:
    """--sampler and one flag per SAMPLING_OPTIONS; a model refuses by name what its sampler lacks."""
    parser.add_argument("--sampler", help=f"how the model generates {purpose}; one of the model's samplers: "
                                          "autoregressive models 'cached' (default) or 'naive'; ddpm 'ddim' "
                                          "(default), 'dpm-solver' or 'ddpm'; rbm 'gibbs'; ebm 'langevin' or, for a "
                                          "noise-conditional energy, 'ancestral' (its default) or 'pc' "
                                          "(predictor-corrector); other models 'ancestral'")
    parser.add_argument("--steps", type=int, help="sampling steps, for samplers that take them")
    parser.add_argument("--temperature", type=float, help="sampling temperature, for samplers that take one")
    parser.add_argument("--guidance", type=float,
                        help="classifier-free guidance weight w of a class-conditional diffusion model: "
                             "eps = (1 + w) eps(x, y) - w eps(x) (Ho & Salimans 2022); w = 0 is plain conditional "
                             "sampling; diffusers' guidance_scale is w + 1")
    parser.add_argument("--eta", type=float, help="DDIM's eta: 0 deterministic (default), 1 DDPM's variance")


def build_parser(model_name: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genzoo", description="Deep generative models side by side.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list models and datasets (--recipes: the recipes)")
    listing.add_argument("--recipes", action="store_true", help="list the registered recipes instead")
    listing.set_defaults(run=cmd_list)

    train = commands.add_parser("train", help="train a model", allow_abbrev=False, description=(
        "Train MODEL and write weights, metrics and pictures to --out. Options are listed below with "
        "their defaults; --set name=value sets any of them by name."))
    train.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(sorted(MODELS))}")
    train.add_argument("--out", help="run directory (default: runs/MODEL-DATA-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--recipe", help="a registered recipe of MODEL (genzoo list --recipes): its flags and budget, "
                                        "which flags given here override")
    train.add_argument("--eval-draws", "--eval-iw-samples", dest="eval_draws", type=int,
                       help=f"draws per example of an estimated test NLL after training (importance samples "
                            f"of a VAE's bound); 0 skips the NLL (default: {TRAIN_EVAL_DRAWS}, or the model's "
                            "default when smaller)")
    train.add_argument("--eval-metrics",
                       help=f"metrics on the test split after training; '' skips them (default: all for the "
                            f"data's kind: {METRICS_HELP})")
    add_train_flags(train, model_name)
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

    compare = commands.add_parser("compare", help="several runs of one 2-D dataset side by side: densities (with "
                                                  "their Gaussian components) and samples")
    compare.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    compare.add_argument("--out", required=True, help="PNG file")
    compare.add_argument("--seed", type=int, default=0)
    compare.set_defaults(run=cmd_compare)

    inpaint = commands.add_parser("inpaint", help="fill in hidden pixels of a data image (autoregressive and "
                                                  "diffusion models)")
    inpaint.add_argument("run_dir", metavar="RUN_DIR")
    inpaint.add_argument("--image-index", type=int, default=0, help="which image of the split (default: 0)")
    inpaint.add_argument("--mask", default="bottom-half", help=f"{completion.MASK_HELP} (default: bottom-half)")
    inpaint.add_argument("--n", type=int, default=8, help="completions to draw (default: 8)")
    inpaint.add_argument("--split", default="test", choices=SPLITS)
    inpaint.add_argument("--data-root", help="data directory (default: the one the run was trained with)")
    inpaint.add_argument("--seed", type=int, default=0, help="seeds the completions and a random mask")
    inpaint.add_argument("--sampler", help="autoregressive models 'cached' or 'naive'; ddpm 'repaint' or "
                                           "'replacement' (default: the model's first)")
    inpaint.add_argument("--out", help="PNG file: the image, its observed pixels, then the completions")
    inpaint.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    inpaint.set_defaults(run=cmd_inpaint)
    report = commands.add_parser("report", help="a self-contained HTML page of one or more runs: configuration, "
                                                "metrics, curves, figures; several runs side by side")
    report.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    report.add_argument("--out", help=f"HTML file (default: the first RUN_DIR/{REPORT_FILE})")
    report.add_argument("--bench", help="a bench directory whose results.jsonl rows of these datasets are tabled too")
    report.set_defaults(run=cmd_report)

    app = commands.add_parser("app", help="a browser app over trained runs: sample, explore latents, draw and "
                                          "complete, score densities, the leaderboard (needs the app extra)")
    app.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="runs of one dataset")
    app.add_argument("--bench", help="a bench directory (its results.jsonl) for the leaderboard tab")
    app.add_argument("--port", type=int, default=7860, help="the port to serve on (default: 7860)")
    app.add_argument("--host", default="127.0.0.1",
                     help="the address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it "
                          "to the network)")
    app.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    app.set_defaults(run=cmd_app)

    bench = commands.add_parser("bench", allow_abbrev=False,  # `bench import RUN --recipe X` is no prefix of --recipes
                                help="train and evaluate models by their recipes into a results file; "
                                     "import runs; render tables", description=(
        "genzoo bench --data DATASET trains each model with its recipe for DATASET, evaluates every run by one "
        "protocol and appends a record per run to OUT/results.jsonl; the same command resumes an interrupted bench."))
    bench.add_argument("--data", help="the dataset (genzoo list)")
    bench.add_argument("--models", default="all", help="'all' or comma-separated model names (default: all)")
    bench.add_argument("--recipe-set", default="short", choices=RECIPE_SETS,
                       help="which recipes (default: short); a model without one there trains with its defaults")
    bench.add_argument("--recipes", help="comma-separated recipe names instead of --models/--recipe-set")
    bench.add_argument("--max-steps", type=int, help="override every recipe's budget (optimizer steps)")
    bench.add_argument("--out", default="bench", help="the bench directory: results.jsonl and runs/ (default: bench)")
    bench.add_argument("--data-root", help="data directory (default: the cache, downloading)")
    bench.add_argument("--eval-minutes", type=float,
                       help="evaluation cap per model (default: each recipe's, 30); past it the NLL is taken on a "
                            "fixed random subset, which the record says")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--threads", type=int, help="torch threads (one per job when jobs share the cores)")
    bench.set_defaults(run=cmd_bench)
    bench_commands = bench.add_subparsers(dest="bench_command")
    importing = bench_commands.add_parser("import", help="turn trained runs' metrics into results records")
    importing.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    importing.add_argument("--out", required=True, help="the bench directory whose results.jsonl gets the records")
    importing.add_argument("--recipe", help="the recipe the run was trained by (checked against its configuration)")
    importing.set_defaults(run=cmd_bench_import)
    table = bench_commands.add_parser("table", help="render a results file as a markdown or CSV table")
    add_table_flags(table)
    table.set_defaults(run=cmd_bench_table)
    readme = bench_commands.add_parser("readme", help="regenerate the README's generated results tables")
    readme.add_argument("readme", metavar="README", nargs="?", default="README.md")
    readme.add_argument("--check", action="store_true", help="fail if a table disagrees, changing nothing")
    readme.set_defaults(run=cmd_bench_readme)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    model_name = argv[1] if len(argv) > 1 and argv[0] == "train" else None
    try:
        args = build_parser(model_name).parse_args(argv)
        args.argv = argv
        args.run(args)
    except (ValueError, FileNotFoundError, OutputExists, TrainingDiverged, checkpoint.CheckpointError) as e:
        print(f"genzoo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        kept = ("the finished records and the last checkpoint are kept (resume: run the same command)"
                if argv[:1] == ["bench"] else "the last checkpoint is kept (resume with --resume)")
        print(f"genzoo: interrupted; {kept}", file=sys.stderr)
        return 130
    finally:
        leave_process_group()
    return 0


def leave_process_group() -> None:
    """Under `accelerate launch`, leave the process group before the interpreter exits: a process that
    finished first (the others still evaluating) and left it to teardown at exit could abort in gloo's threads."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
