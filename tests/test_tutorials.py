"""The tutorials of docs/tutorials execute, every cell, at the smoke budget.

Each notebook checks the mathematics it teaches with asserts (a closed form against its Monte Carlo
estimate, a log-determinant against the autograd Jacobian, EM's log-likelihood never decreasing, ...),
so executing it tests those claims. ``GENZOO_TUTORIAL_BUDGET=smoke`` cuts its training to a handful
of steps; the asserts hold at every budget. A failing cell fails its notebook's test with the cell's
source and error (nbclient's ``CellExecutionError``). The static tests keep the path documented and
the stored notebooks as GitHub shows them: executed, small, on the standard ``python3`` kernel.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
BUDGET = "GENZOO_TUTORIAL_BUDGET"
CELL_TIMEOUT_S = 120  # a cell at the smoke budget takes seconds; a hung kernel fails here
MAX_STORED_BYTES = 400_000  # with outputs: pictures included, the notebook must stay small
TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # in the kernel's tracebacks


def notebook_id(path: Path) -> str:
    return path.stem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_executes_at_the_smoke_budget(path, tmp_path, monkeypatch):
    monkeypatch.setenv(BUDGET, "smoke")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' run directories (tempfile) land here
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S, shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(tmp_path)}})  # the kernel's working directory
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as error:  # the failing cell's source and traceback
        pytest.fail(f"{path.name}: a cell failed\n{TERMINAL_COLOURS.sub('', str(error))}", pytrace=False)


def test_there_is_a_notebook_per_family():
    families = ["mixtures", "latent", "adversarial", "autoregressive", "flows", "diffusion", "energy"]
    assert [path.stem for path in NOTEBOOKS] == [f"{i:02d}_{family}" for i, family in enumerate(families, 1)]


def test_readme_lists_every_notebook_and_the_budget():
    readme = (TUTORIALS / "README.md").read_text()
    missing = [path.name for path in NOTEBOOKS if path.name not in readme]
    assert not missing, f"docs/tutorials/README.md does not list {missing}"
    positions = [readme.index(path.name) for path in NOTEBOOKS]
    assert positions == sorted(positions), "the README lists the notebooks out of order"
    assert BUDGET in readme and "smoke" in readme and "full" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_first_code_cell_reads_the_budget(path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert BUDGET in first.source, f"{path.name}: its first code cell must read {BUDGET}"
    for budget in ("full", "smoke"):
        monkeypatch.setenv(BUDGET, budget)
        exec(first.source, {})  # noqa: S102 (plain Python: it only reads the variable and sets the sizes)
    monkeypatch.setenv(BUDGET, "quick")
    with pytest.raises(ValueError, match=BUDGET):  # an unknown budget is refused, by name
        exec(first.source, {})  # noqa: S102


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_stored_notebook_is_executed_small_and_standard(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{path.name} is stored without running every cell"
    pictures = sum("image/png" in output.get("data", {}) for cell in code for output in cell.outputs)
    assert pictures, f"{path.name} is stored without its pictures"
    errors = [output for cell in code for output in cell.outputs if output.output_type == "error"]
    assert not errors, f"{path.name} is stored with an error"
    assert path.stat().st_size < MAX_STORED_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"
