"""The results file: one JSON record per evaluated run, appended to ``results.jsonl``.

A record says what was measured and how far to trust it: the model, family, recipe and dataset
(with how the data was binarised or dequantised), the split and its source, each metric with its
kind (``exact``, ``lower_bound``, ``estimate``, ``numerical`` for likelihoods; ``sample`` for
sample metrics) and its standard error where it has one, the estimator's settings, the steps
reached, wall time, threads and device, seed, genzoo version and git commit, the published
reference, and where the record came from (a bench, an imported run directory, or a number
transcribed from an older README whose run was not kept).

Records are appended one line at a time and flushed, so an interrupted writer leaves at most a
half-written last line, which readers skip with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

from genzoo import checkpoint
from genzoo.checkpoint import METRICS_FILE, eval_file
from genzoo.data.core import DataInfo
from genzoo.evaluate.likelihood import companion_name
from genzoo.models.base import SAMPLING_OPTIONS
from genzoo.models.recipes import Recipe
from genzoo.models.registry import MODEL_FAMILY, MODELS, RECIPES
from genzoo.provenance import environment
from genzoo.train.config import TrainConfig, train_config
from genzoo.train.flags import parse_train_flags

RESULTS_SCHEMA = 1  # bumped whenever a record's fields change meaning
RESULTS_FILE = "results.jsonl"
STATUSES = ("ok", "skipped", "failed")
# metrics of samples (kind "sample"); the likelihood's metrics take the likelihood's kind
SAMPLE_METRICS = ("fd", "kid", "precision", "recall", "classifier_score", "conditional_accuracy",
                  "sliced_wasserstein", "mmd2", "histogram_kl_nats")
LIKELIHOOD_METRICS = ("nll_nats", "bits_per_dim", "kl_nats")  # their kind is the likelihood's
STD_ERRORS = {"nll_nats": "nll_std_err", "kl_nats": "kl_std_err"}  # the std error of each, in an eval dict
# where `bench import` finds a run's test evaluation, best first: the bench's, `genzoo eval`'s, after training
EVALUATION_FILES = ("eval_bench.json", eval_file("test"), METRICS_FILE)
BUDGET_FIELDS = ("data", "data_root", "init_from", "epochs", "max_steps", "max_minutes", "log_every")  # not the recipe's


class ResultsError(ValueError):
    """A results file that cannot be read as this version's records; the message names the fix."""


def data_treatment(value_type: str, representation: str) -> str:
    """How stored data became the model's inputs, in words (a record's ``data_treatment``)."""
    if representation == "binary":
        return "binary as stored" if value_type == "binary" else "statically binarised (seed 0)"
    if representation == "continuous" and value_type != "continuous":
        return "uniformly dequantised (seed 0); the NLL includes D log K"
    return "levels as stored" if value_type == "discrete" else "as stored"


def metrics_record(evaluation: dict) -> dict:
    """``{metric: {"value", "kind", "std_err"?}}`` from an evaluation dict (``genzoo eval --json``).

    A value that is not finite (JSON has no inf or NaN) is written as None with a ``note``.
    """
    out: dict[str, dict] = {}
    kind = evaluation.get("likelihood")
    if kind not in (None, "unavailable"):
        for key in LIKELIHOOD_METRICS:
            if evaluation.get(key) is not None:
                out[key] = {"value": evaluation[key], "kind": kind}
                if STD_ERRORS.get(key) in evaluation:
                    out[key]["std_err"] = evaluation[STD_ERRORS[key]]
        for key, value in evaluation.items():  # a bound beside the likelihood (the negative ELBO)
            if key.startswith("neg_") and key.endswith("_nats") and value is not None:
                out[key] = {"value": value, "kind": "lower_bound"}
            elif (name := companion_name(key)) and value is not None:  # RAISE beside AIS, maybe on a subset
                out[key] = {"value": value, "kind": evaluation[f"nll_{name}_kind"],
                            "examples": evaluation[f"{name}_examples"],
                            "paired": evaluation.get(f"{name}_paired_nll_nats")}  # the NLL on the same examples
                if evaluation.get(f"nll_{name}_std_err") is not None:
                    out[key]["std_err"] = evaluation[f"nll_{name}_std_err"]
    for key in SAMPLE_METRICS:
        if evaluation.get(key) is not None:
            out[key] = {"value": evaluation[key], "kind": "sample"}
    if "kid" in out and evaluation.get("kid_std") is not None:
        out["kid"]["spread"] = evaluation["kid_std"]  # over random subsets, not a standard error
    if evaluation.get("active_units") is not None:
        out["active_units"] = {"value": evaluation["active_units"], "kind": "diagnostic"}
    for entry in out.values():
        if isinstance(entry["value"], float) and not math.isfinite(entry["value"]):
            entry.update(value=None, note=f"not finite: {entry['value']}")
    return out


