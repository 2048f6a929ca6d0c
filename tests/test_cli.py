"""The ``genzoo`` command: list, train, eval, sample, resume, and one-line errors for bad input.

Commands run in-process through ``genzoo.cli.main(argv) -> exit code``; one test runs the installed
console script to prove the entry point. Models are tiny (hidden 32, latent 4, <= 20 steps).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genzoo.checkpoint import CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, read_tensors
from genzoo.cli import main
from genzoo.data import images
from genzoo.data.registry import DATASETS, list_datasets
from genzoo.models.registry import MODELS
from genzoo.train.config import TrainConfig

SMALL = ["--hidden-dim", "32", "--latent-dim", "4"]
RUN_FILES = {CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, "log.csv", "metrics.json", "samples.png", "loss_curves.png"}
LATENT_FIGURES = {"reconstructions.png", "latent_traversal.png", "interpolation.png"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




def one_line_error(code: int, err: str) -> str:
    """The single ``genzoo: error: ...`` line of a failed command (tqdm lines aside)."""
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("genzoo: error: "), lines[0]
    return lines[0]


def usage_error(capsys, *argv: str) -> str:
    """argparse's message for a bad flag or choice (it exits with status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: genzoo")
    return err.strip().splitlines()[-1]


def log_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def copy_run(run_dir: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run_dir, dest))


