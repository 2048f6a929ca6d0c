"""``genzoo app``: a Gradio page over trained runs of one dataset, with five tabs: Sample, Latent explorer,
Draw and complete, Density and Leaderboard. What each tab computes lives in ``explore``; this module lays
out widgets and passes their values there.

Offline and local by default: it listens on 127.0.0.1, opens no share link unless asked, sends no analytics,
and the page uses system fonts and Gradio's own bundled scripts, so it requests nothing beyond the app's
address. Gradio serves only its cache of the pictures made here (``allowed_paths`` stays empty), uploads are
capped at ``MAX_UPLOAD``, and models are picked by title from the runs given at start: no path ever comes
from the browser.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no usage reports
import gradio as gr

from genzoo.evaluate.completion import (
    HALF_MASKS,
    check_can_inpaint,
    conditional_nll_text,
)
from genzoo.figures.grids import image_grid, inpainting_image
from genzoo.models.base import SAMPLING_OPTIONS
from genzoo.window import explore
from genzoo.window.explore import LoadedRun, find_run

# System fonts only: Gradio's default theme fetches its fonts from Google.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
MAX_UPLOAD = "2mb"  # a drawing of the canvas below is a few kB
CANVAS_PX = 280  # the drawing canvas, ten times MNIST's 28x28
BRUSH_PX = 20  # about MNIST's stroke width at that scale
MODEL_QUEUE = "model"  # one event at a time touches the models: they are shared, and CPU time is scarce
ANY = "any"  # the leaderboard filters' "no filter"
TEST_EXAMPLE, DRAWING = "test example", "drawing"
MASKS = [*HALF_MASKS, "random:0.5"]
DENSITY_HEADERS = ["model", "likelihood", "NLL (nats)", "bits/dim", "what it is"]


def one_line_errors(handler: Callable) -> Callable:
    """``handler`` with its ``ValueError``s shown on the page as their one line (a Gradio error)."""

    def run(*values):
        try:
            return handler(*values)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    return run


def drawn(value: dict | None) -> np.ndarray:
    """The picture on a sketchpad: the composite of its value ({"background", "layers", "composite"})."""
    if not value or value.get("composite") is None:
        raise ValueError("the canvas is empty: draw something first")
    return value["composite"]


def picked_input(run: LoadedRun, source: str, index: int | None, sketch: dict | None) -> dict:
    """``model_input``'s keywords for what the page picked: a test example's index or a drawing's levels."""
    if source == DRAWING:
        return {"stored": explore.drawing_to_levels(drawn(sketch), run.info)}
    return {"index": 0 if index is None else int(index)}


def sketchpad(label: str) -> gr.Sketchpad:
    return gr.Sketchpad(label=label, type="numpy", image_mode="RGBA", format="png", canvas_size=(CANVAS_PX, CANVAS_PX),
                        brush=gr.Brush(default_size=BRUSH_PX, colors=["#000000"], color_mode="fixed"))


# --- tabs ----------------------------------------------------------------------------------------
def sample_tab(runs: dict[str, LoadedRun]) -> None:
    titles = list(runs)
    first = runs[titles[0]].model
    default = first.samplers[0]
    with gr.Row():
        with gr.Column(scale=1):
            title = gr.Dropdown(titles, value=titles[0], label="model")
            # every run's samplers, so that a request names any (the page narrows them to the model's)
            every = list(dict.fromkeys(s.name for run in runs.values() for s in run.model.samplers))
            sampler = gr.Dropdown(every, value=default.name, label="sampler", info=default.description)
            with gr.Row():
                seed = gr.Number(0, precision=0, label="seed")
                n = gr.Slider(1, explore.MAX_SAMPLES, value=16, step=1, label="number")
            label = gr.Number(None, precision=0, label="label (empty: each class in turn)", visible=first.conditional)
            options = [gr.Number(None, precision=0 if name == "steps" else None, visible=name in default.options,
                                 label=f"{name} (empty: the sampler's default)") for name in SAMPLING_OPTIONS]
            button = gr.Button("Sample", variant="primary")
        with gr.Column(scale=2):
            picture = gr.Image(label="samples", type="pil", format="png", interactive=False)
            summary = gr.Markdown()

    def controls(title: str, sampler: str | None) -> list:
        """The chosen sampler's description, and only its options shown."""
        spec = find_run(runs, title).model.sampler_spec(sampler)
        return [gr.update(info=spec.description), *(gr.update(visible=o in spec.options) for o in SAMPLING_OPTIONS)]

    def choose_model(title: str) -> list:
        model = find_run(runs, title).model
        names = [s.name for s in model.samplers]
        return [gr.update(choices=names, value=names[0]), gr.update(visible=model.conditional),
                *controls(title, names[0])[1:]]

    def draw(title: str, sampler: str | None, seed: int, n: int, label: int | None, *values: float | None):
        run = find_run(runs, title)
        spec = run.model.sampler_spec(sampler)
        # the options the sampler lacks are hidden on the page: their leftover values are ignored
        options = {name: value for name, value in zip(SAMPLING_OPTIONS, values) if name in spec.options}
        start = time.perf_counter()
        samples = explore.sample(run, int(n), int(seed or 0), spec.name, label if run.model.conditional else None,
                                 **options)
        seconds = time.perf_counter() - start
        given = "".join(f", {name} {value:g}" for name, value in options.items() if value is not None)
        return (explore.picture(run, samples, f"{run.title}: {len(samples)} samples"),
                f"{len(samples)} samples by the {spec.name} sampler{given}, seed {seed}: {seconds:.2f} s")

    title.change(choose_model, title, [sampler, label, *options], api_visibility="private")
    sampler.change(controls, [title, sampler], [sampler, *options], api_visibility="private")
    button.click(one_line_errors(draw), [title, sampler, seed, n, label, *options], [picture, summary],
                 api_name="sample", concurrency_id=MODEL_QUEUE)


