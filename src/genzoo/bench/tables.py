"""Results records rendered as tables: markdown for the README, CSV for everything else.

A likelihood cell carries its kind, so a ranking never mixes kinds silently: an exact NLL is
plain, ``≤`` marks an upper bound (the model's log-likelihood is a lower bound: an ELBO, an
importance-weighted bound, a dequantisation bound) and ``≈`` an estimate that is no bound (AVB's
discriminator, AIS). A legend under each markdown table says which marks it uses.

The README's results tables are generated: each sits between a ``<!-- generated: genzoo bench
table ... -->`` line, which holds the command that renders it, and ``<!-- end generated -->``.
``genzoo bench readme README.md`` rewrites them; a test fails when one disagrees with its command.
"""

from __future__ import annotations

import csv
import io
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genzoo.bench.records import LIKELIHOOD_METRICS, SAMPLE_METRICS, latest
from genzoo.data.registry import DATASETS
from genzoo.evaluate.likelihood import companion_name
from genzoo.models.registry import RECIPES
from genzoo.train.closed_form import fit_text

KIND_MARKS = {"exact": "", "lower_bound": "≤ ", "estimate": "≈ ", "numerical": "~ "}
KIND_LEGEND = {"exact": "plain: exact", "lower_bound": "≤: an upper bound (from a lower bound on log p)",
               "estimate": "≈: an estimate that is no bound", "numerical": "~: numerical"}
HIGHER_IS_BETTER = ("precision", "recall", "classifier_score", "conditional_accuracy", "active_units")
VIEWS = ("likelihood", "samples", "sampling", "arena", "overview")
GENERATED = "<!-- generated: "
END_GENERATED = "<!-- end generated -->"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict], str]
    numeric: bool = False


def metric(record: dict, key: str) -> dict | None:
    return record.get("metrics", {}).get(key)


def value_cell(key: str, digits: int, kind_mark: bool = True, error: bool = True) -> Callable[[dict], str]:
    """A metric's value with its kind's mark and its standard error (or spread), '-' when absent."""

    def cell(record: dict) -> str:
        entry = metric(record, key)
        if entry is None or entry.get("value") is None:
            return "-" if entry is None else entry.get("note", "-")
        text = f"{KIND_MARKS.get(entry['kind'], '') if kind_mark else ''}{entry['value']:.{digits}f}"
        spread = entry.get("std_err") or entry.get("spread")
        if error and spread:
            text += f" ± {spread:.2g}"
        return text

    return cell


def nll_cell(digits: int) -> Callable[[dict], str]:
    """The NLL with its mark, its standard error, and * when it was taken on a subset of the split."""
    value = value_cell("nll_nats", digits)
    return lambda record: value(record) + (" *" if record.get("subset") and metric(record, "nll_nats") else "")


def draws_cell(record: dict) -> str:
    """Draws per example of an estimated likelihood (importance samples); '-' for an exact one."""
    estimator = record.get("estimator") or {}
    return "-" if record.get("likelihood") in (None, "exact", "unavailable") else str(estimator.get("draws", "-"))


def kid_cell(record: dict) -> str:
    """KID (unscaled: the MMD^2 of the cubic kernel on 128-d features) with its spread over subsets."""
    entry = metric(record, "kid")
    if entry is None or entry.get("value") is None:
        return "-" if entry is None else entry.get("note", "-")
    return f"{entry['value']:.0f} ± {entry.get('spread', 0):.0f}"


def budget_cell(record: dict) -> str:
    training = record.get("training") or {}
    if training.get("steps") is None:
        return "-"
    parts = [f"{training['steps']:,} steps"]
    if training.get("fit"):  # a closed-form fit (EM): iterations, not optimizer steps
        parts = [f"EM, {fit_text(training['fit'])}"]
    elif training.get("epochs"):
        parts[0] += f" ({training['epochs']:.{0 if training['epochs'] >= 10 else 1}f} epochs)"
    if training.get("selected_step") is not None:
        parts.append(f"weights of step {training['selected_step']:,}")
    if training.get("seconds") is not None:
        threads = (record.get("environment") or {}).get("threads")
        parts.append(f"{training['seconds'] / 60:.1f} min" + (f", {threads} thread{'s' * (threads != 1)}"
                                                               if threads else ""))
    if training.get("time_capped"):
        parts.append("stopped by the time cap")
    if training.get("budget_override"):
        parts.append("budget set by --max-steps")
    return "; ".join(parts)


def reference_cell(record: dict) -> str:
    ref = record.get("reference")
    return "-" if not ref else f"{ref['value']:.2f} ({ref['source']})"