# --- list and help ------------------------------------------------------------------------------
def test_list_prints_every_model_and_dataset_with_its_description(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name, cls in MODELS.items():
        assert any(line.split()[:1] == [name] and cls.description in line for line in out.splitlines()), name
    for name, description in list_datasets():
        assert any(line.split()[:1] == [name] and description in line for line in out.splitlines()), name
    assert set(DATASETS) == {name for name, _ in list_datasets()}


@pytest.mark.parametrize("model, own_flag, own_default", [
    ("vae", "--latent-dim", "(default: 16)"),
    ("iwae", "--k", "(default: 5)"),
    ("cvae", "--prior", "(default: standard)"),
])
def test_train_help_lists_every_option_with_its_default(capsys, model, own_flag, own_default):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", model, "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    for cls in (MODELS[model].Config, TrainConfig):
        for field in dataclasses.fields(cls):
            assert f"--{field.name.replace('_', '-')}" in help_text, f"{cls.__name__}.{field.name}"
    assert f"{own_flag} " in help_text and own_default in help_text
    # each flag: its type, its help (the field's comment), then its default
    assert re.search(r"--max-steps INT stop after this many optimizer steps instead \(default: None\)", help_text)
    assert re.search(r"--lr FLOAT AdamW learning rate \(default: 0.001\)", help_text)
    assert re.search(r"--betas TUPLE AdamW betas \(default: 0.9,0.999\)", help_text)
    assert "--set NAME=VALUE" in help_text and "--resume" in help_text


# --- train --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["ae", "vae", "cvae", "dvae", "iwae"])
def test_train_writes_a_complete_run_directory(tiny_run, model):
    run_dir = tiny_run(model)  # 20 steps on digits; cvae with a learned prior, iwae with k=3 and a VampPrior
    files = {p.name for p in run_dir.iterdir()}
    expected = RUN_FILES | LATENT_FIGURES
    expected |= {"class_grid.png"} if model == "cvae" else set()
    expected |= {"denoising.png"} if model == "dvae" else set()
    assert expected <= files, f"missing: {sorted(expected - files)}"
    for png in (p for p in run_dir.iterdir() if p.suffix == ".png"):
        assert png.read_bytes()[:8] == PNG_MAGIC, png.name

    config = json.loads((run_dir / CONFIG_FILE).read_text())
    assert config["model"] == model and config["data"]["name"] == "digits"
    assert config["model_config"]["hidden_dim"] == 32 and config["model_config"]["latent_dim"] == 4
    assert config["train"]["max_steps"] == 20
    if model == "cvae":
        assert config["model_config"]["prior"] == "learned"
    if model == "iwae":
        assert config["model_config"]["k"] == 3 and config["model_config"]["prior"] == "vamp"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_steps"] == 20 and metrics["split"] == "test" and metrics["num_examples"] == 360
    if model == "ae":
        assert metrics["likelihood"] == "unavailable"
        assert metrics["nll_nats"] is None and metrics["bits_per_dim"] is None
    else:
        assert metrics["likelihood"] == "lower_bound" and metrics["draws"] == 5 and metrics["estimator"] == "importance"
        for key in ("nll_nats", "bits_per_dim", "neg_elbo_nats"):
            assert math.isfinite(metrics[key]) and metrics[key] > 0, key
        assert metrics["bits_per_dim"] == pytest.approx(metrics["nll_nats"] / (64 * math.log(2)))
    assert int(log_rows(run_dir)[-1]["step"]) == 20


def test_train_by_epochs_runs_whole_epochs(tmp_path, cli):
    # 1,257 training digits / batch 128 = 9 steps per epoch.
    code, out, _ = cli("train", "vae", "--out", tmp_path / "r", "--epochs", "1", *SMALL,
                       "--eval-iw-samples", "0")
    assert code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["train_steps"] == 9 and metrics["train_epochs"] == 1.0
    assert "nll_nats" not in metrics  # --eval-iw-samples 0 skips the likelihood
    assert "9 steps (1.0 epochs)" in out


def test_resume_continues_to_the_new_step_budget(tmp_path, cli):
    out = tmp_path / "r"
    assert cli("train", "vae", "--out", out, "--max-steps", "10", *SMALL, "--eval-iw-samples", "0")[0] == 0
    assert int(log_rows(out)[-1]["step"]) == 10
    code, stdout, err = cli("train", "vae", "--out", out, "--resume", "--max-steps", "20", "--eval-iw-samples", "0")
    assert code == 0 and f"genzoo: resuming {out} from step 10 of 20" in err
    assert [int(row["step"]) for row in log_rows(out)] == [10, 20]
    assert read_tensors(out / TRAIN_STATE_FILE)[1]["step"] == 20
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 20
    assert "20 steps" in stdout


# --- eval ---------------------------------------------------------------------------------------
def test_eval_json_prints_exactly_one_object_and_writes_it(vae_run, cli, tmp_path):
    run_dir = copy_run(vae_run, tmp_path / "run")  # eval writes into the run
    code, out, _ = cli("eval", run_dir, "--split", "test", "--iw-samples", "10", "--limit", "50", "--json")
    assert code == 0
    metrics = json.loads(out)  # the whole of stdout is one JSON object
    assert {"nll_nats", "bits_per_dim", "neg_elbo_nats", "num_examples", "split", "draws", "nll_std_err"} <= set(metrics)
    assert metrics["num_examples"] == 50 and metrics["split"] == "test" and metrics["draws"] == 10
    # The 10-sample importance-weighted bound is tighter than the ELBO.
    assert metrics["nll_nats"] <= metrics["neg_elbo_nats"]
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll_nats"] / (64 * math.log(2)))
    written = json.loads((run_dir / "eval_test_limit50.json").read_text())
    assert written == metrics


def test_eval_without_json_prints_readable_lines(vae_run, cli, tmp_path):
    code, out, _ = cli("eval", copy_run(vae_run, tmp_path / "run"), "--split", "valid", "--iw-samples", "5", "--limit",
                       "20")
    assert code == 0
    assert out.startswith("valid split: 20 examples")
    assert "negative ELBO" in out and "upper bound: importance, 5 draws" in out


SAMPLE_QUALITY_KEYS = {"fd", "kid", "kid_std", "precision", "recall", "classifier_score", "num_samples",
                       "feature_net", "split"}


def test_eval_sample_quality_metrics_for_a_likelihood_model_and_a_conditional_one(tiny_run, cli, tmp_path):
    code, out, _ = cli("eval", copy_run(tiny_run("vae"), tmp_path / "vae"), "--metrics", "fd,kid,pr,score", "--json")
    assert code == 0
    metrics = json.loads(out)
    assert SAMPLE_QUALITY_KEYS <= set(metrics) and "nll_nats" not in metrics  # only what was asked for
    assert metrics["num_samples"] == metrics["num_real"] == 360  # the whole digits test split, as many samples
    assert "fc1" in metrics["feature_net"] and "digits" in metrics["feature_net"]
    assert metrics["fd"] > 0 and 0 <= metrics["precision"] <= 1 and 1 <= metrics["classifier_score"] <= 10
    code, out, _ = cli("eval", copy_run(tiny_run("cvae"), tmp_path / "cvae"), "--metrics", "nll,score", "--iw-samples",
                       "2", "--json")
    metrics = json.loads(out)
    assert code == 0 and 0 <= metrics["conditional_accuracy"] <= 1 and metrics["nll_nats"] is not None


def test_eval_with_an_unknown_metric_lists_the_valid_ones(vae_run, cli):
    line = one_line_error(*cli("eval", vae_run, "--metrics", "fd,fid")[:3:2])
    assert "fid" in line and all(m in line for m in ("nll", "fd", "kid", "pr", "score"))


def test_training_writes_samples_over_training_and_sample_metrics(vae_run):
    assert (vae_run / "samples_over_training.png").read_bytes()[:8] == PNG_MAGIC
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert {"fd", "kid", "classifier_score", "nll_nats", "training_warnings"} <= set(metrics)


def test_train_help_shows_the_model_training_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "dcgan", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--lr FLOAT AdamW learning rate (default: 0.0002)" in help_text
    assert "--betas TUPLE AdamW betas (default: 0.5,0.999)" in help_text


def test_avb_eval_reports_an_elbo_estimate_labelled_as_no_bound(tiny_run, cli, tmp_path):
    code, out, _ = cli("eval", copy_run(tiny_run("avb"), tmp_path / "avb"), "--iw-samples", "2", "--limit", "20", "--json")
    metrics = json.loads(out)
    assert code == 0 and metrics["likelihood"] == "estimate" and metrics["estimator"] == "discriminator"
    assert metrics["nll_nats"] > 0 and "not a bound" in metrics["likelihood_method"]
    code, _, err = cli("eval", tiny_run("avb"), "--estimator", "importance", "--limit", "20")
    assert code == 1 and "avb has no estimator 'importance'; its estimators: discriminator" in err


# --- sample -------------------------------------------------------------------------------------
def test_sample_writes_a_png_and_is_deterministic_given_the_seed(vae_run, tmp_path, cli):
    paths = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    for path, seed in zip(paths, ["7", "7", "8"]):
        code, out, _ = cli("sample", vae_run, "--n", "16", "--seed", seed, "--out", path)
        assert code == 0 and str(path) in out
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_sample_label_works_for_cvae_and_is_refused_for_vae(tiny_run, vae_run, tmp_path, cli):
    code, _, _ = cli("sample", tiny_run("cvae"), "--n", "16", "--label", "3", "--out", tmp_path / "three.png")
    assert code == 0 and (tmp_path / "three.png").read_bytes()[:8] == PNG_MAGIC

    code, _, err = cli("sample", vae_run, "--n", "16", "--label", "3", "--out", tmp_path / "no.png")
    message = one_line_error(code, err)
    assert "--label" in message and "conditional" in message
    assert not (tmp_path / "no.png").exists()


# --- the MNIST files in ../shared/data ----------------------------------------------------------
def test_binarized_mnist_train_and_eval_on_the_local_files(local_data, tmp_path, cli):
    root = local_data("binarized_mnist")
    out = tmp_path / "vae"
    code, _, _ = cli("train", "vae", "--data", "binarized_mnist", "--data-root", root, "--out", out,
                     "--max-steps", "5", *SMALL, "--eval-metrics", "")  # no sample metrics of 10,000 images
    assert code == 0
    code, stdout, _ = cli("eval", out, "--split", "test", "--data-root", root, "--iw-samples", "5",
                          "--limit", "20", "--json")
    assert code == 0
    metrics = json.loads(stdout)
    assert metrics["num_examples"] == 20 and metrics["data"] == "binarized_mnist"
    # No test file is shipped: the validation file stands in, and the metrics say so.
    assert "binarized_mnist_valid.amat" in metrics["split_source"] and "validation" in metrics["split_source"]
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll_nats"] / (784 * math.log(2)))

    code, _, _ = cli("train", "iwae", "--data", "binarized_mnist", "--data-root", root,
                     "--out", tmp_path / "iwae", "--max-steps", "5", *SMALL, "--set", "k=5", "--eval-metrics", "")
    assert code == 0
    assert json.loads((tmp_path / "iwae" / CONFIG_FILE).read_text())["model_config"]["k"] == 5


def test_resume_reads_the_data_where_it_now_lies(local_data, tmp_path, cli):
    """A run resumed on another machine, or from another directory, is given --data-root again."""
    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(local_data("binarized_mnist"), before)
    out = tmp_path / "vae"
    common = ("--out", out, "--eval-metrics", "", "--eval-iw-samples", "0")
    assert cli("train", "vae", "--data", "binarized_mnist", "--data-root", before, "--max-steps", "2", *SMALL,
               *common)[0] == 0
    before.rename(after)
    code, _, err = cli("train", "vae", "--resume", "--data-root", after, "--max-steps", "4", *common)
    assert code == 0, err
    assert json.loads((out / CONFIG_FILE).read_text())["train"]["data_root"] == str(after)
    assert read_tensors(out / TRAIN_STATE_FILE)[1]["step"] == 4


def test_cvae_trains_on_the_local_mnist_subset(local_data, tmp_path, cli):
    root = local_data("mnist")
    out = tmp_path / "cvae"
    code, _, _ = cli("train", "cvae", "--data", "mnist", "--data-root", root, "--out", out,
                     "--max-steps", "5", *SMALL, "--eval-iw-samples", "0")
    assert code == 0
    assert {MODEL_FILE, "class_grid.png", "samples.png"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / CONFIG_FILE).read_text())["data"]["name"] == "mnist"