def latent_tab(runs: dict[str, LoadedRun]) -> None:
    titles = list(runs)
    with gr.Row():
        with gr.Column(scale=1):
            title = gr.Dropdown(titles, value=titles[0], label="model")
            status = gr.Markdown(latent_status(runs[titles[0]]))
            index = gr.Number(0, precision=0, label="test example")
            encode = gr.Button("Encode", variant="primary")
            sliders = [gr.Slider(*explore.slider_range(0.0), value=0, step=0.01, visible=False)
                       for _ in range(explore.LATENT_SLIDERS)]
        with gr.Column(scale=1), gr.Row():
            original = gr.Image(label="test example", type="pil", format="png", interactive=False)
            decoded = gr.Image(label="decoded from the moved code", type="pil", format="png", interactive=False)
    gr.Markdown("**Interpolation** between the codes of two test examples")
    with gr.Row():
        a = gr.Number(0, precision=0, label="from test example")
        b = gr.Number(1, precision=0, label="to test example")
        steps = gr.Slider(2, 16, value=10, step=1, label="steps")
        path = gr.Radio(list(explore.INTERPOLATION_PATHS), value="linear", label="path")
        between = gr.Button("Interpolate")
    path_picture = gr.Image(label="interpolation", type="pil", format="png", interactive=False)

    def start(title: str, index: int | None):
        """The example, its reconstruction, and a slider at each of its most active coordinates."""
        run = find_run(runs, title)
        index = int(index or 0)
        dims, labels = explore.latent_ranking(run)
        code = explore.latent_code(run, index)
        updates = []
        for k in range(explore.LATENT_SLIDERS):
            if k >= len(dims):
                updates.append(gr.update(visible=False))
                continue
            value = code[dims[k]].item()
            low, high = explore.slider_range(value)
            updates.append(gr.update(visible=True, minimum=low, maximum=high, value=value, label=labels[k]))
        return (image_grid(explore.model_input(run, index)[None], nrow=1),
                image_grid(explore.decode_moved(run, index, {})[None], nrow=1), *updates)

    def move(title: str, index: int | None, *values: float):
        run = find_run(runs, title)
        dims, _ = explore.latent_ranking(run)
        return image_grid(explore.decode_moved(run, int(index or 0), dict(zip(dims, values)))[None], nrow=1)

    def path_between(title: str, a: int | None, b: int | None, steps: int, path: str):
        row = explore.interpolate(find_run(runs, title), int(a or 0), int(b or 0), int(steps), path)
        return image_grid(row, nrow=len(row))

    def forget(title: str) -> list:
        """The run's status, and no sliders: they belong to another model's or example's code until encoded."""
        return [latent_status(find_run(runs, title)), *[gr.update(visible=False)] * explore.LATENT_SLIDERS]

    gr.on([title.change, index.change], forget, title, [status, *sliders], api_visibility="private")
    encode.click(one_line_errors(start), [title, index], [original, decoded, *sliders], api_name="encode",
                 concurrency_id=MODEL_QUEUE)
    gr.on([slider.release for slider in sliders], one_line_errors(move), [title, index, *sliders], decoded,
          api_name="decode", concurrency_id=MODEL_QUEUE)
    between.click(one_line_errors(path_between), [title, a, b, steps, path], path_picture, api_name="interpolate",
                  concurrency_id=MODEL_QUEUE)


