"""notebooks/starter.ipynb, run cell by cell in a fresh Jupyter kernel as a user runs it, so it cannot rot.

Every task's starter notebook has a `train` cell printing the run's headline metric and a `curves`
cell drawing its training curves; the task checks its own cells (tests/task/samples.py).

The kernel is this interpreter running ipykernel, with this process's import path: the project's
venv (a machine's `python3` kernelspec could be any Python). A kernel is a process of its own, so
this is an end-to-end test (`uv run test-all`). It starts in notebooks/, as Jupyter starts a
notebook, and trains into a temporary folder chosen the way a user would, with TRAINING__OUTPUT_DIR.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from src.config import PROJECT_ROOT
from src.task import TASK
from tests.task import samples

NOTEBOOK = PROJECT_ROOT / "notebooks" / "starter.ipynb"
KERNEL_NAME = "project-test"
CELL_TIMEOUT = 240  # seconds; the whole notebook takes ~10 s here, training most of it


def kernel_manager(folder: Path) -> KernelManager:
    """A kernel of this interpreter and import path, found only in `folder` (no user kernelspec applies)."""
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    launcher = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {
        "argv": [*launcher, "--InteractiveShell.colors=nocolor"],  # tracebacks without ANSI colours
        "display_name": "the tests' Python",
        "language": "python",
        "env": {
            "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
            "IPYTHONDIR": str(folder / "ipython"),  # not the user's ~/.ipython
            "OMP_NUM_THREADS": "1",  # the tiny model gains nothing from more (tests/conftest.py)
        },
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return KernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    )


def read_notebook() -> Any:
    return nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]


def outputs(cell: Any) -> tuple[str, set[str]]:
    """A code cell's printed and displayed text, and the kinds of its rich outputs (image/png, ...)."""
    texts: list[str] = []
    kinds: set[str] = set()
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif "data" in output:
            kinds.update(output.data)
            texts.append(output.data.get("text/plain", ""))
    return "".join(texts), kinds


def test_the_notebook_is_saved_clean() -> None:
    """No outputs or execution counts in git: a small diff, no stale pictures."""
    notebook = read_notebook()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.timeout(600)
def test_the_starter_notebook_runs_every_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output_dir = tmp_path / "runs"
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(output_dir))  # the kernel inherits this environment
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files
    notebook = read_notebook()
    manager = kernel_manager(tmp_path / "jupyter")
    client = NotebookClient(
        notebook, km=manager, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    try:
        client.execute()  # a cell that raises fails the test here (CellExecutionError), with its traceback
    finally:
        if manager.has_kernel:  # nbclient leaves a kernel it was given running
            manager.shutdown_kernel(now=True)

    run_dir = (output_dir / "latest").resolve()
    assert run_dir.parent == output_dir.resolve()
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["run_id"] == run_dir.name
    assert (run_dir / TASK.model_files.weights[0]).is_file()
    cells = {cell.get("id"): outputs(cell) for cell in notebook.cells if cell.cell_type == "code"}
    headline = TASK.metrics[0]
    assert f"{headline.title} {metrics[headline.key]:.3f}" in cells["train"][0], "the training cell prints the run"
    assert "image/png" in cells["curves"][1]
    samples.check_notebook(cells)  # what the task's own cells show