# --- bad input: one line naming the problem -----------------------------------------------------
def test_unknown_model_lists_the_valid_names(tmp_path, cli):
    message = one_line_error(*cli("train", "gan9000", "--out", tmp_path / "r")[::2])
    assert "'gan9000'" in message
    assert all(name in message for name in MODELS)
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_lists_the_valid_names(tmp_path, cli):
    message = one_line_error(*cli("train", "vae", "--data", "cifar99", "--out", tmp_path / "r")[::2])
    assert "'cifar99'" in message
    assert all(name in message for name in DATASETS)
    assert not (tmp_path / "r").exists()


def test_unknown_set_option_lists_the_valid_options(tmp_path, cli):
    message = one_line_error(*cli("train", "vae", "--set", "lattent_dim=3", "--out", tmp_path / "r")[::2])
    assert "lattent_dim" in message
    assert all(name in message for name in ("latent_dim", "beta", "max_steps", "lr"))


def test_set_without_equals_sign_is_refused(tmp_path, cli):
    message = one_line_error(*cli("train", "vae", "--set", "latent_dim", "--out", tmp_path / "r")[::2])
    assert "name=value" in message


def test_unknown_flag_is_an_argparse_usage_error(capsys):
    assert "--lattent-dim" in usage_error(capsys, "train", "vae", "--lattent-dim", "3")


