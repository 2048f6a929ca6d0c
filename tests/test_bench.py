"""`genzoo bench`, its results file and its tables: one model per family, a few steps, on both kinds of data."""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path

import pytest

from genzoo import figures
from genzoo.bench import runner
from genzoo.bench.records import (
    RESULTS_FILE,
    ResultsError,
    append_record,
    import_run,
    metrics_record,
    read_results,
    record_key,
)
from genzoo.bench.tables import command_cell, regenerate_readme, render
from genzoo.cli import main as genzoo
from genzoo.cli import render_table_command
from genzoo.models.registry import MODELS, RECIPES

ONE_PER_FAMILY = {"digits": "vae,gan,made", "eight-gaussians": "vae,gan,made"}
README = Path(__file__).resolve().parents[1] / "README.md"


def bench(out: Path, data: str, models: str, steps: int = 3, *extra: str) -> list[dict]:
    assert genzoo(["bench", "--data", data, "--models", models, "--max-steps", str(steps), "--out", str(out),
                   *extra]) == 0
    return read_results(out / RESULTS_FILE)


@pytest.fixture(scope="module")
def digits_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-digits")
    return out, bench(out, "digits", ONE_PER_FAMILY["digits"])


@pytest.mark.parametrize("data", ["digits", "eight-gaussians"])
def test_a_tiny_bench_records_every_metric_with_its_kind_and_provenance(data, digits_bench, tmp_path):
    records = digits_bench[1] if data == "digits" else bench(tmp_path, data, ONE_PER_FAMILY[data])
    assert [r["model"] for r in records] == ["vae", "gan", "made"]
    assert [r["family"] for r in records] == ["latent", "adversarial", "autoregressive"]
    vae, gan, made = records
    for r in records:
        assert r["status"] == "ok" and r["dataset"] == data and r["split"] == "test" and r["subset"] is None
        assert r["training"]["steps"] == 3 and r["training"]["budget_override"] == 3
        if data == "digits":  # no recipes: each model's defaults, which `genzoo train MODEL` trains
            assert r["recipe"] == f"{r['model']}-default"
            assert r["command"] == f"genzoo train {r['model']} --data digits --max-steps 3"
        else:  # the arena's short recipes
            assert r["command"] == f"genzoo train {r['model']} --recipe {r['model']}-arena --data {data} --max-steps 3"
        env = r["environment"]
        assert env["genzoo_version"] and env["threads"] >= 1 and env["device"].startswith("cpu")
        assert r["provenance"]["source"] == "bench" and Path(r["provenance"]["run_dir"]).is_dir()
        assert all(m["kind"] in ("exact", "lower_bound", "estimate", "sample", "diagnostic")
                   for m in r["metrics"].values())
    assert vae["likelihood"] == "lower_bound" and vae["metrics"]["nll_nats"]["kind"] == "lower_bound"
    draws = MODELS["vae"].eval_defaults.draws if data == "digits" else RECIPES["vae-arena"].eval_draws
    assert vae["estimator"]["draws"] == draws and vae["metrics"]["nll_nats"]["std_err"] > 0
    assert made["likelihood"] == "exact" and made["metrics"]["nll_nats"]["kind"] == "exact"
    assert gan["likelihood"] == "unavailable" and "nll_nats" not in gan["metrics"]
    sample_keys = {"digits": ("fd", "kid", "precision", "recall"),
                   "eight-gaussians": ("sliced_wasserstein", "mmd2", "histogram_kl_nats")}[data]
    for r in records:
        assert all(r["metrics"][k]["kind"] == "sample" for k in sample_keys)
    if data == "eight-gaussians":
        assert made["metrics"]["kl_nats"]["kind"] == "exact" and made["metrics"]["kl_nats"]["std_err"] > 0


def test_a_bench_leaves_each_run_its_report_and_one_page_of_them_all(digits_bench):
    out, records = digits_bench
    page = (out / "report.html").read_text()
    for r in records:
        run_dir = Path(r["provenance"]["run_dir"])
        title = escape(f"{r['model']} on digits ({run_dir.name})")
        assert title in (run_dir / "report.html").read_text() and title in page
    assert "<h2>Comparison</h2>" in page and "<h2>Bench results</h2>" in page


