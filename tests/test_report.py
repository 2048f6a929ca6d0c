"""genzoo report: one self-contained page holding every figure and metric of a run, escaped, offline."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import distinct_colours, visit

from genzoo.bench.records import metrics_record
from genzoo.checkpoint import METRICS_FILE, REPORT_FILE
from genzoo.cli import main
from genzoo.window.report import flatten
from genzoo.window.run_view import open_run


class Page(HTMLParser):
    """The parts of a page the tests look at: tags, attributes, images, visible text, table rows."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.images: list[str] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def test_train_writes_a_report_with_every_figure_and_metric(vae_run):
    run = open_run(vae_run)
    page = read_page(vae_run / REPORT_FILE)
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in page.images]
    assert run.figures, "the tiny run drew figures"
    for path, _ in run.figures:  # each figure, byte for byte
        assert path.read_bytes() in embedded, f"{path.name} is not in the report"
    assert {"loss_curves.png", "samples.png", "samples_over_training.png"} <= {p.name for p, _ in run.figures}
    metrics = json.loads((vae_run / METRICS_FILE).read_text())
    rows: dict[str, list[str]] = {}  # metric -> value, standard error, kind: the first table is metrics.json's
    for row in page.rows:  # (other tests may have added `genzoo eval` sections after it)
        if len(row) == 4:
            rows.setdefault(row[0], row[1:])
    for key, entry in metrics_record(metrics).items():  # the metrics table: value, standard error, kind
        assert key in rows, f"metric {key} missing"
        assert float(rows[key][0]) == pytest.approx(entry["value"], rel=1e-5)
        if "std_err" in entry:
            assert float(rows[key][1].removeprefix("± ")) == pytest.approx(entry["std_err"], rel=1e-3)
    assert rows["nll_nats"][2].startswith("upper bound"), "the NLL's kind is said"
    named = {row[0] for row in page.rows if len(row) == 2}  # the key-value tables
    for key in flatten(metrics):  # and every recorded value, by name
        assert key in named, f"recorded value {key} missing"
    for key in run.config["model_config"]:
        assert key in named


def test_eval_adds_its_evaluation_to_the_report(vae_run, tmp_path, cli):
    run_dir = tmp_path / "run"
    shutil.copytree(vae_run, run_dir)
    code, _, err = cli("eval", run_dir, "--metrics", "nll", "--draws", "2", "--limit", "50")
    assert code == 0, err
    page = read_page(run_dir / REPORT_FILE)
    assert "genzoo eval (eval_test_limit50.json)" in page.all_text
    assert "fixed random subset of 50 of 360" in page.all_text


def test_the_page_requests_nothing_outside_itself(vae_run):
    page = read_page(vae_run / REPORT_FILE)
    for tag, name, value in page.attributes:
        if name in ("src", "href"):
            assert value.startswith(("data:image/png;base64,", "#")), f"<{tag} {name}={value[:60]}> leaves the page"
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    text = (vae_run / REPORT_FILE).read_text()
    assert "@import" not in text and "url(" not in text


def test_strings_from_a_run_are_escaped(vae_run, tmp_path):
    run_dir = tmp_path / 'evil<script>alert("dir")</script>'
    shutil.copytree(vae_run, run_dir)
    hostile = '</td><script>alert("warning")</script><img src=x onerror="alert(1)">'
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    metrics["training_warnings"] = [hostile]
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics))
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["data_root"] = hostile
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["report", str(run_dir), "--out", str(tmp_path / "page.html")]) == 0
    page = read_page(tmp_path / "page.html")
    assert "script" not in page.tags
    assert not [a for a in page.attributes if a[1].startswith("on")]
    assert all(src.startswith("data:") for src in page.images)
    assert hostile in page.all_text, "the hostile strings are shown as text"
    assert 'evil<script>alert("dir")</script>' in page.all_text


def test_several_runs_are_compared_by_dataset(tiny_run, tmp_path):
    arena = tmp_path / "gmm-moons"
    assert main(["train", "gmm", "--data", "two-moons", "--max-steps", "5", "--out", str(arena)]) == 0
    unevaluated = tmp_path / "unevaluated"
    shutil.copytree(tiny_run("ae"), unevaluated)
    (unevaluated / METRICS_FILE).unlink()
    out = tmp_path / "compare.html"
    runs = [tiny_run("vae"), tiny_run("ae"), arena, unevaluated]
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    page = read_page(out)
    headings = page.all_text
    assert "Comparison" in headings and "digits" in headings and "two-moons" in headings
    models, header = [], None
    for row in page.rows:  # a comparison's header row names the column of models (the arena's comes second)
        if {"model", "budget", "command"} <= set(row):
            header = row
        elif header is not None and len(row) == len(header):
            models.append(row[header.index("model")])
        else:
            header = None
    assert sorted(models) == ["ae", "gmm", "vae"], "one comparison row per evaluated run"
    assert "Not compared" in headings and "unevaluated" in headings
    assert len([a for a in page.attributes if a[:2] == ("section", "id")]) == 4


def test_bench_rows_of_the_runs_dataset(vae_run, tmp_path, cli):
    bench = tmp_path / "bench"
    code, _, err = cli("bench", "import", vae_run, "--out", bench)
    assert code == 0, err
    code, _, err = cli("report", vae_run, "--bench", bench, "--out", tmp_path / "page.html")
    assert code == 0, err
    page = read_page(tmp_path / "page.html")
    assert "Bench results" in page.all_text
    assert any(row and row[0] == "vae" and row[1] == "latent" for row in page.rows)


@pytest.mark.parametrize("case", ["not a run", "no such directory", "empty bench", "no output directory"])
def test_bad_input_is_one_line(case, vae_run, tmp_path, cli):
    args = {"not a run": [tmp_path], "no such directory": [tmp_path / "missing"],
            "empty bench": [vae_run, "--bench", tmp_path], "no output directory": [vae_run]}[case]
    out = tmp_path / ("missing" if case == "no output directory" else "") / "page.html"
    code, _, err = cli("report", *args, "--out", out)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genzoo: error: ")
    assert {"not a run": "not a genzoo run directory", "no such directory": "not a directory",
            "empty bench": "no results file", "no output directory": "does not exist"}[case] in lines[0]
    assert not out.exists()


def test_chromium_draws_the_report_without_the_network(vae_run, chromium, tmp_path):
    screenshot, requests = visit(chromium, (vae_run / REPORT_FILE).resolve().as_uri(), tmp_path)
    assert distinct_colours(screenshot) > 50, "the page rendered blank"
    assert not [url for url in requests if not url.startswith(("file:", "data:"))]