def recipe_cell(record: dict) -> str:
    """The recipe (and its version past 1); † when the numbers were transcribed, not measured by this code."""
    if record["status"] != "ok":
        return f"not run: {record['reason']}" if record["status"] == "skipped" else f"failed: {record['reason']}"
    version = f" v{record['recipe_version']}" if (record.get("recipe_version") or 1) > 1 else ""
    name = "-" if record.get("recipe") is None else f"`{record['recipe']}`{version}"
    return name + (" †" if transcribed(record) else "")


def transcribed(record: dict) -> bool:
    return (record.get("provenance") or {}).get("source") == "transcribed"


def text(key: str, fallback: str = "-") -> Callable[[dict], str]:
    return lambda record: str(record.get(key) or fallback)


def likelihood_kind(record: dict) -> str:
    return record.get("likelihood") or "-"


def command_cell(record: dict) -> str:
    """The command; on a row of a recipe's earlier version, that the same command now trains the current one."""
    if not record.get("command"):
        return "-"
    current = RECIPES.get(record.get("recipe"))
    superseded = current is not None and (record.get("recipe_version") or 1) != current.version
    return f"`{record['command']}`" + (f" (now trains v{current.version})" if superseded else "")


def sampler_cell(record: dict) -> str:
    """How the samples were drawn, where the model has several ways: "ddim 25 steps, w = 2 (s = 3)"."""
    sampling = record.get("sampling") or {}
    if not sampling or sampling.get("steps") is None and sampling.get("guidance") is None:
        return "-" if not sampling else sampling["sampler"]
    text = sampling["sampler"] + (f" {sampling['steps']} steps" if sampling.get("steps") else "")
    if sampling.get("eta"):
        text += f", eta {sampling['eta']:g}"
    if sampling.get("guidance") is not None:
        text += f", w = {sampling['guidance']:g} (s = {sampling['guidance_diffusers_scale']:g})"
    return text


def seconds_cell(record: dict) -> str:
    seconds = record.get("seconds_per_sample")
    return "-" if seconds is None else f"{seconds:.3g}"


# a view's rows: the records with at least one of its metrics
ROW_METRICS = {"likelihood": {*LIKELIHOOD_METRICS, "neg_elbo_nats"}, "samples": set(SAMPLE_METRICS),
               "sampling": set(SAMPLE_METRICS)}
NLL = Column("NLL (nats)", nll_cell(2), True)
DRAWS = Column("draws", draws_cell, True)
COLUMNS = {
    "likelihood": [Column("model", text("model")), Column("recipe", recipe_cell), Column("set-up", text("description")),
                   Column("budget", budget_cell), Column("-ELBO (nats)", value_cell("neg_elbo_nats", 2, False), True),
                   NLL, DRAWS, Column("bits/dim", value_cell("bits_per_dim", 4, error=False), True),
                   Column("published", reference_cell), Column("command", command_cell)],
    "samples": [Column("model", text("model")), Column("recipe", recipe_cell), Column("set-up", text("description")),
                Column("FD", value_cell("fd", 1), True), Column("KID", kid_cell, True),
                Column("precision", value_cell("precision", 3), True), Column("recall", value_cell("recall", 3), True),
                Column("classifier score", value_cell("classifier_score", 2), True),
                Column("conditional accuracy", value_cell("conditional_accuracy", 3), True),
                Column("budget", budget_cell), Column("command", command_cell)],
    "sampling": [Column("model", text("model")), Column("recipe", recipe_cell), Column("sampler", sampler_cell),
                 Column("FD", value_cell("fd", 1), True), Column("KID", kid_cell, True),
                 Column("precision", value_cell("precision", 3), True), Column("recall", value_cell("recall", 3), True),
                 Column("classifier score", value_cell("classifier_score", 2), True),
                 Column("conditional accuracy", value_cell("conditional_accuracy", 3), True),
                 Column("s / sample", seconds_cell, True), Column("samples", text("num_samples"), True)],
    "arena": [Column("dataset", text("dataset")), Column("model", text("model")), Column("recipe", recipe_cell),
              Column("likelihood", likelihood_kind), Column("test NLL (nats)", nll_cell(3), True), DRAWS,
              Column("KL(data‖model) (nats)", value_cell("kl_nats", 3), True),
              Column("sliced W2", value_cell("sliced_wasserstein", 3), True),
              Column("MMD²", value_cell("mmd2", 4), True),
              Column("histogram KL (nats)", value_cell("histogram_kl_nats", 3), True), Column("budget", budget_cell),
              Column("command", command_cell)],
    "overview": [Column("model", text("model")), Column("family", text("family")), Column("recipe", recipe_cell),
                 Column("likelihood", likelihood_kind), NLL, DRAWS,
                 Column("bits/dim", value_cell("bits_per_dim", 4, error=False), True),
                 Column("FD", value_cell("fd", 1), True), Column("KID", kid_cell, True),
                 Column("precision", value_cell("precision", 3), True), Column("recall", value_cell("recall", 3), True),
                 Column("conditional accuracy", value_cell("conditional_accuracy", 3), True),
                 Column("budget", budget_cell), Column("command", command_cell)],
}