def test_every_model_has_a_row_on_a_dataset_or_a_reason_why_not():
    for data in ("digits", "eight-gaussians"):
        entries = runner.plan(data, "all")
        assert {e.model for e in entries} == set(MODELS)
        for e in entries:
            assert (e.recipe is None) == (e.reason is not None)
    skipped = {e.model: e.reason for e in runner.plan("eight-gaussians", "all") if e.reason}
    assert set(skipped) == {"cvae", "dcgan", "cgan", "pixelcnn", "gated-pixelcnn", "pixelrnn", "mob", "rbm", "d3pm"}
    assert "needs class labels" in skipped["cvae"] and "models images" in skipped["pixelcnn"]
    assert "mob models binary data, and eight-gaussians is real-valued" in skipped["mob"]
    assert "d3pm models binary or discrete data, and eight-gaussians is real-valued" in skipped["d3pm"]


def test_a_recipe_that_starts_from_another_runs_after_it():
    names = [e.recipe.name for e in runner.plan("binarized_mnist", recipes=["iwae-gated-finetuned"])]
    assert names == ["vae-gated-selected", "vae-gated-finetuned", "iwae-gated-finetuned"]
    full = [e.recipe.name for e in runner.plan("binarized_mnist", "vae,iwae", "full")]
    assert full == ["vae-vamp-cosine", "iwae-vamp-gentle"]


def test_an_interrupted_bench_resumes_to_the_same_records(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    real_call = figures.SamplesOverTraining.__call__

    def interrupt_in_made(self, trainer):  # after made's first checkpoint (9 steps of 1,257 / 128)
        real_call(self, trainer)
        if trainer.model_name == "made":
            raise KeyboardInterrupt

    monkeypatch.setattr(figures.SamplesOverTraining, "__call__", interrupt_in_made)
    assert genzoo(["bench", "--data", "digits", "--models", ONE_PER_FAMILY["digits"], "--max-steps", "20",
                   "--out", str(out)]) == 130
    assert "kept (resume: run the same command)" in capsys.readouterr().err
    assert [r["model"] for r in read_results(out / RESULTS_FILE)] == ["vae", "gan"]  # the finished rows are kept
    monkeypatch.undo()
    resumed = bench(out, "digits", ONE_PER_FAMILY["digits"], 20)
    assert "made-default-20steps from step 9 of 20" in capsys.readouterr().err  # resumed, not trained afresh
    reference = bench(tmp_path / "reference", "digits", ONE_PER_FAMILY["digits"], 20)
    assert len(resumed) == 3
    for a, b in zip(resumed, reference):
        assert a["training"]["steps"] == b["training"]["steps"] == 20
        assert a["metrics"] == b["metrics"]
    assert len(read_results(out / RESULTS_FILE)) == 3  # a finished bench adds nothing when run again
    bench(out, "digits", ONE_PER_FAMILY["digits"], 20)
    assert len(read_results(out / RESULTS_FILE)) == 3


def test_a_half_written_last_line_is_skipped_with_a_warning_and_dropped_on_append(digits_bench, tmp_path, capsys):
    source, records = digits_bench
    path = tmp_path / RESULTS_FILE
    text = (source / RESULTS_FILE).read_text()
    path.write_text(text + text.splitlines()[0][:40])
    assert read_results(path) == records
    assert "line 4 is half-written" in capsys.readouterr().err
    append_record(path, records[0])
    assert "dropping the half-written last line" in capsys.readouterr().err
    assert read_results(path) == [*records, records[0]]
    path.write_text(text.splitlines()[0][:40] + "\n" + text)
    with pytest.raises(ResultsError, match="line 1 is not a JSON record"):
        read_results(path)


def test_a_record_of_another_schema_names_its_version(digits_bench, tmp_path):
    records = digits_bench[1]
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps({**records[0], "schema": 2}) + "\n")
    with pytest.raises(ResultsError, match=r"line 1 was written by genzoo .* with results schema 2; this genzoo "
                                           r"reads schema 1"):
        read_results(path)
    path.write_text('{"model": "vae"}\n')
    with pytest.raises(ResultsError, match="not a genzoo results record"):
        read_results(path)


