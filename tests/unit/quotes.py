"""What the README and the docs quote: the example DAGs and the notebook cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def snippets(markdown: str) -> list[str]:
    """The bodies of the ```python blocks of a Markdown text."""
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def dag_sources() -> str:
    return "\n".join(path.read_text() for path in (REPO / "dags").glob("*.py"))


def notebook_cells() -> list[str]:
    """The source of every code cell of the notebooks, one string per cell."""
    cells = []
    for path in (REPO / "notebooks").glob("*.ipynb"):
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                source = cell["source"]
                cells.append(source if isinstance(source, str) else "".join(source))
    return cells


def in_a_cell(snippet: str, cells: list[str]) -> bool:
    # A quote of a cell may leave out its last newline (cells have none).
    return any(snippet in cell + "\n" for cell in cells)