@pytest.mark.parametrize("flag, value, field, type_name", [
    ("--latent-dim", "abc", "latent_dim", "int"),
    ("--max-steps", "1.5", "max_steps", "int"),
    ("--lr", "fast", "lr", "float"),
])
def test_a_value_of_the_wrong_type_names_the_option(tmp_path, cli, flag, value, field, type_name):
    message = one_line_error(*cli("train", "vae", flag, value, "--out", tmp_path / "r")[::2])
    assert field in message and repr(value) in message and type_name in message
    assert not (tmp_path / "r").exists()


def test_an_invalid_value_names_the_field(tmp_path, cli):
    message = one_line_error(*cli("train", "vae", "--lr-schedule", "sometimes", "--out", tmp_path / "r")[::2])
    assert "lr_schedule" in message and "'sometimes'" in message


def test_missing_mnist_files_say_which_files_go_where_without_hanging(tmp_path, cli, monkeypatch):
    # Offline: the download is tried and fails at once (nothing listens on port 9).
    monkeypatch.setattr(images, "MNIST_URL", "http://127.0.0.1:9/")
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT_S", 2.0)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    message = one_line_error(*cli("train", "vae", "--data", "mnist", "--data-root", empty,
                                  "--out", tmp_path / "r", "--max-steps", "1")[::2])
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert str(empty.resolve()) in message
    assert not (tmp_path / "r").exists()
    assert list(empty.iterdir()) == []  # no partial download left behind


def test_cvae_on_a_dataset_without_labels_is_refused(local_data, tmp_path, cli):
    root = local_data("binarized_mnist")
    message = one_line_error(*cli("train", "cvae", "--data", "binarized_mnist", "--data-root", root,
                                  "--out", tmp_path / "r", "--max-steps", "1")[::2])
    assert "cvae" in message and "labels" in message and "binarized_mnist" in message
    assert not (tmp_path / "r").exists()


def test_an_output_directory_with_files_is_refused_and_left_untouched(tmp_path, cli):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    message = one_line_error(*cli("train", "vae", "--out", out, "--max-steps", "1", *SMALL)[::2])
    assert str(out) in message and "not empty" in message and "--resume" in message
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes\n"


