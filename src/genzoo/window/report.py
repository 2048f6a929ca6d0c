"""``genzoo report``: one self-contained HTML page of one or more runs.

Everything is inline (figures as base64 PNG data, the style sheet in the page, system fonts), so
the file opens offline, by e-mail or from a CI artifact, and requests nothing. Every string taken
from a run (names, configurations, warnings, messages) is escaped: a run directory is data, and
the page must not run what a run's files say.

For each run: what was trained and how (configuration, budget, provenance), its evaluations (the
metrics with their kinds and standard errors, then every recorded value), the training warnings,
and every figure of the run with a caption, loss curves and samples over training among them.
Several runs, or ``--bench``, add comparison tables drawn by the same code as the README's.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from genzoo import __version__, checkpoint
from genzoo.bench.records import RESULTS_FILE, import_run, metrics_record, read_results
from genzoo.bench.tables import Table, default_view, select, table
from genzoo.evaluate.likelihood import format_metrics
from genzoo.window.run_view import KIND_WORDS, RunView, open_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMBER = ' class="number"'  # a right-aligned table cell
LONG_LIST = 12  # a recorded list longer than this (a latent unit's activity per dimension) is shown in part

STYLE = """
body { font-family: ui-sans-serif, system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em;
       color: #1b1b1b; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.5em; } nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #d4d4d4; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; } code { font-family: ui-monospace, monospace; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-family: ui-monospace, monospace; font-size: 0.88em; }
figure { margin: 1em 0 1.8em; } figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #e2e2e2; }
.warning { color: #8a4b00; } .muted { color: #666; font-size: 0.9em; }
"""


def escape(value) -> str:
    """Any value as HTML text, quotes included."""
    return html.escape(str(value), quote=True)


def write_report(run_dirs: list[str | Path], out: str | Path, bench: str | Path | None = None) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (atomically: an interrupted write keeps the old page)."""
    runs = open_runs(list(run_dirs))
    bench_records = None
    if bench is not None:
        bench_records = read_results(Path(bench) / RESULTS_FILE)
        if not bench_records:
            raise ValueError(f"{Path(bench) / RESULTS_FILE} holds no records: run `genzoo bench --out {bench}` first")
    page = report_html(runs, bench_records)
    return checkpoint.atomic_write(Path(out), lambda tmp: tmp.write_text(page, encoding="utf-8"))


def report_html(runs: list[RunView], bench_records: list[dict] | None = None) -> str:
    """The whole page: a heading, a table of contents, the comparisons, then one section per run."""
    title = runs[0].title if len(runs) == 1 else f"{len(runs)} genzoo runs"
    parts = [f"<h1>{escape(title)}</h1>",
             (f'<p class="muted">genzoo {escape(__version__)} report; every figure and number below is read from the '
             "run directories named in each section.</p>")]
    if len(runs) > 1:
        parts.append("<nav>" + "".join(f'<a href="#run-{i}">{escape(run.title)}</a>' for i, run in enumerate(runs))
                     + "</nav>")
        parts.append(comparison_section(runs))
    if bench_records is not None:
        parts.append(bench_section(bench_records, sorted({run.dataset for run in runs})))
    parts += [run_section(run, f"run-{i}") for i, run in enumerate(runs)]
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{escape(title)}</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


# --- one run -----------------------------------------------------------------------------------
def run_section(run: RunView, anchor: str) -> str:
    parts = [f'<section id="{anchor}">', f"<h2>{escape(run.title)}</h2>",
             f'<p class="muted">{escape(run.path.resolve())}</p>', overview_table(run)]
    evaluations = ([("After training (metrics.json)", run.metrics)] if run.metrics else []) + \
                  [(f"genzoo eval ({name})", evaluation) for name, evaluation in run.evaluations.items()]
    if not evaluations:
        parts.append("<p>No evaluation yet: training has not finished, or it was run with <code>--eval-metrics "
                     "''</code>. Run <code>genzoo eval RUN_DIR</code>.</p>")
    parts += [evaluation_section(heading, evaluation) for heading, evaluation in evaluations]
    warnings = (run.metrics or {}).get("training_warnings") or []
    if warnings:
        parts.append("<h3>Training warnings</h3><ul>" + "".join(f'<li class="warning">{escape(w)}</li>' for w in warnings)
                     + "</ul>")
    parts.append("<h3>Figures</h3>" if run.figures else "<h3>Figures</h3><p>No figures yet.</p>")
    parts += [figure_html(path, caption) for path, caption in run.figures]
    parts.append("<h3>Configuration</h3>")
    parts.append("<h4>Model</h4>" + key_value_table(run.config["model_config"]))
    parts.append("<h4>Training</h4>" + key_value_table(run.config["train"]))
    parts.append("<h4>Data</h4>" + key_value_table(run.config["data"]))
    parts.append("</section>")
    return "\n".join(parts)


def overview_table(run: RunView) -> str:
    """What was trained, on what, for how long, where, from which code."""
    metrics = run.metrics or {}
    environment = metrics.get("environment") or {}
    recipe = metrics.get("recipe")
    rows = {"model": run.model, "family": run.family, "dataset": run.dataset,
            "recipe": f"{recipe['name']} (version {recipe['version']})" if recipe else "none (options as configured)"}
    if metrics:
        capped = " (stopped by the time cap)" if metrics.get("time_capped") else ""
        rows["training"] = (f"{metrics.get('train_steps', 0):,} steps, {metrics.get('train_epochs', 0):.1f} epochs, "
                            f"{metrics.get('train_seconds', 0):.1f} s{capped}")
        rows["seed"] = metrics.get("seed")
        rows.update({name.replace("_", " "): value for name, value in environment.items()})
    return key_value_table(rows)


def evaluation_section(heading: str, evaluation: dict) -> str:
    """The evaluation in words, its metrics with kinds and errors, then every value it recorded."""
    parts = [f"<h3>{escape(heading)}</h3>"]
    summary = format_metrics(evaluation)
    if summary:
        parts.append(f"<pre>{escape(summary)}</pre>")
    scored = metrics_record(evaluation)
    if scored:
        rows = []
        for key, entry in scored.items():
            error = entry.get("std_err", entry.get("spread"))
            error_text = "" if error is None else f"± {error:.4g}" + (" (spread)" if "spread" in entry else "")
            value = "-" if entry["value"] is None else f"{entry['value']:.6g}"
            rows.append(f"<tr><td>{escape(key)}</td><td{NUMBER}>{escape(value)}</td>"
                        f"<td{NUMBER}>{escape(error_text)}</td>"
                        f"<td>{escape(KIND_WORDS.get(entry['kind'], entry['kind']))}</td></tr>")
        parts.append("<table><tr><th>metric</th><th>value</th><th>standard error</th><th>kind</th></tr>"
                     + "".join(rows) + "</table>")
    parts.append("<details><summary>Every recorded value</summary>" + key_value_table(flatten(evaluation))
                 + "</details>")
    return "\n".join(parts)


def figure_html(path: Path, caption: str) -> str:
    """A figure inline as base64 PNG; a file that is no PNG is named, not embedded."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return f'<p class="warning">{escape(path.name)} is not a PNG file; left out.</p>'
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure id="figure-{escape(path.stem)}"><img src="data:image/png;base64,{encoded}" '
            f'alt="{escape(path.name)}"><figcaption><b>{escape(path.name)}</b>: {escape(caption)}</figcaption></figure>')


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys; long lists shortened, with their length."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}.") if value else {name: "{}"})
        elif isinstance(value, list) and len(value) > LONG_LIST:
            shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:LONG_LIST])
            flat[name] = f"[{shown}, ...] ({len(value)} values)"
        else:
            flat[name] = value
    return flat


def key_value_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{escape(key)}</th><td>{escape(cell_text(value))}</td></tr>" for key, value in values.items())
    return f"<table>{rows}</table>"


def cell_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "-" if value is None else str(value)


# --- comparisons -------------------------------------------------------------------------------
def comparison_section(runs: list[RunView]) -> str:
    """The runs side by side, one table per dataset, each run's best test evaluation (as `bench import`)."""
    records, left_out = [], []
    for run in runs:
        try:
            records.append(import_run(run.path))
        except ValueError as e:
            left_out.append(str(e))
    parts = ["<h2>Comparison</h2>", dataset_tables(records, sorted({r["dataset"] for r in records}))]
    parts += [f'<p class="warning">Not compared: {escape(reason)}</p>' for reason in left_out]
    return "\n".join(parts)


def bench_section(records: list[dict], datasets: list[str]) -> str:
    """The results file's rows of the runs' datasets (the leaderboard these runs sit in)."""
    return "<h2>Bench results</h2>\n" + dataset_tables(records, datasets)


def dataset_tables(records: list[dict], datasets: list[str]) -> str:
    """A heading and the default view's table of the latest ``records`` of each of ``datasets``."""
    parts = []
    for dataset in datasets:
        rows = select(records, data=[dataset])
        if rows:
            parts.append(f"<h3>{escape(dataset)}</h3>" + table_html(table(rows, default_view(rows))))
        else:
            parts.append(f"<p>The results have no rows for {escape(dataset)}.</p>")
    return "\n".join(parts)


def table_html(drawn: Table) -> str:
    header = "".join(f"<th>{escape(c.header)}</th>" for c in drawn.columns)
    body = "".join("<tr>" + "".join(f"<td{NUMBER if c.numeric else ''}>{markdown_code(cell)}</td>"
                                    for c, cell in zip(drawn.columns, cells)) + "</tr>" for cells in drawn.cells)
    notes = "".join(f'<p class="muted">{markdown_code(note)}</p>' for note in drawn.notes)
    return f'<div class="scroll"><table><tr>{header}</tr>{body}</table></div>{notes}'


def markdown_code(text: str) -> str:
    """A table cell's text escaped, its markdown `code` spans (commands, recipe names) as <code>."""
    pieces = escape(text).split("`")
    if len(pieces) % 2 == 0:  # an unpaired backtick: plain text
        return escape(text)
    return "".join(f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(pieces))
