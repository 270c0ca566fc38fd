"""The docs site (docs/): its Python examples are included from the example DAGs, never copied,
and each included DAG file is run by a test.

A page shows DAG code only through ``literalinclude`` of a file under dags/. A ```python block
is allowed only as a quote of a notebook cell (the five steps pair a cell with the DAG's lines),
checked as the README's snippets are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.quotes import in_a_cell, notebook_cells, snippets

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# ```{literalinclude} path, then its options: a YAML block between --- lines, or :key: value lines.
INCLUDE = re.compile(r"```\{literalinclude\} (\S+)\n((?:---\n.*?\n---\n)|(?::[\w-]+: .*\n)*)```", re.S)
# Options that name text of the included file.
MARKERS = ("start-at", "start-after", "end-at", "end-before")


def _includes(page: Path) -> list[tuple[Path, dict[str, str]]]:
    found = []
    for target, block in INCLUDE.findall(page.read_text()):
        options: dict[str, str] = {}
        for line in block.strip("-\n").splitlines():
            key, _, value = line.lstrip(":").partition(":")
            value = value.strip()
            options[key.strip().rstrip(":")] = json.loads(value) if value.startswith('"') else value
        found.append(((page.parent / target).resolve(), options))
    return found


def _test_sources() -> str:
    """The tests that run DAGs: the integration tests (unit tests only parse them)."""
    return "\n".join(path.read_text() for path in (REPO / "tests" / "integration").rglob("*.py"))


def test_the_docs_have_pages():
    names = {page.stem for page in PAGES}
    assert {"index", "getting-started", "connection", "operators", "xcom-backend", "checkpoints"} <= names
    assert {"jobs-api", "deployment", "security", "troubleshooting", "configuration", "cli", "api"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_code_in_a_page_is_included_from_dags_or_quotes_a_notebook_cell(page: Path):
    text = page.read_text()
    assert not re.search(r"```(py|python3|\{code-block\} *python)\n", text), f"{page.name}: copied Python"
    cells = notebook_cells()
    for snippet in snippets(text):
        assert in_a_cell(snippet, cells), f"{page.name}: a ```python block that no notebook cell holds " + (
            f"(include DAG code from dags/ with literalinclude):\n{snippet}"
        )
    for path, options in _includes(page):
        assert path.parent == REPO / "dags", f"{page.name}: includes {path}, not a file under dags/"
        source = path.read_text()
        for key in MARKERS:
            if key in options:
                assert options[key] in source, f"{page.name}: {key} {options[key]!r} not in {path.name}"
        if "pyobject" in options:
            assert re.search(rf"^\s*(def|class) {options['pyobject']}\b", source, flags=re.M), options


def _run_by_a_test(path: Path, tests: str) -> bool:
    """A DAG file is run when a test names it (file or DAG id); a step module of DAG files (no DAG
    of its own) when a DAG file that imports it is."""
    if re.search(rf"\b{path.stem}\b", tests):
        return True
    importers = [
        other
        for other in path.parent.glob("*.py")
        if re.search(rf"^from {path.stem} import|^import {path.stem}\b", other.read_text(), flags=re.M)
    ]
    return any(re.search(rf"\b{other.stem}\b", tests) for other in importers)


def test_each_included_dag_file_is_run_by_a_test():
    tests = _test_sources()
    included = {path for page in PAGES for path, _ in _includes(page)}
    assert included
    for path in included:
        assert _run_by_a_test(path, tests), f"{path.name} is shown in the docs but no test runs it"


def test_each_of_the_five_steps_quotes_a_notebook_cell_and_includes_the_dag():
    page = DOCS / "five-steps.md"
    steps = re.split(r"^## ", page.read_text(), flags=re.M)[1:]
    assert [step.split(".", 1)[0] for step in steps] == ["1", "2", "3", "4", "5"]
    cells = notebook_cells()
    for step in steps:
        title = step.splitlines()[0]
        assert any(in_a_cell(snippet, cells) for snippet in snippets(step)), f"step {title}: no notebook cell"
        assert "```{literalinclude} ../dags/" in step, f"step {title}: no DAG lines"


def test_the_generated_pages_use_their_generators():
    assert "```{ray-config}" in (DOCS / "configuration.md").read_text()
    assert "```{ray-cli}" in (DOCS / "cli.md").read_text()


def test_screenshots_are_referenced_through_the_conditional_directive():
    text = "\n".join(page.read_text() for page in PAGES)
    shots = set(re.findall(r"```\{screenshot\} (\S+)", text))
    # Each shot that make screenshots takes is shown on a page, and only those.
    from scripts.screenshots import SHOTS

    assert shots == set(SHOTS)
    # An image or figure of its own would fail the build while the file is not made yet.
    assert not re.search(r"!\[[^]]*\]\([^)]*screenshots/|\{(image|figure)\}[^\n]*screenshots/", text)


def test_the_api_page_documents_every_public_name():
    import airflow_ray

    text = (DOCS / "api.md").read_text()
    for name in airflow_ray.__all__:
        if name != "__version__":
            assert re.search(rf"^\.\. auto\w+:: airflow_ray\.{name}$", text, flags=re.M), name


def test_troubleshooting_names_every_error_class():
    import inspect

    from airflow_ray import exceptions

    text = (DOCS / "troubleshooting.md").read_text()
    classes = [
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value) and value.__module__ == exceptions.__name__ and name != "AirflowRayError"
    ]
    assert classes
    for name in classes:
        assert f"`{name}`" in text, f"troubleshooting.md does not say when {name} is raised"
