"""examples/quickstart.ipynb is docs/getting-started.md as a notebook, and runs top to
bottom in a real Jupyter kernel: no cell fails, the plots show inline."""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path

import pytest
from conftest import need

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "examples" / "build_quickstart.py"
spec = importlib.util.spec_from_file_location("build_quickstart", BUILD)
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def test_the_notebook_is_the_getting_started_page():
    nbformat = need("nbformat")
    committed = nbformat.reads(build.NOTEBOOK.read_text(), as_version=4)
    expected = nbformat.from_dict(build.notebook())
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c["cell_type"], c["source"]) for c in expected.cells
    ], "run: .venv/bin/python examples/build_quickstart.py"
    assert all(not c.get("outputs") for c in committed.cells)  # outputs are not committed


def _pngs(cell) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in cell.outputs
            if "image/png" in o.get("data", {})]  # fmt: skip


@pytest.mark.slow
def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path):
    nbformat, nbclient = need("nbformat"), need("nbclient")
    need("ipykernel")
    nb = nbformat.read(build.NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                      resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()  # raises CellExecutionError with the cell's traceback
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "Learner: Sequential" in code[0].outputs[-1]["data"]["text/plain"]
    range_test = _pngs(code[1])
    assert len(range_test) == 1 and range_test[0][:4] == b"\x89PNG"
    assert len(_pngs(code[2])) == 1  # the loss plot
    accuracy = float(code[3].outputs[-1]["data"]["text/plain"].removeprefix("tensor(")[:6])
    assert accuracy > 0.9  # the recipe's number, in a notebook
    keep = os.environ.get("ONECYCLE_KEEP_FIGURES")  # to look at the figure by hand
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        Path(keep, "quickstart_range_test.png").write_bytes(range_test[0])
