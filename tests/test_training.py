"""The training engine's required properties: resume, atomic checkpoints, NaN stops, two processes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genzoo import checkpoint
from genzoo.checkpoint import CheckpointError, read_tensors
from genzoo.models.registry import load_run
from genzoo.data.core import epoch_shard
from genzoo.data.registry import load_split
from genzoo.evaluate.likelihood import fixed_inputs
from genzoo.models.latent.vae import VAE
from genzoo.train import selection as model_selection
from genzoo.train.config import TrainConfig
from genzoo.train.loop import train, Trainer, TrainingDiverged
from genzoo.train.schedules import lr_factor

TINY = {"hidden_dim": 32, "latent_dim": 4}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_tensors(run_dir / checkpoint.MODEL_FILE)[0]


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    a, b = weights(run_a), weights(run_b)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_resume_gives_the_same_weights_as_one_uninterrupted_run(tmp_path, architecture):
    # 2N steps in one go vs N steps, stop, resume for N more; N crosses an epoch boundary
    # (1257 digits / batch 64 = 19 steps per epoch). The conv case checks that the optimizer
    # state regains the channels_last layout of its parameters (the fused kernel needs it).
    n = 25
    config = {**TINY, "architecture": architecture, "channels": 4}
    train("vae", tmp_path / "straight", config, max_steps=2 * n, batch_size=64, log_every=10)
    _, first_part = train("vae", tmp_path / "resumed", config, max_steps=n, batch_size=64, log_every=10)
    _, summary = train("vae", tmp_path / "resumed", resume=True, max_steps=2 * n)
    assert summary["steps"] == 2 * n
    # the run's training time counts both processes, not only the resumed one
    saved_seconds = read_tensors(tmp_path / "resumed" / checkpoint.TRAIN_STATE_FILE)[1]["train_seconds"]
    assert first_part["seconds"] < saved_seconds and summary["seconds"] >= saved_seconds
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    rows = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert rows[-1].startswith(f"{2 * n},")  # the log continued where it stopped


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    # With a cosine schedule, warm-up, clipping and EMA: everything the state must carry.
    n = 25
    options = dict(max_steps=2 * n, batch_size=64, checkpoint_every=n, ema_decay=0.9, lr_schedule="cosine",
                   warmup_steps=5, grad_clip=1.0)
    train("vae", tmp_path / "straight", TINY, **options)

    original = VAE.loss

    def killed_after_the_checkpoint(self, x, y=None, phase="model", step=None):
        if step == n + 3:
            raise KeyboardInterrupt  # the process dies between checkpoints
        return original(self, x, y, phase, step)

    monkeypatch.setattr(VAE, "loss", killed_after_the_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train("vae", tmp_path / "resumed", TINY, **options)
    monkeypatch.setattr(VAE, "loss", original)
    train("vae", tmp_path / "resumed", resume=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_model_selection_keeps_the_best_held_out_weights_and_stops_when_out_of_patience(tmp_path, monkeypatch):
    # Scripted held-out scores: the best is the 2nd checkpoint; patience 2 stops after the 4th.
    scores = iter([5.0, 3.0, 4.0, 3.5, 1.0])
    monkeypatch.setattr(model_selection, "likelihood_metrics", lambda *args, **kwargs: {"nll_nats": next(scores)})
    options = dict(epochs=10, batch_size=64, holdout=200, patience=2)
    _, summary = train("vae", tmp_path / "selected", TINY, **options)
    steps_per_epoch = (1257 - 200) // 64
    assert summary["steps"] == 4 * steps_per_epoch and summary["selection"]["stopped_early"]
    assert summary["selection"]["best_step"] == 2 * steps_per_epoch and summary["selection"]["best_nats"] == 3.0
    rows = (tmp_path / "selected" / model_selection.SELECTION_FILE).read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[2].startswith(f"{2 * steps_per_epoch},2,3.0,3.0,")
    # model.safetensors holds the weights of epoch 2: those of the same run stopped there
    monkeypatch.undo()
    train("vae", tmp_path / "two_epochs", TINY, **{**options, "epochs": 2, "patience": 0})
    assert_same_weights(tmp_path / "two_epochs", tmp_path / "selected")


def test_model_selection_resumes_to_the_same_choice(tmp_path):
    # real held-out ELBOs this time; the best weights and the scores so far travel in the train state
    options = dict(batch_size=64, holdout=200, lr=3e-3)
    train("vae", tmp_path / "straight", TINY, epochs=4, **options)
    train("vae", tmp_path / "resumed", TINY, epochs=2, **options)
    train("vae", tmp_path / "resumed", resume=True, epochs=4)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    straight, resumed = ((tmp_path / run / model_selection.SELECTION_FILE).read_text() for run in ("straight", "resumed"))
    assert straight == resumed and len(straight.splitlines()) == 1 + 4


def test_model_selection_needs_a_likelihood_and_patience_needs_a_holdout(tmp_path):
    with pytest.raises(ValueError, match="gan has none"):
        train("gan", tmp_path / "gan", max_steps=1, holdout=100)
    with pytest.raises(ValueError, match="set holdout too"):
        train("vae", tmp_path / "vae", max_steps=1, patience=3)


def test_a_run_can_start_from_the_weights_of_another_model(tmp_path):
    train("vae", tmp_path / "vae", TINY, max_steps=3)
    iwae = Trainer("iwae", {**TINY, "k": 5}, TrainConfig(max_steps=3, init_from=str(tmp_path / "vae")), tmp_path / "iwae")
    for key, value in weights(tmp_path / "vae").items():
        torch.testing.assert_close(iwae.unwrapped.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not hold weights of model 'vae'.*wrong shape"):
        Trainer("vae", {**TINY, "hidden_dim": 16}, TrainConfig(max_steps=3, init_from=str(tmp_path / "vae")),
                tmp_path / "other")
    # once started, the run stands on its own: resuming it no longer reads the other run
    iwae.fit()
    shutil.rmtree(tmp_path / "vae")
    assert train("iwae", tmp_path / "iwae", resume=True, max_steps=6)[1]["steps"] == 6


def test_epoch_shards_are_disjoint_equal_and_cover_the_epoch():
    n, batch, world = 1000, 16, 3
    shards = [epoch_shard(n, batch, epoch=2, seed=7, rank=r, world=world) for r in range(world)]
    assert all(len(s) == (n // (batch * world)) * batch for s in shards)
    union = torch.cat(shards)
    assert len(union.unique()) == len(union)  # disjoint
    assert len(union) >= n - batch * world  # only the remainder is dropped
    torch.testing.assert_close(shards[0], epoch_shard(n, batch, epoch=2, seed=7, rank=0, world=world))
    assert not torch.equal(shards[0], epoch_shard(n, batch, epoch=3, seed=7, rank=0, world=world))


def test_learning_rate_schedules():
    assert lr_factor(0, 110, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 110, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(60, 110, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(110, 110, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(60, 110, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(60, 110, 10) == 1.0


def test_a_run_killed_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer, _ = train("vae", tmp_path / "run", TINY, max_steps=5, batch_size=64)
    before = (tmp_path / "run" / checkpoint.MODEL_FILE).read_bytes()

    def killed_mid_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")  # some bytes reach the disk, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_state()
    assert (tmp_path / "run" / checkpoint.MODEL_FILE).read_bytes() == before
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]
    load_run(tmp_path / "run")  # still loads


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer, _ = train("vae", tmp_path / "run", TINY, max_steps=5, batch_size=64)
    before = (tmp_path / "run" / checkpoint.TRAIN_STATE_FILE).read_bytes()

    def disk_full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(CheckpointError, match="no space left.*previous train_state.safetensors is kept"):
        trainer.save_state()
    assert (tmp_path / "run" / checkpoint.TRAIN_STATE_FILE).read_bytes() == before


def test_a_nan_loss_stops_training_naming_step_and_term_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    original = VAE.loss

    def loss_that_diverges(self, x, y=None, phase="model", step=None):
        terms = original(self, x, y, phase, step)
        if step == 7:
            terms["kl"] = terms["kl"] * float("nan")
            terms["loss"] = terms["recon"] + terms["kl"]
        return terms

    monkeypatch.setattr(VAE, "loss", loss_that_diverges)
    with pytest.raises(TrainingDiverged, match=r"step 7: loss term 'kl'.*last good checkpoint"):
        train("vae", tmp_path / "run", TINY, max_steps=20, batch_size=64, checkpoint_every=5)
    _, meta = read_tensors(tmp_path / "run" / checkpoint.TRAIN_STATE_FILE)
    assert meta["step"] == 5
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "run").values())


def test_save_load_gives_the_same_outputs(tmp_path):
    trainer, _ = train("cvae", tmp_path / "run", {**TINY, "prior": "learned"}, max_steps=10, batch_size=64)
    loaded, config = load_run(tmp_path / "run")
    original = trainer.final_model.eval()
    info, split = load_split("digits", "test")
    x, split, _ = fixed_inputs(split.subset(16), info, loaded.input_kind)
    a = original.log_likelihood(x, split.labels, num_samples=20, generator=torch.Generator().manual_seed(1)).value
    b = loaded.log_likelihood(x, split.labels, num_samples=20, generator=torch.Generator().manual_seed(1)).value
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    labels = torch.arange(8) % 10
    torch.testing.assert_close(original.sample(8, labels, torch.Generator().manual_seed(3)),
                               loaded.sample(8, labels, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    assert config["model_config"]["prior"] == "learned"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["num_levels"] == 17


def test_a_loaded_image_model_computes_in_channels_last_and_the_layout_changes_no_values(tmp_path):
    tiny_unet = {"timesteps": 20, "channels": 8, "channel_mult": (1,), "blocks": 1, "attention_resolutions": (0,)}
    train("ddpm", tmp_path / "run", tiny_unet, max_steps=3, batch_size=16)
    loaded, _ = load_run(tmp_path / "run")
    convolutions = [p for p in loaded.parameters() if p.dim() == 4 and min(p.shape[1:]) > 1]  # (out, in, k, k)
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    cl = loaded.sample(4, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=5)
    nchw = loaded.to(memory_format=torch.contiguous_format)
    assert not any(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    torch.testing.assert_close(cl, nchw.sample(4, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=5),
                               atol=1 / 255, rtol=0)  # within one 8-bit level: a float reordering, no more


def test_training_state_holds_no_pickle(tmp_path):
    train("vae", tmp_path / "run", TINY, max_steps=3, batch_size=64)
    for name in (checkpoint.MODEL_FILE, checkpoint.TRAIN_STATE_FILE):
        read_tensors(tmp_path / "run" / name)  # safetensors + JSON metadata, nothing else
    assert sorted(p.suffix for p in (tmp_path / "run").iterdir() if p.is_file()) == [".csv", ".json", ".safetensors", ".safetensors"]


def test_an_existing_output_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists.*--resume"):
        Trainer("vae", TINY, TrainConfig(max_steps=2), tmp_path / "run")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("model", ["vae", "gan"])  # gan: two players, each update leaves the other's gradients unused
def test_two_processes_train_on_disjoint_shards_and_only_the_main_process_writes(tmp_path, model):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the VAE also selects on held-out examples: every process scores them, only the main one writes
    selection = ["--holdout", "200", "--checkpoint-every", "2", "--patience", "5"] if model == "vae" else []
    result = subprocess.run(
        # accelerate's --cpu launcher needs MPI for several processes; --multi_gpu starts them with
        # torch.distributed, and on this GPU-less machine genzoo runs them on the CPU with gloo.
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "genzoo", "train", model, "--out", str(out),
         "--max-steps", "6", "--batch-size", "32", "--hidden-dim", "16", "--latent-dim", "2", "--log-every", "3",
         "--eval-iw-samples", "2", *selection],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, meta = read_tensors(out / checkpoint.TRAIN_STATE_FILE)
    assert meta["world_size"] == 2 and meta["step"] == 6
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 3  # one header and two rows: only one process wrote the log
    assert result.stdout.count(f"trained {model} on digits") == 1  # and only one reported
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    if selection:
        assert len((out / model_selection.SELECTION_FILE).read_text().splitlines()) == 1 + 3  # checkpoints 2, 4, 6


def test_bf16_and_fp32_runs_share_one_process(tmp_path):
    # bf16 autocast is per run, not accelerate's process-wide setting: both precisions train here
    _, bf16 = train("vae", tmp_path / "bf16", TINY, max_steps=3, batch_size=64, precision="bf16")
    _, fp32 = train("vae", tmp_path / "fp32", TINY, max_steps=3, batch_size=64, precision="fp32")
    assert bf16["last"]["loss"] != fp32["last"]["loss"]  # bf16 rounding changed the numbers...
    assert bf16["last"]["loss"] == pytest.approx(fp32["last"]["loss"], rel=0.02)  # ...but not the model
    assert all(v.dtype == torch.float32 for v in weights(tmp_path / "bf16").values())  # weights stay fp32


# --- multi-player models: fresh batches, warnings, samples over training, training defaults -------
class TwoPlayers(VAE):
    """A VAE with a second "critic" phase of three updates that records the batches it sees."""

    name = "two-players"
    training_defaults = {"batch_size": 32}
    seen: list[torch.Tensor] = []

    def phases(self):
        from genzoo.models.base import Phase
        critic = list(self.encoder.parameters())
        others = [p for n, p in self.named_parameters() if not n.startswith("encoder.")]
        return [Phase("critic", critic, updates_per_step=3), Phase("model", others)]

    def loss(self, x, y=None, phase="model", step=None):
        if phase == "critic":
            TwoPlayers.seen.append(x.detach().clone())
            terms = super().loss(x, y, "model", step)
            return {"loss": terms["loss"], "d_real": torch.full_like(terms["loss"], 0.999)}
        return super().loss(x, y, phase, step)

    def training_warnings(self, row):
        return ["the critic wins outright" + (f" (D(x)={row['critic/d_real']:.3f})" if row["critic/d_real"] > 0.99 else "")] \
            if row["critic/d_real"] > 0.99 else []


@pytest.fixture
def two_players(monkeypatch):
    from genzoo import models
    monkeypatch.setitem(models.MODELS, TwoPlayers.name, TwoPlayers)
    TwoPlayers.seen = []
    return TwoPlayers


def test_extra_updates_of_a_player_see_fresh_batches_and_resume_stays_exact(tmp_path, two_players):
    train("two-players", tmp_path / "straight", TINY, max_steps=6, log_every=2)
    seen = two_players.seen
    assert len(seen) == 18 and all(len(x) == 32 for x in seen)  # the model's training default batch size
    for step in range(6):
        first, second, third = seen[3 * step: 3 * step + 3]
        assert not torch.equal(first, second) and not torch.equal(second, third)
    train("two-players", tmp_path / "resumed", TINY, max_steps=3, log_every=2)
    train("two-players", tmp_path / "resumed", resume=True, max_steps=6)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_a_persistent_symptom_is_reported_once_with_its_step(tmp_path, two_players, capsys):
    _, summary = train("two-players", tmp_path / "run", TINY, max_steps=12, log_every=2)
    # the message carries a changing number; it still counts as the same symptom
    during = [w for w in summary["warnings"] if w.startswith("step ")]  # the rest judge the final samples
    assert len(during) == 1 and during[0].startswith("step 6: the critic wins outright")
    assert "genzoo: warning: step 6" in capsys.readouterr().err


def test_samples_over_training_keeps_one_fixed_noise_batch_per_checkpoint(tmp_path):
    from genzoo import figures
    out = tmp_path / "run"
    train("vae", out, TINY, max_steps=40, checkpoint_every=10, callbacks=[figures.SamplesOverTraining(n=6)])
    record = read_tensors(out / figures.PROGRESS_FILE)[0]
    assert sorted(record) == [f"step_{s:010d}" for s in (10, 20, 30, 40)]
    assert all(v.dtype == torch.uint8 and v.shape == (6, 1, 8, 8) for v in record.values())
    model, _ = load_run(out)
    last = figures.sample_grid(model, 6, seed=0)  # the same seed: the same noise batch
    torch.testing.assert_close(record["step_0000000040"].float() / 255, last, atol=1 / 255, rtol=0)
    # resuming continues the record
    train("vae", out, resume=True, max_steps=50, callbacks=[figures.SamplesOverTraining(n=6)])
    assert len(read_tensors(out / figures.PROGRESS_FILE)[0]) == 5
    assert figures.evenly_spaced(list(range(10)), 12) == list(range(10))
    assert figures.evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert figures.evenly_spaced(list(range(10)), 1) == [9]
    for max_rows in (3, 12):
        path = figures.save_samples_over_training(out, tmp_path / f"progress{max_rows}.png", max_rows=max_rows)
        assert path.read_bytes()[:4] == b"\x89PNG"
