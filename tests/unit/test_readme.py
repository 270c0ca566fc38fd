"""The README quotes the example DAGs; the quotes must stay true."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_python_snippets_in_the_readme_are_quoted_from_the_example_dags():
    readme = (REPO / "README.md").read_text()
    sources = "\n".join(path.read_text() for path in (REPO / "dags").glob("*.py"))
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert snippets
    for snippet in snippets:
        assert snippet in sources, f"README snippet not found in dags/:\n{snippet}"


def test_the_two_commands_exist_in_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^example: ", makefile, flags=re.M)
    assert re.search(r"^test: ", makefile, flags=re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()
