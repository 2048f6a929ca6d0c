"""Shared fixtures: the local data directory and tiny runs trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from genzoo.cli import main

# Small enough to train, evaluate and draw every figure in about a second on a CPU.
TINY_FLAGS = ["--max-steps", "20", "--hidden-dim", "32", "--latent-dim", "4", "--eval-iw-samples", "5"]
# The options a model needs beyond TINY_FLAGS to exercise its own path.
MODEL_FLAGS = {"cvae": ["--set", "prior=learned"], "iwae": ["--set", "k=3", "--set", "prior=vamp", "--set", "pseudo_inputs=10"]}


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit code, stdout, stderr)`` of one ``genzoo`` command run in this process."""

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data relative to the repository root: local MNIST files (the machines are offline)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"local data directory absent: {path}")
    return path


@pytest.fixture(scope="session")
def local_data(shared_data):
    """``local_data(name) -> Path``: ../shared/data/NAME, or skip the test when it is absent."""

    def get(name: str) -> Path:
        path = shared_data / name
        if not path.is_dir():
            pytest.skip(f"{path} absent")
        return path

    return get


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``tiny_run(model) -> run directory``: a 20-step run of a latent-family ``model`` on digits (``TINY_FLAGS``
    set its hidden and latent sizes, which other families do not take), trained once per session.

    Tests must not modify these directories (a test that does makes later ones depend on the order):
    copy one (``shutil.copytree``) to evaluate into or damage it. The session ends with an error
    naming any file that was added, removed or rewritten.
    """
    runs: dict[str, Path] = {}
    as_trained: dict[str, dict] = {}

    def get(model: str) -> Path:
        if model not in runs:
            out = tmp_path_factory.mktemp("runs") / model
            code = main(["train", model, "--out", str(out), *TINY_FLAGS, *MODEL_FLAGS.get(model, [])])
            assert code == 0, f"training the shared tiny {model} run failed"
            runs[model], as_trained[model] = out, files_of(out)
        return runs[model]

    yield get
    changed = {}
    for model, out in runs.items():
        before, after = as_trained[model], files_of(out)
        if names := sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name)):
            changed[model] = names
    assert not changed, f"tests modified the shared tiny runs (copy a run to write into it): {changed}"


def files_of(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Each file of ``run_dir`` -> (size, modification time in ns)."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="session")
def vae_run(tiny_run) -> Path:
    """One tiny vae run on digits, shared by the tests that only read it."""
    return tiny_run("vae")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless Chromium (``.ci/run`` installs Debian's); skips only where none can be had."""
    from browser import find_chromium

    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    return path