def select(records: list[dict], data: list[str] | None = None, families: list[str] | None = None,
           models: list[str] | None = None, recipes: list[str] | None = None, sort: str | None = None) -> list[dict]:
    """The latest record of each run, filtered; in file order (grouped by ``data``), the order of
    ``recipes``, or ranked by ``sort``."""
    rows = [r for r in latest(records)
            if (not data or r["dataset"] in data) and (not families or r.get("family") in families)
            and (not models or r["model"] in models) and (not recipes or r.get("recipe") in recipes)]
    if data:  # grouped by dataset in the order asked for, file order within each
        rows.sort(key=lambda r: data.index(r["dataset"]))
    if recipes:
        rows.sort(key=lambda r: recipes.index(r.get("recipe")))
    if sort:
        sign = -1 if sort in HIGHER_IS_BETTER else 1

        def key(record):
            entry = metric(record, sort)
            return (1, 0.0) if entry is None or entry.get("value") is None else (0, sign * entry["value"])

        rows.sort(key=key)
    return rows


def default_view(rows: list[dict]) -> str:
    """The arena's columns for 2-D data, the overview for images."""
    vector = all(r["dataset"] in DATASETS and DATASETS[r["dataset"]].info.kind == "vector" for r in rows)
    return "arena" if rows and vector else "overview"


def companion_columns(rows: list[dict]) -> list[Column]:
    """A column per estimator some record reports beside its NLL (``nll_raise_nats``: RAISE beside AIS),
    its value followed by the examples it was computed on and the NLL column's estimator on the same ones."""
    keys = sorted({k for r in rows for k in r.get("metrics", {}) if companion_name(k)})

    def cell(key: str) -> Callable[[dict], str]:
        value = value_cell(key, 2)

        def text(record: dict) -> str:
            entry = metric(record, key)
            if not entry or not entry.get("examples"):
                return value(record)
            paired = f"; NLL there {entry['paired']:.2f}" if entry.get("paired") is not None else ""
            return f"{value(record)} ({entry['examples']:,} images{paired})"

        return text

    return [Column(f"{companion_name(key).upper()} NLL (nats)", cell(key), True) for key in keys]


@dataclass(frozen=True)
class Table:
    """A view of records as text cells: what the markdown table and the HTML report both draw."""

    columns: list[Column]
    cells: list[list[str]]  # one row of cell texts per record
    notes: list[str]  # the legend: which marks the cells use, what ± means