def command_from_config(config: dict) -> str:
    """The `genzoo train` command that reproduces a run's saved configuration (data files aside)."""
    model, train = config["model"], config["train"]
    defaults = json.loads(json.dumps(dataclasses.asdict(train_config(model))))  # tuples as the saved lists
    words = ["genzoo train", model, "--data", config["data"]["name"]]
    for name, value in train.items():
        if name in ("data", "data_root", "init_from") or value == defaults.get(name, value):
            continue
        if isinstance(value, list):
            value = ",".join(map(str, value))
        words += [f"--{name.replace('_', '-')}", str(value)]
    if train.get("init_from"):
        words += ["--init-from", "RUN"]
    model_defaults = json.loads(json.dumps(dataclasses.asdict(MODELS[model].Config()))) if model in MODELS else {}
    for name, value in config["model_config"].items():
        if model_defaults.get(name, value) != value:
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            words += ["--set", f"{name}={value}"]
    return " ".join(words)


def run_record(run_dir: Path, evaluation: dict, provenance: dict, recipe: Recipe | None = None,
               budget_override: int | None = None, eval_seconds: float | None = None, subset: str | None = None) -> dict:
    """The record of an evaluated run directory: its config and training summary, and ``evaluation``."""
    run_dir = Path(run_dir)
    config = checkpoint.read_run_config(run_dir)
    trained = json.loads((run_dir / METRICS_FILE).read_text()) if (run_dir / METRICS_FILE).exists() else {}
    info = DataInfo.from_dict(config["data"])
    train = TrainConfig(**{**config["train"], "betas": tuple(config["train"]["betas"])})
    model = config["model"]
    notes = None
    if recipe is None and trained.get("recipe"):  # trained with --recipe: the recipe, unless flags changed it
        name = trained["recipe"]["name"]
        recipe = RECIPES.get(name)
        try:
            if recipe is None:
                raise ValueError(f"recipe {name} is not registered in this genzoo")
            check_trained_by(config, recipe, run_dir)
        except ValueError as e:
            recipe, notes = None, f"trained with --recipe {name}, but not as it stands: {e}"
    if recipe is not None and budget_override is None and train.max_steps != recipe.steps:
        trained_steps = train.max_steps or trained.get("train_steps")  # --epochs N may be the recipe's own budget
        budget_override = None if trained_steps == recipe.steps else trained_steps
    if recipe is not None:
        by_name = ["--recipe", recipe.name] if recipe.name in RECIPES else []  # a model's defaults have no name to give
        command = " ".join(["genzoo train", model, *by_name, "--data", info.name,
                            *(["--max-steps", str(budget_override)] if budget_override else []),
                            *(["--init-from", "RUN"] if recipe.init_from else [])])
    else:
        command = command_from_config(config)
    selection = trained.get("selection")
    record = {
        "schema": RESULTS_SCHEMA, "status": "ok", "reason": None,
        "model": model, "family": MODEL_FAMILY.get(model), "recipe": None if recipe is None else recipe.name,
        "recipe_version": None if recipe is None else recipe.version,
        "description": None if recipe is None else recipe.description,
        "dataset": info.name, "data_treatment": data_treatment(info.value_type, evaluation.get(
            "data_representation", info.value_type)),
        "split": evaluation.get("split"), "split_source": evaluation.get("split_source"),
        "num_examples": evaluation.get("num_examples"), "subset": subset,
        "metrics": metrics_record(evaluation),
        "likelihood": evaluation.get("likelihood"),
        "estimator": None if evaluation.get("estimator") is None else {
            "name": evaluation["estimator"], "draws": evaluation.get("draws"), "seed": evaluation.get("seed", 0)},
        "num_samples": evaluation.get("num_samples"), "feature_net": evaluation.get("feature_net"),
        "sampling": evaluation.get("sampling"), "seconds_per_sample": evaluation.get("seconds_per_sample"),
        "training": {"steps": trained.get("train_steps"), "epochs": trained.get("train_epochs"),
                     "budget_steps": budget_override or train.max_steps,
                     "budget_override": budget_override, "seconds": trained.get("train_seconds"),
                     "time_capped": trained.get("time_capped"), "batch_size": train.batch_size,
                     "precision": train.precision,
                     "selected_step": None if selection is None else selection.get("best_step"),
                     "fit": trained.get("fit"),
                     "warnings": trained.get("training_warnings")},
        "eval_seconds": eval_seconds, "seed": train.seed,
        "environment": trained.get("environment"), "command": command,
        "reference": None if recipe is None or recipe.reference is None else dataclasses.asdict(recipe.reference),
        "provenance": provenance, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "notes": notes,
    }
    return record


