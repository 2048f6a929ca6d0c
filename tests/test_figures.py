"""Figures: grid geometry and pixel placement, the figure maths (traversal, interpolation,
reconstruction), PNG files, and no side effects on the model's mode or torch's global RNG."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from genzoo.data.core import DataInfo
from genzoo.figures.curves import read_log_terms, save_loss_curves
from genzoo.figures.grids import image_grid, rows_image, save_image_grid
from genzoo.figures.model import class_grid, denoising_triples, interpolation, latent_traversal, reconstructions, sample_grid, write_run_figures
from genzoo.models.base import SamplerSpec

INFO = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)


@dataclass
class FakeConfig:
    latent_dim: int = 2


class FakeModel(nn.Module):
    """Linear encoder/decoder on 8x8 digits; conditional decoding adds a label embedding."""

    def __init__(self, conditional: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.info = INFO
        self.config = FakeConfig()
        self._conditional = conditional
        self.enc = nn.Linear(64, 2)
        self.dec = nn.Linear(2, 64)
        self.label = nn.Embedding(10, 64)
        self.dropout = nn.Dropout(0.5)  # identity in eval mode: figures must run in eval mode

    capabilities = frozenset({"encode", "corrupt"})
    samplers = (SamplerSpec("ancestral"),)

    @property
    def conditional(self) -> bool:
        return self._conditional

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def generate(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return self.sample(n, labels, generator)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.enc(x.flatten(1))  # (B, 2)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.dec(self.dropout(z))  # (B, 64)
        if self.conditional:
            h = h + self.label(y)
        return torch.sigmoid(h).reshape(-1, 1, 8, 8)

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, 2, generator=generator)
        x = self.decode(z, labels)
        if self.conditional:  # mark the label in pixel (0, 0) so class rows can be checked
            x[:, 0, 0, 0] = labels.float() / 10
        return x

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return (x + 0.3 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def batch(b: int = 16) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 1, 8, 8, generator=g), torch.arange(b) % 10


# --- pure image functions ------------------------------------------------------------------------


@pytest.mark.parametrize("c,mode", [(1, "L"), (3, "RGB")])
def test_image_grid_size(c, mode):
    img = image_grid(torch.rand(16, c, 8, 8), nrow=4, padding=2, scale=3)
    assert img.mode == mode
    assert img.size == (4 * 8 * 3 + 5 * 2, 4 * 8 * 3 + 5 * 2)  # (W, H): cells plus padding around them
    img = image_grid(torch.rand(10, c, 28, 28), nrow=4, padding=1)  # default scale 2, 3 rows
    assert img.size == (4 * 56 + 5, 3 * 56 + 4)
    assert image_grid(torch.rand(1, c, 8, 8), nrow=8).size == (56 + 4, 56 + 4)  # default scale 7


def test_image_grid_puts_pixels_in_cells():
    n, s, p = 6, 2, 3
    images = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 4, 4) / 5
    images = images.clone()
    images[0] = -1.0  # clamped to 0
    images[5] = 2.0  # clamped to 1
    a = np.asarray(image_grid(images, nrow=3, padding=p, scale=s))
    assert a.shape == (2 * 8 + 3 * p, 3 * 8 + 4 * p)
    expected = [0, 51, 102, 153, 204, 255]  # round(i / 5 * 255), clamped at the ends
    for i in range(n):
        r, k = divmod(i, 3)
        top, left = p + r * (8 + p), p + k * (8 + p)
        assert (a[top : top + 8, left : left + 8] == expected[i]).all()
        assert a[top - 1, left] == 128 and a[top, left - 1] == 128  # mid-gray padding

    # nearest-neighbour upsampling: each pixel becomes an s x s block
    x = torch.rand(1, 1, 3, 5)
    a = np.asarray(image_grid(x, nrow=1, padding=0, scale=4))
    expected = np.kron((x[0, 0] * 255).round().numpy().astype(np.uint8), np.ones((4, 4), np.uint8))
    np.testing.assert_array_equal(a, expected)


def test_image_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        image_grid(torch.full((1, 1, 4, 4), float("nan")), nrow=1)
    with pytest.raises(ValueError, match="C in"):
        image_grid(torch.rand(1, 2, 4, 4), nrow=1)


def test_save_image_grid_writes_png_atomically(tmp_path):
    path = save_image_grid(torch.rand(16, 1, 8, 8), tmp_path / "a" / "b" / "grid.png", nrow=4, scale=2, padding=1)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (4 * 16 + 5, 4 * 16 + 5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temp file left behind


def test_rows_image_labels_and_shapes():
    rows = [torch.rand(5, 1, 8, 8) for _ in range(3)]
    plain = rows_image(rows, scale=1, padding=2)
    labelled = rows_image(rows, ["clean", "corrupted", "denoised"], scale=1, padding=2)
    assert plain.size == (5 * 8 + 6 * 2, 3 * 8 + 4 * 2)
    assert labelled.height == plain.height and labelled.width > plain.width
    # the grid sits unchanged at the right of the label margin
    np.testing.assert_array_equal(np.asarray(labelled)[:, -plain.width :], np.asarray(plain))
    with pytest.raises(ValueError, match="row 1"):
        rows_image([torch.rand(5, 1, 8, 8), torch.rand(4, 1, 8, 8)])
    with pytest.raises(ValueError, match="labels"):
        rows_image(rows, ["a"])


# --- loss curves ---------------------------------------------------------------------------------


def test_save_loss_curves(tmp_path):
    csv_path = tmp_path / "log.csv"
    csv_path.write_text(
        "step,epoch,loss,recon,kl,lr,examples_per_s\n"
        "1,0,5.0,4.0,1.0,0.001,100\n"
        "2,0,4.5,,0.9,0.001,110\n"
        "3,1,4.0,3.2,0.8,0.001,\n"
    )
    terms = read_log_terms(csv_path)
    assert list(terms) == ["loss", "recon", "kl"]  # step/epoch/lr/examples_per_s not plotted
    np.testing.assert_array_equal(terms["recon"][0], [1, 3])  # the empty cell is skipped
    np.testing.assert_array_equal(terms["recon"][1], [4.0, 3.2])
    out = save_loss_curves(csv_path, tmp_path / "fig" / "loss_curves.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.height > img.width / 2  # three stacked subplots

    empty = tmp_path / "empty.csv"
    empty.write_text("step,epoch,loss\n")
    assert save_loss_curves(empty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


# --- model figures -------------------------------------------------------------------------------


def test_latent_traversal_varies_one_coordinate():
    model = FakeModel().eval()
    x, _ = batch()
    rows = latent_traversal(model, x[3], dims=10, steps=9, span=3.0)
    assert len(rows) == 2 and all(r.shape == (9, 1, 8, 8) for r in rows)  # only 2 latent dims
    z0 = model.encode(x[3:4]).detach()
    for d, row in enumerate(rows):
        for j, value in [(4, 0.0), (0, -3.0), (8, 3.0)]:
            z = z0.clone()
            z[0, d] = value
            torch.testing.assert_close(row[j], model.decode(z)[0].detach())


def test_reconstruction_interpolation_denoising():
    model = FakeModel().eval()
    x, _ = batch()
    data, recon = reconstructions(model, x[:4])
    torch.testing.assert_close(data, x[:4])
    torch.testing.assert_close(recon, model.decode(model.encode(x[:4])).detach())

    rows = interpolation(model, x[:3], x[3:6], steps=5)
    assert len(rows) == 3 and rows[0].shape == (5, 1, 8, 8)
    z_a, z_b = model.encode(x[:3]).detach(), model.encode(x[3:6]).detach()
    for i, row in enumerate(rows):
        torch.testing.assert_close(row[0], model.decode(z_a[i : i + 1])[0].detach())
        torch.testing.assert_close(row[-1], model.decode(z_b[i : i + 1])[0].detach())
        torch.testing.assert_close(row[2], model.decode((z_a[i : i + 1] + z_b[i : i + 1]) / 2)[0].detach())

    clean, noisy, denoised = denoising_triples(model, x[:8], seed=3)
    torch.testing.assert_close(clean, x[:8])
    torch.testing.assert_close(noisy, model.corrupt(x[:8], torch.Generator().manual_seed(3)))
    torch.testing.assert_close(denoised, model.decode(model.encode(noisy)).detach())


def test_sampling_figures_are_seeded_and_conditional():
    model = FakeModel(conditional=True)
    a, b, c = sample_grid(model, 20, seed=0), sample_grid(model, 20, seed=0), sample_grid(model, 20, seed=1)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    torch.testing.assert_close(a[:, 0, 0, 0], (torch.arange(20) % 10).float() / 10)  # labels cycle 0..9

    rows = class_grid(model, per_class=4, seed=0)
    assert len(rows) == 10 and all(r.shape == (4, 1, 8, 8) for r in rows)
    for k, row in enumerate(rows):
        torch.testing.assert_close(row[:, 0, 0, 0], torch.full((4,), k / 10))
    with pytest.raises(ValueError, match="not conditional"):
        class_grid(FakeModel())
    with pytest.raises(ValueError, match="needs labels|need labels"):
        reconstructions(model, batch()[0][:4], None)


@pytest.mark.parametrize("conditional", [False, True])
def test_write_run_figures(tmp_path, conditional):
    model = FakeModel(conditional)
    x, y = batch()
    paths = write_run_figures(model, x, y if conditional else None, tmp_path / "figs", seed=0)
    expected = {"samples.png", "reconstructions.png", "latent_traversal.png", "interpolation.png", "denoising.png"}
    if conditional:
        expected.add("class_grid.png")
    assert {p.name for p in paths} == expected
    assert {p.name for p in (tmp_path / "figs").iterdir()} == expected  # and nothing else (no temp files)
    sizes = {}
    for p in paths:
        with Image.open(p) as img:
            img.verify()
            assert img.format == "PNG"
            sizes[p.name] = img.size
    assert sizes["samples.png"] == (8 * 56 + 9 * 2, 8 * 56 + 9 * 2)  # 64 digits, 8 per row, scale 7
    assert sizes["reconstructions.png"][1] == 2 * 56 + 3 * 2
    assert sizes["reconstructions.png"][0] > 16 * 56 + 17 * 2  # plus the label margin
    assert sizes["latent_traversal.png"][1] > 2 * 56 + 3 * 2  # latent_dim = 2 rows under a header of z values
    assert sizes["interpolation.png"] == (10 * 56 + 11 * 2, 4 * 56 + 5 * 2)  # 4 pairs, 10 steps, no labels
    assert sizes["denoising.png"][1] == 3 * 56 + 4 * 2


def test_figures_restore_mode_and_leave_global_rng_alone(tmp_path):
    x, y = batch()
    for conditional in (False, True):
        model = FakeModel(conditional)
        for training in (True, False):
            model.train(training)
            model.dropout.train(not training)  # mixed flags are restored per submodule
            state = torch.get_rng_state()
            write_run_figures(model, x, y, tmp_path / f"{conditional}{training}")
            latent_traversal(model, x[0], y[0])
            assert torch.equal(torch.get_rng_state(), state)
            assert model.training is training and model.enc.training is training
            assert model.dropout.training is (not training)


# --- generators without an encoder, and two players' losses -----------------------------------------
def test_slerp_keeps_the_ends_and_the_norm_of_equal_norm_codes():
    from genzoo.figures.model import slerp
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=g, dtype=torch.float64), torch.randn(3, 16, generator=g, dtype=torch.float64)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms: the path stays on the sphere
    path = slerp(a, b, torch.linspace(0, 1, 7, dtype=torch.float64))  # (7, 3, 16)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=-1), a.norm(dim=-1).expand(7, 3))


def test_a_gan_gets_a_prior_interpolation_and_no_reconstructions(tmp_path):
    from genzoo.data.core import DataInfo
    from genzoo.figures.model import prior_interpolation, write_run_figures
    from genzoo.models.registry import build_model
    info = DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
    model = build_model("dcgan", info, {"latent_dim": 4, "hidden_dim": 16, "channels": 4})
    rows = prior_interpolation(model, pairs=2, steps=5, seed=0)
    assert len(rows) == 2 and rows[0].shape == (5, 1, 8, 8)
    assert torch.equal(rows[0], prior_interpolation(model, pairs=2, steps=5, seed=0)[0])
    names = {p.name for p in write_run_figures(model, torch.rand(8, 1, 8, 8), None, tmp_path)}
    assert names == {"samples.png", "interpolation.png"}


def test_loss_curves_put_every_players_loss_on_one_panel(tmp_path):
    from genzoo.figures.curves import save_loss_curves
    csv_path = tmp_path / "log.csv"
    rows = ["step,epoch,discriminator/loss,discriminator/d_real,generator/loss,lr"]
    rows += [f"{s},0,{1 + 0.01 * s},0.5,{2 - 0.01 * s},0.0002" for s in range(1, 30)]
    csv_path.write_text("\n".join(rows) + "\n")
    from PIL import Image
    path = save_loss_curves(csv_path, tmp_path / "curves.png")
    with Image.open(path) as image:  # 3 terms + 1 shared panel: 2.0 in per panel + 0.6 in at 100 dpi
        assert image.height == round(100 * (2.0 * 4 + 0.6))
