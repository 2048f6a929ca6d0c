"""``genzoo bench``: every model of a dataset, trained by its recipe and judged by one protocol.

For each model the bench trains its recipes for the dataset in the chosen recipe set (a model
with none gets its defaults there, ``models.recipes.default_recipe``), evaluates the run on the
test split by one protocol (every metric of the data's kind unless the recipe names its own,
the model's default draws, seed 0, and an evaluation time cap past which the NLL is taken on a
fixed random subset, which the record says), and appends one record to ``results.jsonl``. A
model that does not apply to the dataset gets a record that says why.

Interrupted, the same command resumes: finished records are kept, a run with a checkpoint
continues from it (training resumes exactly, so the steps and weights equal an uninterrupted
bench's), and a trained run is only evaluated.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genzoo import checkpoint
from genzoo.bench.records import (
    EVALUATION_FILES,
    RESULTS_FILE,
    append_record,
    entry_key,
    read_results,
    record_key,
    run_record,
    status_record,
)
from genzoo.bench.tables import KIND_MARKS
from genzoo.checkpoint import METRICS_FILE
from genzoo.data.registry import dataset_info, load_split
from genzoo.evaluate.likelihood import likelihood_metrics
from genzoo.evaluate.metrics import parse_metrics, run_metrics
from genzoo.models.recipes import Recipe
from genzoo.models.registry import MODELS, load_run, recipe, recipes_for
from genzoo.runs import train_run
from genzoo.train.flags import parse_train_flags
from genzoo.train.loop import TrainingDiverged

PROBE_EXAMPLES = 100  # examples timed to decide whether the whole split fits the evaluation cap


@dataclass(frozen=True)
class Entry:
    """One row of a bench: a model with a recipe, or a model that does not apply and why."""

    model: str
    recipe: Recipe | None
    reason: str | None = None


def not_applicable(model: str, data: str) -> str | None:
    """Why ``model`` cannot be trained on ``data`` (its config's own check, one line), or None."""
    try:
        MODELS[model].check_data(dataset_info(data))
        MODELS[model].Config().validate(dataset_info(data))
    except ValueError as e:
        return str(e)
    return None


def plan(data: str, models: str = "all", recipe_set: str = "short", recipes: list[str] | None = None) -> list[Entry]:
    """The entries of a bench, in order; a recipe another starts from comes before it."""
    dataset_info(data)  # an unknown dataset fails here, listing the valid ones
    if recipes:
        chosen = [recipe(name) for name in recipes]
        for r in chosen:
            if data not in r.data:
                raise ValueError(f"recipe {r.name} is for {', '.join(r.data)}, not {data}")
        return [Entry(r.model, r) for r in with_dependencies(chosen)]
    names = list(MODELS) if models == "all" else [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)} in --models; choose 'all' or from: "
                         f"{', '.join(MODELS)}")
    entries: list[Entry] = []
    for name in names:
        reason = not_applicable(name, data)
        if reason and models != "all":
            raise ValueError(f"{name} does not apply to {data}: {reason}")
        if reason:
            entries.append(Entry(name, None, reason))
            continue
        for r in with_dependencies(recipes_for(name, data, recipe_set)):
            if all(e.recipe != r for e in entries):  # a recipe another one starts from runs once
                entries.append(Entry(r.model, r))
    return entries


def with_dependencies(chosen: list[Recipe]) -> list[Recipe]:
    """``chosen`` with every recipe they start from (``init_from``) placed before its first user."""
    ordered: list[Recipe] = []

    def add(r: Recipe) -> None:
        if r.init_from:
            add(recipe(r.init_from))
        if r not in ordered:
            ordered.append(r)

    for r in chosen:
        add(r)
    return ordered


def run_dir_of(out: Path, data: str, r: Recipe, max_steps: int | None, seed: int) -> Path:
    """One directory per record key: a new recipe version, seed or budget never reuses an old run."""
    version = f"-v{r.version}" if r.version > 1 else ""
    return out / "runs" / data / f"{r.name}{version}{f'-seed{seed}' if seed else ''}{f'-{max_steps}steps' if max_steps else ''}"