def test_resume_without_a_run_is_refused(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = one_line_error(*cli("train", "vae", "--out", empty, "--resume")[::2])
    assert str(empty) in message


def test_resume_without_a_training_state_is_refused(vae_run, tmp_path, cli):
    run_dir = copy_run(vae_run, tmp_path / "run")
    (run_dir / TRAIN_STATE_FILE).unlink()
    message = one_line_error(*cli("train", "vae", "--out", run_dir, "--resume", "--max-steps", "30")[::2])
    assert "cannot resume" in message and TRAIN_STATE_FILE in message


def test_resume_refuses_to_change_model_options(vae_run, tmp_path, cli):
    run_dir = copy_run(vae_run, tmp_path / "run")
    message = one_line_error(*cli("train", "vae", "--out", run_dir, "--resume", "--latent-dim", "8")[::2])
    assert "--resume" in message and "model options" in message


def test_eval_of_a_directory_that_is_not_a_run(tmp_path, cli):
    message = one_line_error(*cli("eval", tmp_path)[::2])
    assert CONFIG_FILE in message and str(tmp_path) in message and "run directory" in message


def test_eval_of_a_corrupt_model_file_names_the_file(vae_run, tmp_path, cli):
    run_dir = copy_run(vae_run, tmp_path / "run")
    (run_dir / MODEL_FILE).write_bytes(b"\x00garbage, not safetensors\xff" * 10)
    message = one_line_error(*cli("eval", run_dir, "--iw-samples", "2", "--limit", "5")[::2])
    assert str(run_dir / MODEL_FILE) in message and "corrupt" in message


def test_eval_of_weights_from_another_model_reports_the_mismatch(tiny_run, vae_run, tmp_path, cli):
    run_dir = copy_run(vae_run, tmp_path / "run")
    shutil.copy(tiny_run("cvae") / MODEL_FILE, run_dir / MODEL_FILE)
    message = one_line_error(*cli("eval", run_dir, "--iw-samples", "2", "--limit", "5")[::2])
    assert str(run_dir / MODEL_FILE) in message and "'vae'" in message
    assert "another model" in message


def test_eval_of_a_config_from_something_else(vae_run, tmp_path, cli):
    run_dir = copy_run(vae_run, tmp_path / "run")
    (run_dir / CONFIG_FILE).write_text(json.dumps({"name": "bert", "hidden_size": 768}))
    message = one_line_error(*cli("eval", run_dir, "--iw-samples", "2", "--limit", "5")[::2])
    assert str(run_dir / CONFIG_FILE) in message and "not a genzoo run config" in message


def test_eval_limit_zero_is_refused(vae_run, cli):
    message = one_line_error(*cli("eval", vae_run, "--iw-samples", "2", "--limit", "0")[::2])
    assert "limit" in message and "0" in message


def test_eval_unknown_split_is_an_argparse_usage_error(vae_run, capsys):
    message = usage_error(capsys, "eval", vae_run, "--split", "bogus")
    assert "--split" in message and "'bogus'" in message and "'test'" in message


# --- the installed entry point ------------------------------------------------------------------
def test_the_console_script_runs_and_reports_errors_by_exit_status(tmp_path):
    script = Path(sys.executable).with_name("genzoo")
    if not script.exists():
        script = shutil.which("genzoo")
        assert script, "the genzoo console script is not installed"
    listed = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert all(name in listed.stdout for name in MODELS)

    failed = subprocess.run([str(script), "eval", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("genzoo: error: ") and len(failed.stderr.strip().splitlines()) == 1


def test_an_interrupt_keeps_the_checkpoint_and_says_so_on_its_own_line(tmp_path, cli, monkeypatch):
    from genzoo.models.latent.vae import VAE

    original, calls = VAE.loss, []

    def interrupted_after_one_epoch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 10:  # one epoch of 1,257 digits at batch 128 is 9 steps: a checkpoint exists
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VAE, "loss", interrupted_after_one_epoch)
    out = tmp_path / "interrupted"
    code, _, err = cli("train", "vae", "--out", out, "--max-steps", "30", *SMALL)
    assert code == 130 and (out / TRAIN_STATE_FILE).is_file()
    assert "\ngenzoo: interrupted; the last checkpoint is kept (resume with --resume)" in err