def test_import_turns_a_trained_run_into_a_record_with_its_provenance(tmp_path, capsys):
    run = tmp_path / "run"
    assert genzoo(["train", "vae", "--max-steps", "3", "--hidden-dim", "16", "--out", str(run),
                   "--eval-metrics", "nll", "--eval-draws", "4"]) == 0
    assert genzoo(["bench", "import", str(run), "--out", str(tmp_path / "b")]) == 0
    record, = read_results(tmp_path / "b" / RESULTS_FILE)
    assert record["provenance"] == {"source": "import", "run_dir": str(run.resolve()), "evaluation_file": "metrics.json"}
    assert record["estimator"]["draws"] == 4 and record["training"]["steps"] == 3
    assert record["command"] == "genzoo train vae --data digits --max-steps 3 --set hidden_dim=16"
    assert genzoo(["eval", str(run), "--draws", "6", "--metrics", "nll"]) == 0  # a later evaluation is preferred
    assert import_run(run)["estimator"]["draws"] == 6
    with pytest.raises(ValueError, match="was trained on digits, and recipe vae-short is for binarized_mnist"):
        import_run(run, RECIPES["vae-short"])
    assert genzoo(["bench", "import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 1
    assert "is not a genzoo run directory" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--data", "digits", "--models", "vae,nope"], "unknown model(s) nope in --models; choose 'all' or from: ae"),
    (["--data", "eight-gaussians", "--models", "pixelcnn"], "pixelcnn does not apply to eight-gaussians"),
    (["--data", "digits", "--recipes", "nope"], "unknown recipe 'nope'"),
    (["--data", "digits", "--recipes", "vae-short"], "recipe vae-short is for binarized_mnist, not digits"),
    (["--data", "digits", "--max-steps", "0"], "a budget below one optimizer step trains nothing"),
    (["--data", "nope"], "unknown dataset 'nope'"),
])
def test_bad_bench_input_fails_in_one_line(argv, message, tmp_path, capsys):
    assert genzoo(["bench", *argv, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / RESULTS_FILE).exists()


def kinds_records() -> list[dict]:
    base = {"schema": 1, "status": "ok", "dataset": "binarized_mnist", "family": "latent", "training": {}}
    return [{**base, "model": model, "recipe": model, "likelihood": kind,
             "metrics": {"nll_nats": {"value": value, "kind": kind}}}
            for model, kind, value in (("a", "lower_bound", 90.0), ("b", "exact", 80.0), ("c", "estimate", 85.0))]


def test_a_ranking_marks_each_kind_of_likelihood():
    table = render(kinds_records(), view="likelihood", sort="nll_nats").splitlines()
    rows = [line.split(" | ") for line in table[2:5]]
    assert [row[0] for row in rows] == ["| b", "| c", "| a"]  # ranked by value, exact first here
    assert [row[5] for row in rows] == ["80.00", "≈ 85.00", "≤ 90.00"]
    legend = "\n".join(table[5:])
    assert "plain: exact" in legend and "≤: an upper bound" in legend and "≈: an estimate that is no bound" in legend
    assert "Ranked by nll_nats across 3 kinds of number" in legend
    csv = render(kinds_records(), fmt="csv").splitlines()
    assert csv[0].split(",")[12:15] == ["nll_nats", "nll_nats_kind", "nll_nats_std_err"]
    assert [line.split(",")[13] for line in csv[1:]] == ["lower_bound", "exact", "estimate"]


def test_a_view_leaves_out_records_with_none_of_its_metrics():
    """Another sampler's record of a run (sample metrics, no NLL) would be a row of dashes among the likelihoods, and
    an NLL alone one among the samples; a failed run keeps its row."""
    bound, = kinds_records()[:1]
    sampler = {**bound, "sampling": {"sampler": "ddim", "chosen": True, "steps": 10}, "likelihood": None,
               "metrics": {"fd": {"value": 100.0, "kind": "sample"}}}
    failed = {**bound, "model": "f", "recipe": "f", "status": "failed", "reason": "NaN", "metrics": {}}
    table = render([bound, sampler, failed], view="likelihood")
    assert table.count("| a |") == 1 and "| f |" in table
    assert "| a |" not in render([bound, failed], view="samples") and "| f |" in render([failed], view="samples")
    assert "| a |" in render([bound, sampler], view="sampling") and "100.0" in render([sampler], view="sampling")


def test_a_later_record_of_the_same_run_supersedes_the_earlier(digits_bench):
    _, records = digits_bench
    newer = {**records[0], "metrics": {"nll_nats": {"value": 1.0, "kind": "exact"}}}
    assert record_key(newer) == record_key(records[0])
    table = render([*records, newer], view="likelihood")
    assert table.count("| vae |") == 1 and "| 1.00 |" in table


def test_a_row_of_an_earlier_recipe_version_says_that_its_command_now_trains_the_current_one():
    current = RECIPES["ebm-mnist-dsm"].version
    command = "genzoo train ebm --recipe ebm-mnist-dsm --data mnist"
    row = {"command": command, "recipe": "ebm-mnist-dsm"}
    assert command_cell({**row, "recipe_version": current}) == f"`{command}`"
    assert command_cell({**row, "recipe_version": current - 1}) == f"`{command}` (now trains v{current})"
    assert command_cell({**row, "recipe": None, "recipe_version": None}) == f"`{command}`"  # flags, no recipe


def test_the_readme_tables_agree_with_the_results_file():
    _, changed = regenerate_readme(README, render_table_command)
    assert not changed, f"README tables at lines {changed} disagree with the results: run `genzoo bench readme`"


def test_past_the_evaluation_cap_the_nll_is_taken_on_a_fixed_random_subset_and_said(tmp_path):
    made, = bench(tmp_path, "eight-gaussians", "made", 3, "--eval-minutes", "1e-6")
    assert made["num_examples"] == runner.PROBE_EXAMPLES
    assert made["subset"].startswith(f"the NLL on a fixed random {runner.PROBE_EXAMPLES} of the 10,000 test examples")
    assert made["subset"].endswith("past the 1e-06-minute evaluation cap")
    assert made["metrics"]["sliced_wasserstein"]["value"] is not None  # sample metrics keep the whole split


def test_the_wall_clock_cap_stops_training_with_a_checkpoint_and_resumes_past_it(tmp_path):
    from genzoo.train.loop import train

    out = tmp_path / "run"
    _, summary = train("vae", out, {"hidden_dim": 8, "latent_dim": 2}, max_steps=30, max_minutes=1e-9, log_every=5)
    assert summary["time_capped"] and summary["steps"] == 5 and (out / "train_state.safetensors").exists()
    _, summary = train("vae", out, resume=True, max_steps=30, max_minutes=60)
    assert not summary["time_capped"] and summary["steps"] == 30


def test_a_run_that_fails_is_recorded_with_its_error_and_the_bench_goes_on(tmp_path, monkeypatch):
    from genzoo.train.loop import TrainingDiverged

    real_train = runner.train_entry

    def diverge_in_vae(r, *args):
        if r.model == "vae":
            raise TrainingDiverged("training stopped at step 2: loss term 'kl' (phase 'model') is nan")
        return real_train(r, *args)

    monkeypatch.setattr(runner, "train_entry", diverge_in_vae)
    vae, made = bench(tmp_path, "digits", "vae,made", 2)
    assert vae["status"] == "failed" and "loss term 'kl'" in vae["reason"] and made["status"] == "ok"
    assert "| vae | failed: training stopped at step 2" in render([vae, made], view="likelihood")


def test_a_run_trained_by_a_recipe_keeps_its_name_unless_flags_changed_it(tmp_path, local_data):
    flags = ["--data", "binarized_mnist", "--max-steps", "2", "--eval-metrics", "nll", "--eval-draws", "2"]
    data_root = local_data("binarized_mnist")
    runs = {}
    for name, extra in (("as-is", []), ("changed", ["--lr", "0.01"])):
        runs[name] = tmp_path / name
        assert genzoo(["train", "vae", "--recipe", "vae-short", "--data-root", str(data_root), *flags,
                       "--out", str(runs[name]), *extra]) == 0
    as_is, changed = import_run(runs["as-is"]), import_run(runs["changed"])
    assert as_is["recipe"] == "vae-short" and as_is["training"]["budget_override"] == 2 and as_is["notes"] is None
    assert changed["recipe"] is None and "lr 0.01 (recipe: 0.001)" in changed["notes"]
    assert "--lr 0.01" in changed["command"]

    # A run saved before an option existed was trained with its default: it still matches the recipe, unless the
    # recipe sets that option otherwise.
    config_path = runs["as-is"] / "config.json"
    config = json.loads(config_path.read_text())
    del config["model_config"]["pseudo_inputs"]
    config_path.write_text(json.dumps(config))
    assert import_run(runs["as-is"], RECIPES["vae-short"])["recipe"] == "vae-short"
    del config["model_config"]["latent_dim"]  # the recipe's 32, not the default 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"was not trained by recipe vae-short: latent_dim 16 \(recipe: 32\)"):
        import_run(runs["as-is"], RECIPES["vae-short"])


def test_a_complete_last_record_without_its_newline_is_kept_on_append(digits_bench, tmp_path):
    records = digits_bench[1]
    path = tmp_path / RESULTS_FILE
    path.write_text("\n".join(json.dumps(r) for r in records[:2]))  # an edited file: no final newline
    append_record(path, records[2])
    assert read_results(path) == records


def test_a_metric_that_was_not_finite_renders_as_its_note():
    record = {"schema": 1, "status": "ok", "model": "vae", "dataset": "mnist", "recipe": "r", "training": {},
              "metrics": {"kid": {"value": None, "kind": "sample", "note": "not finite: nan"},
                          "fd": {"value": None, "kind": "sample", "note": "not finite: inf"}}}
    row = render([record], view="samples").splitlines()[2]
    assert "| not finite: inf | not finite: nan |" in row


def test_a_generated_block_without_its_end_line_fails_before_touching_the_next(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated: genzoo bench table r.jsonl --data digits -->\n| old |\n"
                      "<!-- generated: genzoo bench table r.jsonl --data mnist -->\n<!-- end generated -->\n")
    with pytest.raises(ValueError, match="README line 1: a generated block without its"):
        regenerate_readme(readme, render_table_command)


def test_the_evaluation_cap_counts_per_example_time_not_a_one_off_cost(monkeypatch):
    """An RBM's AIS log Z is computed once per model and cached: the probe must not bill it to every example."""
    calls = []

    def likelihood_metrics(model, split, info, draws, limit):
        calls.append(limit)
        time.sleep(0.5 if len(calls) == 1 else 0.0)  # the first call pays the one-off cost

    monkeypatch.setattr(runner, "likelihood_metrics", likelihood_metrics)
    split = type("Split", (), {"__len__": lambda self: 10_000, "split": "test"})()
    # 0.5 s over 100 examples would be 50 s for the split, past a 10 s cap; per example it is nearly free
    assert runner.likelihood_limit(None, split, None, None, cap_seconds=10.0) == (None, None)
    assert calls == [runner.PROBE_EXAMPLES, runner.PROBE_EXAMPLES]


def test_an_estimator_beside_the_first_keeps_its_own_kind_and_example_count():
    evaluation = {"likelihood": "estimate", "nll_nats": 89.2, "nll_std_err": None, "nll_raise_nats": 91.0,
                  "nll_raise_std_err": 0.1, "nll_raise_kind": "estimate", "raise_examples": 1000,
                  "raise_paired_nll_nats": 89.5}
    record = metrics_record(evaluation)
    assert record["nll_raise_nats"] == {"value": 91.0, "kind": "estimate", "examples": 1000, "std_err": 0.1,
                                        "paired": 89.5}
    assert record["nll_nats"]["kind"] == "estimate"
    rbm = {**kinds_records()[2], "model": "rbm", "metrics": record}
    table = render([*kinds_records()[:2], rbm], view="likelihood").splitlines()
    header = table[0].split(" | ")
    assert header[header.index("NLL (nats)") + 1] == "RAISE NLL (nats)"  # right beside the NLL
    cells = {row.split(" | ")[0]: row.split(" | ")[header.index("RAISE NLL (nats)")] for row in table[2:5]}
    assert cells == {"| a": "-", "| b": "-", "| rbm": "≈ 91.00 ± 0.1 (1,000 images; NLL there 89.50)"}
    assert "RAISE" not in render(kinds_records(), view="likelihood")  # no column where no record has one
