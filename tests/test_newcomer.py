"""What a newcomer meets first: the help's defaults, a mistyped --data-root, figures that say what
they show (traversal, loss curves, inpainting), active units, and warnings about bad samples."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from genzoo.cli import main
from genzoo.data.core import DataInfo
from genzoo.data.registry import DATASETS, load_split
from genzoo.evaluate.latent import active_units, kl_per_dim, latent_activity
from genzoo.figures.curves import identical_groups, read_log_terms, save_loss_curves, term_unit
from genzoo.figures.grids import GAP_PX, WHITE, image_grid, inpainting_image, rows_image
from genzoo.figures.model import traversal_labels
from genzoo.models.registry import build_model
from genzoo.train.symptoms import MAX_ROUGHNESS, MIN_SAMPLE_DIVERSITY, roughness, sample_symptoms

INFO = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)


def help_text(capsys, *argv: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines,
    return re.sub(r"(?<=\w)- (?=\w)", "-", text)  # also after the hyphen of "eight-gaussians"


def flag_help(text: str, flag: str) -> str:
    """The help of one flag: from the flag to the next option, after the usage lines."""
    return re.search(rf"{flag} [A-Z]+ (.*?)(?= --[a-z])", text.split("options:", 1)[1])[1]


# --- 1. help and --data-root -----------------------------------------------------------------------
def test_help_shows_the_datasets_default_epochs_and_each_default_once(capsys):
    text = help_text(capsys, "train", "vae", "--help")
    epochs = flag_help(text, "--epochs")
    assert "None" not in epochs
    assert f"digits {DATASETS['digits'].default_epochs}" in epochs and "mnist" in epochs
    for name, spec in DATASETS.items():  # every dataset is named, next to its number or in its group
        assert name in epochs and str(spec.default_epochs) in epochs
    data_root = flag_help(text, "--data-root")
    assert data_root.count("(default:") == 1 and "None" not in data_root
    assert flag_help(text, "--lr").endswith("(default: 0.001)")  # the others keep their default


def test_a_data_root_that_does_not_exist_is_an_error_and_is_not_created(tmp_path, capsys):
    typo = tmp_path / "no" / "such"
    for data in ("mnist", "binarized_mnist", "digits"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(typo))) as error:
            load_split(data, "train", data_root=str(typo))
        assert "--data-root" in str(error.value) and "data_root=" in str(error.value)
    capsys.readouterr()
    code = main(["train", "vae", "--data", "mnist", "--data-root", str(typo), "--out", str(tmp_path / "run"),
                 "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and str(typo) in err and "--data-root" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the data root nor the run directory


def test_missing_files_name_the_flag_and_the_python_argument(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_split("mnist", "train", data_root=str(tmp_path), download=False)
    assert "--data-root" in str(error.value) and "data_root=" in str(error.value)
    assert list(tmp_path.iterdir()) == []


# --- 2. active units and the traversal's labels ------------------------------------------------------
class LinearEncoder(nn.Module):
    """encode(x) = W x + b on 8x8 images: the rows of W listed in ``ignored`` are zero, so those
    codes are the same for every input (inactive); ``small`` rows are scaled down to an activity
    below 0.01."""

    conditional = False

    def __init__(self, latent_dim: int, ignored: list[int], small: list[int]):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(latent_dim, 64, generator=g))
        self.bias = nn.Parameter(torch.randn(latent_dim, generator=g))
        with torch.no_grad():
            self.weight[ignored] = 0.0
            self.weight[small] *= 1e-3

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.flatten(1) @ self.weight.T + self.bias  # (B, d)


def test_active_units_counts_exactly_the_dimensions_the_encoder_uses():
    model = LinearEncoder(6, ignored=[1, 4], small=[3])
    x = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = active_units(model, x)
    assert result["latent_dim"] == 6 and result["threshold"] == 0.01 and result["num_examples"] == 300
    assert result["active_units"] == 3  # 0, 2, 5; not the ignored 1, 4 nor the faint 3
    activity = torch.tensor(result["activity"], dtype=torch.float64)
    codes = model.encode(x).detach().double()
    torch.testing.assert_close(activity, codes.var(0, correction=0))  # Cov_x(E_q[z_u]), population variance
    assert activity[[1, 4]].max() < 1e-20 and 0 < activity[3] < 0.01 and activity[[0, 2, 5]].min() > 0.01
    assert active_units(model, x, threshold=activity[3].item() / 2)["active_units"] == 4
    with pytest.raises(ValueError, match="at least 2"):
        active_units(model, x[:1])


@pytest.mark.parametrize("name, config", [
    ("vae", {}), ("cvae", {"prior": "learned"}), ("dvae", {}),
])
def test_kl_per_dim_adds_up_to_the_elbos_kl_term(name, config):
    torch.manual_seed(0)
    model = build_model(name, INFO, {"latent_dim": 5, "hidden_dim": 16, **config}).eval()
    x = torch.rand(40, 1, 8, 8)
    y = torch.arange(40) % 10 if model.conditional else None
    kl = kl_per_dim(model, x, y)
    assert kl.shape == (5,) and (kl >= 0).all()
    with torch.no_grad():
        expected = model.elbo_terms(x, y)["kl"].double().mean()  # closed form, summed over dimensions
    torch.testing.assert_close(kl.sum(), expected)


def test_kl_per_dim_is_none_without_factorising_gaussians():
    assert kl_per_dim(build_model("vae", INFO, {"latent_dim": 3, "hidden_dim": 16, "prior": "vamp",
                                                "pseudo_inputs": 4}), torch.rand(4, 1, 8, 8)) is None
    assert kl_per_dim(build_model("ae", INFO, {"latent_dim": 3, "hidden_dim": 16}), torch.rand(4, 1, 8, 8)) is None


def test_traversal_labels_give_the_kl_or_the_activity_and_say_inactive():
    activity = torch.tensor([0.5, 0.001, 0.2])
    kl = torch.tensor([1.234, 0.0, 0.5])
    assert traversal_labels([0, 1], activity, kl) == ["z0\nKL 1.23 nats", "z1\nKL 0.00 nats\ninactive"]
    assert traversal_labels([2, 1], activity, None) == ["z2\nvar 0.2", "z1\nvar 0.001\ninactive"]


def test_latent_activity_of_a_trained_models_traversal_rows(tiny_run):
    """The traversal figure labels its rows by these numbers; on a real run they are finite, >= 0."""
    from genzoo.evaluate.likelihood import fixed_inputs
    from genzoo.models.registry import load_run
    model, _ = load_run(tiny_run("vae"))
    info, split = load_split("digits", "test")
    x, _, _ = fixed_inputs(split, info, model.input_kind, limit=50)
    activity, kl = latent_activity(model, x), kl_per_dim(model, x)
    assert activity.shape == kl.shape == (model.config.latent_dim,)
    assert torch.isfinite(activity).all() and (activity >= 0).all() and (kl >= 0).all()
    with Image.open(tiny_run("vae") / "latent_traversal.png") as img:  # rows plus a header of z values
        assert img.height > 4 * 56 + 5 * 2


# --- 3. loss curves ----------------------------------------------------------------------------------
def write_log(path, columns: dict[str, list[float]]) -> None:
    steps = range(1, 1 + len(next(iter(columns.values()))))
    lines = ["step,epoch," + ",".join(columns) + ",lr"]
    lines += [f"{s},0," + ",".join(repr(v[i]) for v in columns.values()) + ",0.001" for i, s in enumerate(steps)]
    path.write_text("\n".join(lines) + "\n")


def test_identical_terms_share_one_panel_and_units_are_named(tmp_path):
    loss = [100.0 - i for i in range(20)]
    write_log(tmp_path / "log.csv", {"loss": loss, "neg_elbo": [v * (1 + 1e-7) for v in loss],  # float32 round-off
                                     "recon": [v * (1 - 1e-4) for v in loss], "kl": [2.0 + 0.01 * i for i in range(20)]})
    terms = read_log_terms(tmp_path / "log.csv")
    assert identical_groups(terms) == [["loss", "neg_elbo"], ["recon"], ["kl"]]
    path = save_loss_curves(tmp_path / "log.csv", tmp_path / "curves.png")
    with Image.open(path) as img:  # three panels of 2.0 in + 0.6 in, at 100 dpi: not four
        assert img.height == round(100 * (2.0 * 3 + 0.6))
    names = ["discriminator/loss", "discriminator/wasserstein", "generator/loss", "discriminator/d_real"]
    assert term_unit("neg_elbo", ["neg_elbo"]) == "nats" and term_unit("discriminator/loss", names[:1]) == "nats"
    assert term_unit("generator/loss", names) == "critic units"  # a WGAN's losses are not nats
    assert term_unit("discriminator/d_real", names) == "probability"


def test_the_held_out_score_is_drawn_with_the_term_it_scores(tmp_path):
    loss = [100.0 - i for i in range(20)]
    write_log(tmp_path / "log.csv", {"loss": loss, "neg_elbo": loss, "kl": [2.0] * 20})
    without = np.asarray(Image.open(save_loss_curves(tmp_path / "log.csv", tmp_path / "a.png")).convert("L"))
    (tmp_path / "selection.csv").write_text("step,epoch,holdout_nats,best_nats,best_step\n"
                                            "5,1,97.0,97.0,5\n10,2,93.0,93.0,10\n15,3,90.0,90.0,15\n")
    with_held_out = np.asarray(Image.open(save_loss_curves(tmp_path / "log.csv", tmp_path / "b.png")).convert("L"))
    assert with_held_out.shape == without.shape  # on the "loss = neg_elbo" panel, not a panel of its own
    top, bottom = with_held_out[: len(with_held_out) // 2], without[: len(without) // 2]
    assert (top < 40).sum() > (bottom < 40).sum() + 50  # black points and their legend in the first panel
    assert (with_held_out[len(with_held_out) // 2:] == without[len(without) // 2:]).all()

    write_log(tmp_path / "log.csv", {"recon": loss})  # no term the score estimates: a panel of its own
    with Image.open(save_loss_curves(tmp_path / "log.csv", tmp_path / "c.png")) as img:
        assert img.height == round(100 * (2.0 * 2 + 0.6))


# --- 4. labelled inpainting and completions ------------------------------------------------------------
def test_the_inpainting_figure_labels_and_separates_its_groups():
    g = torch.Generator().manual_seed(0)
    image, completions = torch.rand(1, 8, 8, generator=g), torch.rand(5, 1, 8, 8, generator=g)
    masked = image.clone()
    masked[:, 4:] = 0.5
    plain = image_grid(torch.cat([image[None], masked[None], completions]), nrow=7, pad_value=WHITE)
    labelled = np.asarray(inpainting_image(image, masked, completions))
    assert labelled.shape[1] == plain.width + 2 * (GAP_PX + 2)  # data | observed | completions
    header = labelled.shape[0] - plain.height
    assert header > 5 and (labelled[:header] < 128).sum() > 20  # dark text pixels above the images
    # the gap after "data" is white from top to bottom: 2 px padding after the 56 px cell
    gap = slice(2 + 56 + 2, 2 + 56 + 2 + GAP_PX)
    assert (labelled[:, gap] == WHITE).all()


def test_row_gaps_and_column_labels_of_rows_image():
    rows = [torch.zeros(4, 1, 8, 8) for _ in range(3)]  # black images: only the padding and gaps are light
    plain = np.asarray(rows_image(rows, scale=1))
    gapped = np.asarray(rows_image(rows, scale=1, row_gaps=(0,), pad_value=WHITE))
    assert gapped.shape == (plain.shape[0] + GAP_PX + 2, plain.shape[1])
    assert (gapped[2 + 8 + 2: 2 + 8 + 2 + GAP_PX] == WHITE).all()
    labelled = rows_image(rows, ["data", "observed", "completions"], scale=1, column_labels=["a", "", "b", ""])
    assert labelled.width > plain.shape[1] and labelled.height > plain.shape[0]
    colour = rows_image([torch.zeros(4, 3, 8, 8)], ["two\nlines"], scale=1, column_labels=["a", "b", "c", "d"])
    assert colour.mode == "RGB" and (np.asarray(colour)[:, :10] < 128).all(-1).any()  # dark text on white
    with pytest.raises(ValueError, match="column labels"):
        rows_image(rows, column_labels=["a"])
    with pytest.raises(ValueError, match="row_gaps"):
        rows_image(rows, row_gaps=(2,))


# --- 6. symptoms of bad samples -----------------------------------------------------------------------
def digits(n: int, offset: int = 0) -> Tensor:
    from genzoo.data.core import prepare
    info, split = load_split("digits", "train")
    return prepare(split.images[offset:offset + n], info, "discrete", train=False)


def test_data_against_data_shows_no_symptom():
    assert sample_symptoms(digits(64, 64), digits(64)) == []
    assert roughness(torch.ones(3, 1, 8, 8)) == 0  # flat images are smooth
    torch.testing.assert_close(roughness(torch.rand(2000, 1, 8, 8, generator=torch.Generator().manual_seed(0))),
                               torch.tensor(1.0), atol=0.02, rtol=0)  # independent pixels: no correlation


def test_identical_samples_are_flagged_with_numbers_and_advice():
    real = digits(64)
    same = real[:1].expand(64, -1, -1, -1) + 0.01 * torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    [message] = sample_symptoms(same, real, epochs=15, default_epochs=100)
    diversity = re.search(r"vary only (\d\.\d+)x", message)[1]
    assert float(diversity) < MIN_SAMPLE_DIVERSITY and "too alike" in message
    assert "15 of the 100 epochs" in message and "--epochs" in message
    vectors = sample_symptoms(same.flatten(1), real.flatten(1))  # vectors: the diversity check only
    assert len(vectors) == 1 and "too alike" in vectors[0]


def test_a_conditional_model_that_ignores_its_noise_is_flagged_within_classes():
    real, labels = digits(200), load_split("digits", "train")[1].labels[:200]
    class_means = torch.stack([real[labels == k].mean(0) for k in range(10)])  # one image per class
    samples_labels = torch.arange(64) % 10
    samples = class_means[samples_labels]
    assert sample_symptoms(samples, real) == []  # across classes they vary
    [message] = sample_symptoms(samples, real, samples_labels, labels)
    assert "within each class" in message


def test_noise_is_flagged_and_blurry_samples_are_not():
    real = digits(64)
    noise = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6  # dimmer than the data
    messages = sample_symptoms(noise, real)
    assert len(messages) == 1 and "noise" in messages[0]
    ratio = float(re.search(r"(\d+\.\d)x as uncorrelated", messages[0])[1])
    assert ratio > MAX_ROUGHNESS
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(real, (1, 1, 1, 1), mode="replicate"), 3, 1)
    assert sample_symptoms(blurred, real) == []
    assert sample_symptoms(noise.flatten(1), real.flatten(1)) == []  # no noise check for vectors
    with pytest.raises(ValueError, match="differ in shape"):
        sample_symptoms(noise, real.flatten(1))
