"""Every notebook in notebooks/ runs top to bottom on the offline default: no key, no network.

The execution test is marked `integration` (it needs the real local model); the
checks of the committed files are not.

Each notebook is executed in a fresh `python3` kernel (ipykernel, a subprocess of
this interpreter) by nbclient, from the notebooks directory as Jupyter would, and
a cell error fails the test. The kernel inherits this process's environment (no
OpenAI key, tracing off: tests/conftest.py), so the notebooks use the local model.
pytest-socket guards only this process; nbclient talks to the kernel over ZMQ
on 127.0.0.1, which the allowed hosts include.

One local model server serves all notebooks: a running one is reused (`m3rec
serve`, or the session's from `local_url` when the integration tests ran
first), else one is started here and stopped after the last notebook.
`pytest --durations=0` shows how long each notebook took.
"""

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from m3rec_graph import local_server

NOTEBOOK_DIR = Path(__file__).parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def read_notebook(path: Path) -> nbformat.NotebookNode:
    notebook: nbformat.NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return notebook


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    with local_server() as url:
        yield url


def test_the_notebooks_are_found() -> None:
    assert [p.name for p in NOTEBOOKS][:3] == [
        "01_quickstart.ipynb",
        "02_prompt_iteration.ipynb",
        "03_routing_costs.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    """Outputs come from a local model run: they would change with every execution."""
    notebook = read_notebook(path)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} cell {index} has outputs: clear them before committing"
            )


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, model_server: str) -> None:
    notebook = read_notebook(path)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