def table(rows: list[dict], view: str, sort: str | None = None) -> Table:
    """The view's columns (an estimator beside the NLL right after it, a "notes" column when a record
    has notes), each record's cells and the notes the cells call for."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; one of: {', '.join(VIEWS)}")
    if view in ROW_METRICS:  # a record with none of the view's metrics (another sampler's, an NLL alone) has no cell
        rows = [r for r in rows if r.get("status") != "ok" or set(r.get("metrics", {})) & ROW_METRICS[view]]
    columns = list(COLUMNS[view])
    if NLL in columns:
        at = columns.index(NLL) + 1
        columns[at:at] = companion_columns(rows)
    columns += [Column("notes", text("notes", ""))] if any(r.get("notes") for r in rows) else []
    cells = [[c.cell(record) for c in columns] for record in rows]
    kinds = sorted({entry["kind"] for r in rows for entry in r.get("metrics", {}).values()
                    if entry["kind"] in KIND_MARKS} | {r["likelihood"] for r in rows if r.get("likelihood") in KIND_MARKS},
                   key=list(KIND_MARKS).index)
    notes = []
    if any(c.header.startswith(("NLL", "test NLL")) for c in columns) and kinds:
        notes.append("Likelihood marks: " + "; ".join(KIND_LEGEND[k] for k in kinds) + ".")
    if any(" ± " in cell for row in cells for cell in row):
        kid = "; KID's, the spread over 100 subsets" if any(c.header == "KID" for c in columns) else ""
        notes.append(f"±: the estimator's standard error{kid}.")
    ranked_kinds = {metric(r, sort)["kind"] for r in rows if sort and metric(r, sort)}
    if len(ranked_kinds) > 1:
        notes.append(f"Ranked by {sort} across {len(ranked_kinds)} kinds of number: an upper bound (≤) lies above the "
                     "true NLL by an unknown gap and an estimate (≈) may lie on either side, so the order between "
                     "kinds is indicative only.")
    if any(cell.endswith(" *") for row in cells for cell in row):
        notes.append("*: the NLL of a fixed random subset of the test split, within the evaluation cap "
                     "(its record's `subset` says which).")
    if copied := next((r for r in rows if transcribed(r)), None):
        notes.append(f"†: transcribed from {copied['provenance']['from']}; the run directory was not kept.")
    return Table(columns, cells, notes)


def markdown(rows: list[dict], view: str, sort: str | None = None) -> str:
    """``table`` as markdown, its notes under it."""
    drawn = table(rows, view, sort)
    lines = ["| " + " | ".join(c.header for c in drawn.columns) + " |",
             "|" + "|".join("---:" if c.numeric else "---" for c in drawn.columns) + "|"]
    for cells in drawn.cells:
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines + ([""] + drawn.notes if drawn.notes else []))


def csv_text(rows: list[dict]) -> str:
    """Every record flat: the metrics as value, kind and standard-error columns."""
    metric_keys = list(dict.fromkeys(k for r in rows for k in r.get("metrics", {})))
    fields = ["model", "family", "recipe", "recipe_version", "dataset", "data_treatment", "split", "num_examples",
              "subset", "status", "reason", "likelihood"]
    header = list(fields)
    for key in metric_keys:
        header += [key, f"{key}_kind", f"{key}_std_err"]
    header += ["steps", "epochs", "train_seconds", "eval_seconds", "threads", "device", "seed", "genzoo_version",
               "git_commit", "command", "reference", "reference_source", "provenance"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        training, env, ref = r.get("training") or {}, r.get("environment") or {}, r.get("reference") or {}
        row = [r.get(k) for k in fields]
        for key in metric_keys:
            entry = r["metrics"].get(key) or {}
            row += [entry.get("value"), entry.get("kind"), entry.get("std_err", entry.get("spread"))]
        row += [training.get("steps"), training.get("epochs"), training.get("seconds"), r.get("eval_seconds"),
                env.get("threads"), env.get("device"), r.get("seed"), env.get("genzoo_version"), env.get("git_commit"),
                r.get("command"), ref.get("value"), ref.get("source"), (r.get("provenance") or {}).get("source")]
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def render(records: list[dict], fmt: str = "markdown", view: str | None = None, **selection) -> str:
    """The selected records (``select``'s keywords) as a markdown table of ``view``, or as CSV."""
    rows = select(records, **selection)
    if fmt == "csv":
        return csv_text(rows)
    if fmt != "markdown":
        raise ValueError(f"unknown table format {fmt!r}; one of: markdown, csv")
    return markdown(rows, view or default_view(rows), selection.get("sort"))


def readme_blocks(readme: str) -> list[tuple[int, int, list[str]]]:
    """(first line, end line, the table command's arguments) of every generated block, 0-based."""
    lines, blocks = readme.split("\n"), []
    for i, line in enumerate(lines):
        if line.startswith(GENERATED):
            command = shlex.split(line[len(GENERATED):line.rindex("-->")])
            if command[:3] != ["genzoo", "bench", "table"]:
                raise ValueError(f"README line {i + 1}: a generated block must name `genzoo bench table ...`")
            end = next((j for j in range(i + 1, len(lines)) if lines[j] == END_GENERATED
                        or lines[j].startswith(GENERATED)), None)
            if end is None or lines[end] != END_GENERATED:
                raise ValueError(f"README line {i + 1}: a generated block without its {END_GENERATED!r} line")
            blocks.append((i, end, command[3:]))
    return blocks


def regenerate_readme(path: str | Path, render_command: Callable[[list[str], Path], str]) -> tuple[str, list[int]]:
    """(the README with every generated block re-rendered, the 1-based lines of the blocks that changed).

    ``render_command(arguments, base)`` renders one `genzoo bench table` command, its paths
    relative to ``base`` (the README's folder).
    """
    path = Path(path)
    lines = path.read_text().split("\n")
    changed = []
    for start, end, arguments in reversed(readme_blocks("\n".join(lines))):
        table = render_command(arguments, path.parent).split("\n")
        if lines[start + 1:end] != table:
            changed.append(start + 1)
            lines[start + 1:end] = table
    return "\n".join(lines), sorted(changed)
