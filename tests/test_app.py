"""The browser app: its plain functions (``genzoo.window.explore``) on tiny runs of digits and two-moons, the
command's one-line refusals, its endpoints through ``gradio_client``, and one headless-Chromium visit that
checks the page draws itself and requests nothing beyond the app's own address."""

from __future__ import annotations

import math
import socket

import httpx
import numpy as np
import pytest
import torch
from browser import distinct_colours, visit
from gradio_client import Client, handle_file
from PIL import Image

from genzoo.cli import main
from genzoo.data.core import DataInfo, nats_offset
from genzoo.data.registry import dataset_info
from genzoo.evaluate.completion import parse_mask
from genzoo.figures.grids import image_grid
from genzoo.figures.model import reconstructions
from genzoo.window import app as app_module
from genzoo.window import explore
from genzoo.window.app import build_app, launch, serve

VAE, AE, PIXELCNN = "vae on digits (vae)", "ae on digits (ae)", "pixelcnn on digits (pixelcnn)"
# 20 steps each, on digits (the shared tiny vae aside) and two-moons; only the NLL evaluated, for the bench
RUN_FLAGS = {
    "ae": ["ae", "--hidden-dim", "32", "--latent-dim", "4", "--eval-metrics", ""],
    "pixelcnn": ["pixelcnn", "--channels", "8", "--num-blocks", "1", "--eval-metrics", "nll"],
    "gmm": ["gmm", "--data", "two-moons", "--eval-metrics", ""],
}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, vae_run) -> dict:
    dirs = {"vae": vae_run}
    for name, flags in RUN_FLAGS.items():
        dirs[name] = tmp_path_factory.mktemp("app") / name
        assert main(["train", *flags, "--max-steps", "20", "--out", str(dirs[name])]) == 0
    return dirs


@pytest.fixture(scope="module")
def runs(run_dirs) -> dict[str, explore.LoadedRun]:
    """The digits runs: a VAE (a bound, an encoder), an AE (no likelihood), a PixelCNN (exact, completes)."""
    return explore.load_runs([run_dirs["vae"], run_dirs["ae"], run_dirs["pixelcnn"]])


@pytest.fixture(scope="module")
def moons(run_dirs) -> explore.LoadedRun:
    (run,) = explore.load_runs([run_dirs["gmm"]]).values()
    return run


@pytest.fixture(scope="module")
def bench_dir(run_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "import", str(run_dirs["vae"]), str(run_dirs["pixelcnn"]), "--out", str(out)]) == 0
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stroke(height: int = 300, width: int = 200, background=(0, 0, 0, 0)) -> np.ndarray:
    """An RGBA canvas (H, W, 4) uint8 with a black bar, 100 x 40 px, in its upper left: a drawn "1"."""
    canvas = np.zeros((height, width, 4), np.uint8)
    canvas[:] = background
    canvas[30:130, 40:80] = (0, 0, 0, 255)
    return canvas