def train_entry(r: Recipe, data: str, run_dir: Path, max_steps: int | None, data_root: str | None, seed: int,
                out: Path) -> None:
    """Train ``r`` into ``run_dir`` unless it is trained; resume it from its checkpoint when it has one."""
    if (run_dir / METRICS_FILE).exists():
        return
    resume = (run_dir / checkpoint.TRAIN_STATE_FILE).exists()
    if run_dir.exists() and not resume:  # stopped before its first checkpoint: nothing to resume
        aside = run_dir.with_name(f"{run_dir.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(run_dir, aside)
        print(f"genzoo: {run_dir} stopped before its first checkpoint; moved it to {aside.name}, starting afresh",
              file=sys.stderr)
    flags = ["--data", data, "--seed", str(seed), *(["--max-steps", str(max_steps)] if max_steps else []),
             *(["--data-root", data_root] if data_root else []),
             *(["--init-from", str(run_dir_of(out, data, recipe(r.init_from), max_steps, seed))] if r.init_from else [])]
    model_options, config = parse_train_flags(r.model, flags, r)
    train_run(r.model, None if resume else model_options, config, run_dir, resume=resume, eval_metrics=[],
              recipe=r, quiet=True)


def likelihood_limit(model, split, info, draws: int | None, cap_seconds: float) -> tuple[int | None, str | None]:
    """(a subset size that fits the cap, what the record says of it), or (None, None) for the whole split."""
    n = len(split)
    if n <= PROBE_EXAMPLES:
        return None, None
    # twice: the first call also pays what is computed once per model (an RBM's AIS log Z, cached), not per example
    likelihood_metrics(model, split, info, draws, limit=PROBE_EXAMPLES)
    started = time.perf_counter()
    likelihood_metrics(model, split, info, draws, limit=PROBE_EXAMPLES)
    per_example = (time.perf_counter() - started) / PROBE_EXAMPLES
    if per_example * n <= cap_seconds:
        return None, None
    limit = max(PROBE_EXAMPLES, int(cap_seconds / per_example))
    return limit, (f"the NLL on a fixed random {limit:,} of the {n:,} {split.split} examples (seed 0): the whole "
                   f"split would take about {per_example * n / 60:.0f} min, past the {cap_seconds / 60:g}-minute "
                   "evaluation cap")


def evaluate_entry(r: Recipe, run_dir: Path, data: str, data_root: str | None,
                   eval_minutes: float | None) -> tuple[dict, str | None, float]:
    """The protocol on the test split: (the evaluation dict, the subset note or None, seconds)."""
    started = time.perf_counter()
    model, _ = load_run(run_dir)
    info, split = load_split(data, "test", data_root)
    metrics = parse_metrics(r.eval_metrics, info)
    limit, subset = None, None
    if "nll" in metrics and model.estimators:
        limit, subset = likelihood_limit(model, split, info, r.eval_draws, 60 * (eval_minutes or r.eval_minutes))
    if limit is None:
        evaluation = run_metrics(model, split, info, metrics, r.eval_draws)
    else:  # the NLL on the subset; the sample metrics and latent diagnostics still on the whole split
        evaluation = run_metrics(model, split, info, ["nll"], r.eval_draws, limit=limit)
        evaluation.update(run_metrics(model, split, info, [m for m in metrics if m != "nll"], r.eval_draws))
    evaluation["seed"] = 0
    checkpoint.write_json(run_dir / EVALUATION_FILES[0], {**evaluation, "subset": subset})
    return evaluation, subset, time.perf_counter() - started


def run_bench(data: str, models: str = "all", recipe_set: str = "short", recipes: list[str] | None = None,
              max_steps: int | None = None, out: str | Path = "bench", data_root: str | None = None,
              eval_minutes: float | None = None, seed: int = 0, command: str = "",
              say: Callable[[str], None] = print) -> list[dict]:
    """Train, evaluate and record every entry of ``plan(...)`` into ``out``; returns the new records."""
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps {max_steps}: a budget below one optimizer step trains nothing; give N >= 1")
    if eval_minutes is not None and not eval_minutes > 0:
        raise ValueError(f"--eval-minutes {eval_minutes} must be > 0")
    entries = plan(data, models, recipe_set, recipes)
    for split in ("train", "test"):  # missing data files fail here, once, naming where to put them
        load_split(data, split, data_root)
    out = Path(out)
    results = out / RESULTS_FILE
    # finished rows; a failed one runs again (its new record supersedes the old)
    done = {record_key(r) for r in read_results(results) if r["status"] != "failed"} if results.exists() else set()
    provenance = {"source": "bench", "command": command or f"genzoo bench --data {data}"}
    new = []
    for number, entry in enumerate(entries, 1):
        label = f"[{number}/{len(entries)}] {entry.model} ({entry.recipe.name if entry.recipe else 'not run'}) on {data}"
        if entry_key(entry.model, entry.recipe, data, max_steps, seed) in done:
            say(f"{label}: already in {results}")
            continue
        if entry.reason:
            record = status_record(entry.model, data, None, "skipped", entry.reason, max_steps, provenance)
        else:
            run_dir = run_dir_of(out, data, entry.recipe, max_steps, seed)
            try:
                train_entry(entry.recipe, data, run_dir, max_steps, data_root, seed, out)
                evaluation, subset, seconds = evaluate_entry(entry.recipe, run_dir, data, data_root, eval_minutes)
                record = run_record(run_dir, evaluation, {**provenance, "run_dir": str(run_dir)}, entry.recipe,
                                    max_steps, seconds, subset)
            except (ValueError, FileNotFoundError, TrainingDiverged, checkpoint.CheckpointError) as e:
                record = status_record(entry.model, data, entry.recipe, "failed", str(e), max_steps,
                                       {**provenance, "run_dir": str(run_dir)})
        record["seed"] = seed
        append_record(results, record)
        new.append(record)
        say(f"{label}: {summary_line(record)}")
    return new


def summary_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['status']}: {record['reason']}"
    parts = []
    for key, name in (("nll_nats", "NLL"), ("fd", "FD"), ("kl_nats", "KL"), ("sliced_wasserstein", "SW")):
        entry = record["metrics"].get(key)
        if entry and entry.get("value") is not None:
            parts.append(f"{name} {KIND_MARKS.get(entry['kind'], '')}{entry['value']:.3f}")
    training = record["training"]
    return (f"{training['steps']:,} steps in {training['seconds']:.0f} s, evaluated in {record['eval_seconds']:.0f} s"
            + (": " + ", ".join(parts) if parts else ""))