def latent_status(run: LoadedRun) -> str:
    """What the explorer offers for this run, or in one line why it offers nothing."""
    try:
        explore.check_can_encode(run)
    except ValueError as e:
        return str(e)
    return (f"Encode a test example, then move the sliders: each sets one coordinate of its code, the "
            f"{explore.LATENT_SLIDERS} most active first (the variance of the code over test examples).")


def complete_tab(runs: dict[str, LoadedRun]) -> None:
    first = next(iter(runs.values()))
    if first.info.kind != "image":
        gr.Markdown(f"Completion hides part of an image; {first.view.dataset} holds 2-D points.")
        return
    titles = list(runs)
    with gr.Row():
        with gr.Column(scale=1):
            title = gr.Dropdown(titles, value=titles[0], label="model")
            status = gr.Markdown(completion_status(runs[titles[0]]))
            source = gr.Radio([TEST_EXAMPLE, DRAWING], value=TEST_EXAMPLE, label="complete")
            index = gr.Number(0, precision=0, label="test example")
            mask = gr.Dropdown(MASKS, value=MASKS[0], allow_custom_value=True, label="hidden part",
                               info="bottom-half, top-half, right-half, left-half, or random:P")
            with gr.Row():
                n = gr.Slider(1, explore.MAX_COMPLETIONS, value=8, step=1, label="completions")
                seed = gr.Number(0, precision=0, label="seed")
            label = gr.Number(None, precision=0, label="label (conditional models; empty: the test example's)",
                              visible=any(r.model.conditional for r in runs.values()))
            button = gr.Button("Complete", variant="primary")
        with gr.Column(scale=1):
            sketch = sketchpad("drawing (dark strokes on white)")
    picture = gr.Image(label="the input, its observed part, completions", type="pil", format="png",
                       interactive=False)
    summary = gr.Markdown()

    def fill(title: str, source: str, index: int | None, sketch: dict | None, mask: str, n: int, seed: int | None,
             label: int | None):
        run = find_run(runs, title)
        result = explore.complete(run, mask, int(n), int(seed or 0), label=label,
                                  **picked_input(run, source, index, sketch))
        return (inpainting_image(result["image"], result["masked"], result["completions"]),
                conditional_nll_text(result, run.model.name))

    title.change(lambda t: completion_status(find_run(runs, t)), title, status, api_visibility="private")
    button.click(one_line_errors(fill), [title, source, index, sketch, mask, n, seed, label], [picture, summary],
                 api_name="complete", concurrency_id=MODEL_QUEUE)


def completion_status(run: LoadedRun) -> str:
    try:
        check_can_inpaint(run.model)
    except ValueError as e:
        return str(e)
    return f"{run.model.name} fills in the hidden pixels given the others."


def density_rows(found: Sequence[explore.Density]) -> list[list[str]]:
    return [[d.title, d.kind, "-" if d.nll_nats is None else f"{d.nll_nats:.2f}",
             "-" if d.bits_per_dim is None else f"{d.bits_per_dim:.4f}", d.note] for d in found]


def density_tab(runs: dict[str, LoadedRun]) -> None:
    everyone = list(runs.values())
    gr.Markdown("The NLL of one input under each loaded model, in nats and bits per dimension, with what kind of "
                "number it is: exact, an upper bound, an estimate, numerical, or unavailable.")
    if everyone[0].info.kind != "image":
        with gr.Row():
            x = gr.Number(0.0, label="x")
            y = gr.Number(0.0, label="y")
            button = gr.Button("Score the point", variant="primary")
        table = gr.Dataframe(headers=DENSITY_HEADERS, interactive=False, wrap=True)
        heatmap = gr.Image(label="learned densities (the point: red cross)", type="pil", format="png",
                           interactive=False)

        def score_point(x: float | None, y: float | None):
            point = (float(x or 0), float(y or 0))
            found = explore.densities(everyone, stored=torch.tensor(point))
            return density_rows(found), explore.density_map(everyone, point)

        button.click(one_line_errors(score_point), [x, y], [table, heatmap], api_name="density",
                     concurrency_id=MODEL_QUEUE)
        return
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio([TEST_EXAMPLE, DRAWING], value=TEST_EXAMPLE, label="score")
            index = gr.Number(0, precision=0, label="test example")
            label = gr.Number(None, precision=0, label="label (conditional models; empty: the test example's)",
                              visible=any(r.model.conditional for r in everyone))
            button = gr.Button("Score", variant="primary")
            seen = gr.Image(label="the input (as the first model sees it)", type="pil", format="png",
                            interactive=False)
        with gr.Column(scale=1):
            sketch = sketchpad("drawing (dark strokes on white)")
    table = gr.Dataframe(headers=DENSITY_HEADERS, interactive=False, wrap=True)

    def score(source: str, index: int | None, sketch: dict | None, label: int | None):
        picked = picked_input(everyone[0], source, index, sketch)
        shown = image_grid(explore.model_input(everyone[0], **picked)[None], nrow=1)
        return density_rows(explore.densities(everyone, label=label, **picked)), shown

    button.click(one_line_errors(score), [source, index, sketch, label], [table, seen], api_name="density",
                 concurrency_id=MODEL_QUEUE)