def opened(path: str) -> np.ndarray:
    """A picture the app returned, read into an (H, W, 3) array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert message and "\n" not in message
    return message


# --- sample ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("title", [VAE, PIXELCNN])
def test_samples_lie_in_the_unit_interval_and_a_seed_repeats_them(runs, title):
    run = runs[title]
    samples = explore.sample(run, 9, seed=3)
    assert samples.shape == (9, 1, 8, 8)
    assert samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, explore.sample(run, 9, seed=3))
    assert not torch.equal(samples, explore.sample(run, 9, seed=4))
    if title == PIXELCNN:  # draws the data's 17 levels (the VAE shows its decoder's means)
        assert torch.equal(samples * 16, (samples * 16).round())
    assert explore.picture(run, samples).size == image_grid(samples, nrow=3).size


def test_a_sampling_option_or_request_the_model_lacks_is_refused_in_one_line(runs):
    with pytest.raises(ValueError, match="'ancestral' sampler has no --steps option") as e:
        explore.sample(runs[VAE], 4, 0, steps=10)
    one_line(e)
    for call, message in [(lambda: explore.sample(runs[PIXELCNN], 4, 0, sampler="ddim"), "has no sampler 'ddim'"),
                          (lambda: explore.sample(runs[VAE], 4, 0, label=3), "unconditional: it takes no label"),
                          (lambda: explore.sample(runs[VAE], 0, 0), "draw 1 to 64 samples"),
                          (lambda: explore.find_run(runs, "../vae"), "no loaded run is called '../vae'")]:
        with pytest.raises(ValueError, match=message) as e:
            call()
        one_line(e)


def test_2d_samples_are_drawn_as_a_scatter_plot(moons):
    points = explore.sample(moons, 64, seed=0)
    assert points.shape == (64, 2)
    assert distinct_colours(explore.picture(moons, points)) > 10


# --- the latent explorer ------------------------------------------------------------------------
@pytest.mark.parametrize("title", [VAE, AE])
def test_the_unmoved_code_decodes_to_the_reconstruction_and_a_moved_one_does_not(runs, title):
    run = runs[title]
    code = explore.latent_code(run, 5)  # (latent_dim,)
    (reconstruction,) = reconstructions(run.model, run.inputs[5:6])[1]  # decode(encode(x)): (C, H, W)
    unmoved = explore.decode_moved(run, 5, {d: code[d].item() for d in range(len(code))})
    torch.testing.assert_close(unmoved, reconstruction, rtol=0, atol=1e-6)
    dims, labels = explore.latent_ranking(run)
    assert sorted(dims) == list(range(4)) and labels[0].startswith(f"z{dims[0]}, ")
    assert (explore.decode_moved(run, 5, {dims[0]: 30.0}) - reconstruction).abs().max() > 1e-3


@pytest.mark.parametrize("path", explore.INTERPOLATION_PATHS)
def test_an_interpolation_runs_from_one_reconstruction_to_the_other(runs, path):
    run = runs[VAE]
    rows = explore.interpolate(run, 2, 9, steps=5, path=path)
    ends = reconstructions(run.model, run.inputs[[2, 9]])[1]  # (2, C, H, W)
    assert rows.shape == (5, 1, 8, 8)
    torch.testing.assert_close(rows[[0, -1]], ends, rtol=0, atol=1e-5)


def test_a_model_without_an_encoder_is_told_so_in_one_line(runs, moons):
    for run in (runs[PIXELCNN], moons):
        with pytest.raises(ValueError, match="has no latent code to explore") as e:
            explore.latent_code(run, 0)
        assert app_module.latent_status(run) == one_line(e)


# --- drawings and completion ----------------------------------------------------------------------
def test_a_drawing_becomes_one_example_inverted_centred_and_in_the_datas_values():
    digits = dataset_info("digits")  # 17 levels, 8x8
    levels = explore.drawing_to_levels(stroke(), digits)
    assert levels.shape == (1, 8, 8) and levels.dtype == torch.uint8
    assert levels.max() == 16 and levels[0, 0, 0] == 0  # dark strokes became bright, the light canvas black
    ink = levels[0].float()
    for mass in (ink.sum(0), ink.sum(1)):  # by column, by row: the bar's centre is the frame's
        assert ((mass * torch.arange(8)).sum() / mass.sum()).item() == pytest.approx(3.5, abs=0.01)
    # the same picture as gray, RGB and RGBA on white: transparent pixels count as white whatever their colour
    white = stroke(background=(255, 255, 255, 255))
    for same in (white[..., :3], white[..., 0], white.astype(np.float32) / 255):
        assert torch.equal(explore.drawing_to_levels(same, digits), levels)
    binary = explore.drawing_to_levels(stroke(), dataset_info("binarized_mnist"))  # 28x28, {0, 1}
    assert binary.shape == (1, 28, 28) and set(binary.unique().tolist()) == {0, 1}
    assert binary[0].any(1).sum().item() == 20  # rows with ink: the bar spans 20 of the 28, as an MNIST digit
    continuous = explore.drawing_to_levels(stroke(), DataInfo("gray", (1, 8, 8), 0, "continuous", None))
    assert continuous.dtype == torch.float32 and 0 <= continuous.min() < 0.5 < continuous.max() <= 1


@pytest.mark.parametrize("drawing, message", [
    (np.zeros((3000, 10, 4), np.uint8), "at most 2048x2048"),
    (np.full((50, 50), np.nan, np.float32), "NaN or infinite"),
    (np.full((50, 50), 2.0, np.float32), "must lie in \\[0, 1\\]"),
    (np.zeros((50, 50, 2), np.uint8), "must be \\(H, W\\) gray"),
    (np.zeros((2, 50, 50, 3), np.uint8), "must be \\(H, W\\) gray"),
    (np.full((50, 50, 3), 255, np.uint8), "the drawing is empty"),
])
def test_an_oversized_malformed_non_finite_or_empty_drawing_is_refused_in_one_line(drawing, message):
    with pytest.raises(ValueError, match=message) as e:
        explore.drawing_to_levels(drawing, dataset_info("digits"))
    one_line(e)


def test_a_completion_keeps_the_observed_pixels_exactly(runs):
    run = runs[PIXELCNN]
    observed = parse_mask("bottom-half", 8, 8)
    drawn = explore.drawing_to_levels(stroke(), run.info)
    for given in ({"index": 7}, {"stored": drawn}):
        result = explore.complete(run, "bottom-half", 4, seed=1, **given)
        image, completions = result["image"], result["completions"]  # (C, H, W), (4, C, H, W)
        assert torch.equal(completions[:, :, observed], image[:, observed].expand(4, -1, -1))
        assert torch.equal(completions * 16, (completions * 16).round())  # on the data's levels
        assert result["conditional_nll_nats"] > 0
    assert torch.equal(explore.complete(run, "bottom-half", 2, seed=1, stored=drawn)["image"], drawn / 16)
    with pytest.raises(ValueError, match="vae cannot inpaint") as e:
        explore.complete(runs[VAE], "bottom-half", 2, index=0)
    one_line(e)


# --- densities -----------------------------------------------------------------------------------
def test_each_models_nll_comes_with_its_kind_and_agrees_with_its_log_likelihood(runs):
    drawn = explore.drawing_to_levels(stroke(), runs[VAE].info)
    for given, x in (({"index": 4}, lambda run: run.inputs[4:5]), ({"stored": drawn}, lambda run: drawn[None] / 16)):
        found = explore.densities(list(runs.values()), **given)
        assert [d.kind for d in found] == ["lower_bound", "unavailable", "exact"]
        assert found[1].nll_nats is None and found[1].note == "unavailable: ae defines no likelihood"
        for run, d in zip([runs[VAE], runs[PIXELCNN]], [found[0], found[2]]):
            model = run.model
            log_p = model.log_likelihood(x(run), None, model.eval_defaults.draws, torch.Generator().manual_seed(0))
            nll = -log_p.value.item() + nats_offset(run.seen, model.input_kind)
            assert d.nll_nats == pytest.approx(nll, rel=1e-6)
            assert d.bits_per_dim == pytest.approx(nll / (64 * math.log(2)), rel=1e-6)
    assert found[0].note.startswith("upper bound") and found[2].note.startswith("exact")


def test_a_2d_density_is_scored_at_a_point_and_mapped(moons):
    point = torch.tensor([0.5, 0.2])
    (found,) = explore.densities([moons], stored=point)
    log_p = moons.model.log_likelihood(point[None], None, 1, torch.Generator().manual_seed(0)).value.item()
    assert found.kind == "exact" and found.nll_nats == pytest.approx(-log_p, rel=1e-6)
    assert distinct_colours(explore.density_map([moons], (0.5, 0.2))) > 100


# --- the leaderboard -----------------------------------------------------------------------------
def test_the_leaderboard_filters_by_family_and_by_kind(bench_dir):
    records = explore.read_bench(bench_dir)
    assert explore.leaderboard_choices(records) == (["autoregressive", "latent"], ["exact", "lower_bound"])

    def models(table: str) -> list[str]:
        return [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:] if line.startswith("| ")]

    assert models(explore.leaderboard(records)) == ["vae", "pixelcnn"]
    assert models(explore.leaderboard(records, family="latent")) == ["vae"]
    assert models(explore.leaderboard(records, kind="exact")) == ["pixelcnn"]
    assert explore.leaderboard(records, "latent", "exact").startswith("No results of family latent")


# --- the command ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case, message", [
    ("not a run", "is not a genzoo run directory"),
    ("mixed datasets", "the runs are of different datasets"),
    ("port in use", "is in use (another app?): choose another with --port"),
    ("no results file", "has no results.jsonl"),
    ("no records", "holds no records"),
])
def test_bad_app_input_fails_in_one_line(case, message, run_dirs, tmp_path, cli):
    port = free_port()
    argv = ["app", run_dirs["vae"], "--port", port]
    (tmp_path / "bench").mkdir()
    with socket.socket() as listener:
        if case == "not a run":
            argv[1] = tmp_path
        elif case == "mixed datasets":
            argv.insert(2, run_dirs["gmm"])
        elif case == "port in use":
            listener.bind(("127.0.0.1", port))
            listener.listen()
        else:
            if case == "no records":
                (tmp_path / "bench" / "results.jsonl").write_text("")
            argv += ["--bench", tmp_path / "bench"]
        code, out, err = cli(*argv)
    assert code == 1 and out == ""
    assert err.startswith("genzoo: error: ") and message in err and len(err.splitlines()) == 1


def test_serve_listens_on_loopback_with_no_share_link_and_no_extra_paths(run_dirs, monkeypatch, capsys):
    launched = {}

    def fake_launch(self, **options):
        launched.update(options)
        return None, f"http://127.0.0.1:{options['server_port']}/", None

    monkeypatch.setattr(app_module.gr.Blocks, "launch", fake_launch)
    monkeypatch.setattr(app_module.gr.Blocks, "block_thread", lambda self: None)
    port = free_port()
    serve([run_dirs["vae"]], port=port)
    assert launched["server_name"] == "127.0.0.1" and launched["share"] is False
    assert launched["max_file_size"] == app_module.MAX_UPLOAD and "allowed_paths" not in launched
    assert f"at http://127.0.0.1:{port}/" in capsys.readouterr().out


# --- the app, served -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(runs, bench_dir):
    """The app over the digits runs and the bench, launched as ``serve`` launches it: its URL."""
    app = build_app(runs, explore.read_bench(bench_dir))
    url, share_url = launch(app, "127.0.0.1", free_port())
    assert share_url is None
    yield url
    app.close()


def test_the_endpoints_sample_score_complete_and_rank(served, runs, run_dirs, tmp_path):
    client = Client(served, verbose=False)
    grid, said = client.predict(PIXELCNN, "cached", 2, 9, None, None, None, None, None, api_name="/sample")
    expected = explore.picture(runs[PIXELCNN], explore.sample(runs[PIXELCNN], 9, seed=2)).convert("RGB")
    assert np.array_equal(opened(grid), np.asarray(expected)) and "9 samples by the cached" in said
    table, _ = client.predict("test example", 4, None, None, api_name="/density")
    assert [row[:2] for row in table["data"]] == [[VAE, "lower_bound"], [AE, "unavailable"], [PIXELCNN, "exact"]]
    assert float(table["data"][2][2]) == pytest.approx(explore.density(runs[PIXELCNN], index=4).nll_nats, abs=0.01)
    Image.fromarray(stroke()).save(tmp_path / "drawing.png")
    sketch = {"background": None, "layers": [], "composite": handle_file(str(tmp_path / "drawing.png"))}
    table, _ = client.predict("drawing", None, sketch, None, api_name="/density")
    drawn = explore.drawing_to_levels(stroke(), runs[VAE].info)
    assert float(table["data"][2][2]) == pytest.approx(explore.density(runs[PIXELCNN], stored=drawn).nll_nats, abs=0.01)
    picture, said = client.predict(PIXELCNN, "drawing", 0, sketch, "top-half", 3, 0, None, api_name="/complete")
    assert opened(picture).shape[1] > 5 * 56 and "nats over 32 hidden dimensions" in said
    # the latent explorer: sliders left at the code's values decode to the reconstruction
    _, reconstruction, *sliders = client.predict(VAE, 5, api_name="/encode")
    dims, _ = explore.latent_ranking(runs[VAE])
    code = explore.latent_code(runs[VAE], 5)
    assert [s["value"] for s in sliders[:len(dims)]] == pytest.approx([code[d].item() for d in dims])
    unmoved = client.predict(VAE, 5, *[s.get("value", 0.0) for s in sliders], api_name="/decode")
    assert np.abs(opened(unmoved).astype(int) - opened(reconstruction)).max() <= 1
    table = client.predict("latent", "any", api_name="/leaderboard")

    assert "| vae |" in table and "pixelcnn" not in table
    with pytest.raises(Exception, match="vae cannot inpaint"):
        client.predict(VAE, "test example", 0, None, "bottom-half", 3, 0, None, api_name="/complete")
    for name in ("config.json", "model.safetensors"):  # Gradio serves its own cache, never a run's files
        path = (run_dirs["pixelcnn"] / name).resolve()
        assert httpx.get(f"{served}gradio_api/file={path}").status_code == 403


def test_the_2d_app_draws_samples_and_a_density_map(moons):
    app = build_app({moons.title: moons})
    url, _ = launch(app, "127.0.0.1", free_port())
    try:
        client = Client(url, verbose=False)
        scatter, _ = client.predict(moons.title, "ancestral", 0, 64, None, None, None, None, None, api_name="/sample")
        table, heatmap = client.predict(0.5, 0.2, api_name="/density")
    finally:
        app.close()
    assert len(np.unique(opened(scatter).reshape(-1, 3), axis=0)) > 10
    assert table["data"][0][1] == "exact" and len(np.unique(opened(heatmap).reshape(-1, 3), axis=0)) > 100


def test_the_page_draws_itself_and_requests_nothing_beyond_the_app(served, chromium, tmp_path):
    screenshot, requested = visit(chromium, served, tmp_path, wait_ms=4000)
    assert distinct_colours(screenshot) > 100
    assert requested and all(url.startswith(served) for url in requested), requested
