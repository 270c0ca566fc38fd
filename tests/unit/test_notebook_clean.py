"""Notebooks are committed without outputs: what they show comes from running them, in CI too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert REPO / "notebooks" / "higgs_xgboost_ray.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_the_notebook_is_stored_without_outputs(path: Path):
    notebook = json.loads(path.read_text())
    dirty = []
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            dirty.append(f"cell {number}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            dirty.append(f"cell {number}: execution_count {cell['execution_count']}")
    assert not dirty, (
        f"{path.relative_to(REPO)} is stored with outputs ({'; '.join(dirty)}). Clear them before "
        f"committing (Jupyter: Edit > Clear Outputs of All Cells, then save)."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_the_notebook_is_a_valid_notebook_with_a_parameters_cell(path: Path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'parameters': the notebook test overrides its values after it"
