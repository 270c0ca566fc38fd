"""The README quotes the example DAGs and the notebook; the quotes must stay true."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIVE_STEPS = "## From notebook to DAG in five steps"


def _snippets(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def _dag_sources() -> str:
    return "\n".join(path.read_text() for path in (REPO / "dags").glob("*.py"))


def _notebook_cells() -> list[str]:
    """The source of every code cell of the notebooks, one string per cell."""
    cells = []
    for path in (REPO / "notebooks").glob("*.ipynb"):
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                source = cell["source"]
                cells.append(source if isinstance(source, str) else "".join(source))
    return cells


def _in_a_cell(snippet: str, cells: list[str]) -> bool:
    # A quote of a cell may leave out its last newline (cells have none).
    return any(snippet in cell + "\n" for cell in cells)


def test_python_snippets_in_the_readme_are_quoted_from_the_example_dags_or_the_notebook():
    readme = (REPO / "README.md").read_text()
    sources = _dag_sources()
    cells = _notebook_cells()
    snippets = _snippets(readme)
    assert snippets
    for snippet in snippets:
        assert snippet in sources or _in_a_cell(snippet, cells), (
            f"README snippet not found in dags/ nor in a cell of notebooks/:\n{snippet}"
        )


def test_each_of_the_five_steps_quotes_a_notebook_cell_and_the_dag():
    readme = (REPO / "README.md").read_text()
    assert FIVE_STEPS in readme
    section = readme.split(FIVE_STEPS, 1)[1].split("\n## ", 1)[0]
    steps = re.split(r"^### ", section, flags=re.M)[1:]
    assert [step.split(".", 1)[0] for step in steps] == ["1", "2", "3", "4", "5"]
    sources = _dag_sources()
    cells = _notebook_cells()
    for step in steps:
        snippets = _snippets(step)
        title = step.splitlines()[0]
        assert any(_in_a_cell(snippet, cells) for snippet in snippets), f"step {title}: no notebook cell"
        assert any(snippet in sources for snippet in snippets), f"step {title}: no DAG lines"


def test_the_two_commands_exist_in_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^example: ", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()