def status_record(model: str, data: str, recipe: Recipe | None, status: str, reason: str,
                  budget_override: int | None, provenance: dict) -> dict:
    """A row without numbers: a model that does not apply to the dataset, or a run that failed, and why."""
    return {"schema": RESULTS_SCHEMA, "status": status, "reason": reason, "model": model,
            "family": MODEL_FAMILY.get(model), "recipe": None if recipe is None else recipe.name,
            "recipe_version": None if recipe is None else recipe.version, "dataset": data, "metrics": {},
            "training": {"budget_override": budget_override}, "environment": environment(),
            "provenance": provenance, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def record_key(record: dict) -> tuple:
    """What makes two records results of the same thing: a later record supersedes an earlier one."""
    budget = (record.get("training") or {}).get("budget_override")
    return (record["model"], record.get("recipe"), record.get("recipe_version"), record["dataset"], budget,
            record.get("seed", 0), sampling_variant(record))


def sampling_variant(record: dict) -> str | None:
    """A sampler chosen on the command line (``genzoo eval --sampler ddim --steps 10``), as one string:
    the records of one run under several samplers are distinct results; None: the model's defaults."""
    sampling = record.get("sampling") or {}
    if not sampling.get("chosen"):
        return None
    return " ".join(f"{k}={sampling[k]}" for k in ("sampler", *SAMPLING_OPTIONS) if sampling.get(k) is not None)


def entry_key(model: str, recipe: Recipe | None, data: str, budget_override: int | None, seed: int) -> tuple:
    """The ``record_key`` that a bench entry's record will have."""
    return (model, None if recipe is None else recipe.name, None if recipe is None else recipe.version, data,
            budget_override, seed, None)


def read_results(path: str | Path) -> list[dict]:
    """Every record of a results file, in order.

    A half-written last line (an interrupted writer) is skipped with a warning; any other line
    that is not a record of this schema fails, naming the line and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results file {path}: run `genzoo bench --out DIR` or `genzoo bench import "
                                "RUN_DIR --out DIR` to write one")
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the writer was interrupted mid-line
                print(f"genzoo: warning: {path} line {number} is half-written (an interrupted run?); skipped",
                      file=sys.stderr)
                continue
            raise ResultsError(f"{path} line {number} is not a JSON record: fix or remove that line") from None
        check_record(record, path, number)
        records.append(record)
    return records


def check_record(record: dict, path: Path, number: int) -> None:
    if not isinstance(record, dict) or "schema" not in record:
        raise ResultsError(f"{path} line {number} is not a genzoo results record (no 'schema' field)")
    if record["schema"] != RESULTS_SCHEMA:
        written_by = (record.get("environment") or {}).get("genzoo_version", "an unknown version")
        raise ResultsError(f"{path} line {number} was written by genzoo {written_by} with results schema "
                           f"{record['schema']}; this genzoo reads schema {RESULTS_SCHEMA}: render it with that "
                           "genzoo, or start a new results file")
    missing = [k for k in ("status", "model", "dataset", "metrics") if k not in record]
    if missing or record["status"] not in STATUSES:
        raise ResultsError(f"{path} line {number} is not a complete results record (missing or bad: "
                           f"{', '.join(missing) or 'status'}); fix or remove that line")


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as one line, flushed to disk; a half-written last line is dropped first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, allow_nan=False) + "\n"
    if path.exists() and path.stat().st_size:
        text = path.read_text()
        if not text.endswith("\n"):
            last = text[text.rfind("\n") + 1:]
            try:  # a complete record that only lacks its newline (an edited file) stays
                json.loads(last)
                line = "\n" + line
            except json.JSONDecodeError:  # an interrupted append: its record was never complete
                print(f"genzoo: warning: dropping the half-written last line of {path}", file=sys.stderr)
                with open(path, "w") as f:
                    f.write(text[:len(text) - len(last)])
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def latest(records: list[dict]) -> list[dict]:
    """One record per ``record_key``: the last written, in the order of first appearance."""
    by_key: dict[tuple, dict] = {}
    for record in records:
        by_key[record_key(record)] = record
    return list(by_key.values())


def import_run(run_dir: str | Path, recipe: Recipe | None = None) -> dict:
    """The record of a run directory trained and evaluated earlier, with where each part came from.

    The evaluation is the bench's (``eval_bench.json``), else ``genzoo eval``'s whole test split
    (``eval_test.json``), else the one after training (``metrics.json``). With ``recipe`` the
    run's saved configuration must be that recipe's; a difference fails, naming the fields.
    """
    run_dir = Path(run_dir)
    if not (run_dir / checkpoint.CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} is not a genzoo run directory (it has no {checkpoint.CONFIG_FILE})")
    config = checkpoint.read_run_config(run_dir)
    if recipe is not None:
        check_trained_by(config, recipe, run_dir)
    for name in EVALUATION_FILES:
        path = run_dir / name
        if path.exists():
            evaluation = json.loads(path.read_text())
            if evaluation.get("split") == "test":
                break
    else:
        raise ValueError(f"{run_dir} has no evaluation on the test split: run `genzoo eval {run_dir} --split test` "
                         "first, then import it")
    provenance = {"source": "import", "run_dir": str(run_dir.resolve()), "evaluation_file": name}
    return run_record(run_dir, evaluation, provenance, recipe, subset=evaluation.get("subset"))



def check_trained_by(config: dict, recipe: Recipe, run_dir: Path) -> None:
    """Fail unless the run's saved model and training options are the recipe's (its budget aside)."""
    if config["model"] != recipe.model:
        raise ValueError(f"{run_dir} trained {config['model']}, and recipe {recipe.name} trains {recipe.model}")
    if config["data"]["name"] not in recipe.data:
        raise ValueError(f"{run_dir} was trained on {config['data']['name']}, and recipe {recipe.name} is for "
                         f"{', '.join(recipe.data)}")
    given = ["--data", config["data"]["name"], *(["--init-from", "RUN"] if recipe.init_from else [])]
    model_options, train = parse_train_flags(recipe.model, given, recipe)
    expected_model = json.loads(json.dumps(dataclasses.asdict(MODELS[recipe.model].Config(**model_options))))
    expected_train = json.loads(json.dumps(dataclasses.asdict(train)))
    # an option the run's config lacks came later: the run was trained with its default
    saved = {**json.loads(json.dumps(dataclasses.asdict(MODELS[recipe.model].Config()))), **config["model_config"]}
    differ = [f"{k} {saved.get(k)!r} (recipe: {v!r})" for k, v in expected_model.items() if saved.get(k) != v]
    differ += [f"{k} {config['train'].get(k)!r} (recipe: {v!r})" for k, v in expected_train.items()
               if k not in BUDGET_FIELDS and config["train"].get(k, v) != v]
    if differ:
        raise ValueError(f"{run_dir} was not trained by recipe {recipe.name}: {'; '.join(differ)}")