def leaderboard_tab(records: list[dict] | None) -> None:
    if records is None:
        gr.Markdown("No bench results loaded. Write some with `genzoo bench --data DATASET --out DIR` (or import "
                    "trained runs: `genzoo bench import RUN_DIR --out DIR`), then start the app with `--bench DIR`.")
        return
    families, kinds = explore.leaderboard_choices(records)
    with gr.Row():
        family = gr.Dropdown([ANY, *families], value=ANY, label="family")
        kind = gr.Dropdown([ANY, *kinds], value=ANY, label="likelihood")
    table = gr.Markdown(explore.leaderboard(records))

    def show(family: str, kind: str) -> str:
        return explore.leaderboard(records, None if family == ANY else family, None if kind == ANY else kind)

    gr.on([family.change, kind.change], one_line_errors(show), [family, kind], table, api_name="leaderboard")


# --- the app -------------------------------------------------------------------------------------
def build_app(runs: dict[str, LoadedRun], records: list[dict] | None = None) -> gr.Blocks:
    """The page over ``runs`` (``explore.load_runs``) and bench ``records`` (None: no leaderboard)."""
    first = next(iter(runs.values()))
    with gr.Blocks(analytics_enabled=False, title="genzoo app") as app:
        gr.Markdown(f"## genzoo: {len(runs)} run{'s' * (len(runs) != 1)} on {first.view.dataset}\n"
                    + "\n".join(f"- {title}" for title in runs))
        with gr.Tab("Sample"):
            sample_tab(runs)
        with gr.Tab("Latent explorer"):
            latent_tab(runs)
        with gr.Tab("Draw and complete"):
            complete_tab(runs)
        with gr.Tab("Density"):
            density_tab(runs)
        with gr.Tab("Leaderboard"):
            leaderboard_tab(records)
    app.queue(default_concurrency_limit=1)
    return app


def launch(app: gr.Blocks, host: str, port: int, share: bool = False) -> tuple[str, str | None]:
    """Serve ``app`` from a background thread: (its local URL, its share URL or None).

    The page is rendered in the browser (no Node server), with the system-font theme; no ``allowed_paths``.
    """
    _, local_url, share_url = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                                         quiet=True, theme=THEME, max_file_size=MAX_UPLOAD, ssr_mode=False)
    return local_url, share_url


def check_port(host: str, port: int) -> None:
    """Fail in one line unless this process can listen on host:port (bound and released at once)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"cannot listen on host {host!r}: {e.strerror}") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closed port is free
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} is in use (another app?): choose another with --port") from None
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve(run_dirs: list[str | Path], bench: str | Path | None = None, port: int = 7860, host: str = "127.0.0.1",
          share: bool = False) -> None:
    """Serve the app over ``run_dirs`` (runs of one dataset) and the results of bench directory ``bench``
    until interrupted. A port in use, a bench directory without records, a directory that is no run, or
    runs of different datasets fail in one line (``ValueError``) before anything is served."""
    check_port(host, port)
    records = None if bench is None else explore.read_bench(bench)
    runs = explore.load_runs(run_dirs)
    app = build_app(runs, records)
    local_url, share_url = launch(app, host, port, share)
    shared = f" and at {share_url} (a public share link)" if share_url else ""
    print(f"genzoo app: {len(runs)} run{'s' * (len(runs) != 1)} at {local_url}{shared}; Ctrl+C stops it", flush=True)
    app.block_thread()
