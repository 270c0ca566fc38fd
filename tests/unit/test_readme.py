"""The README: short, every Python snippet quoted from the example DAGs, every link absolute.

It is also the package's long description (setup.py), shown on PyPI, where relative links do not
resolve: links go to the docs site (setup.py's DOCUMENTATION, built from docs/) or to the
repository (REPOSITORY). The rest of what it used to say lives in docs/ (tests/unit/test_docs.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.quotes import dag_sources, snippets

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAX_LINES = 200


def _setup_constant(name: str) -> str:
    found = re.search(rf'^{name} = "([^"]+)"$', (REPO / "setup.py").read_text(), flags=re.M)
    assert found, f"setup.py has no {name} = '...'"
    return found[1].rstrip("/")


def test_the_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; the rest belongs in docs/"


def test_python_snippets_in_the_readme_are_quoted_from_the_example_dags():
    readme = README.read_text()
    sources = dag_sources()
    found = snippets(readme)
    assert found
    for snippet in found:
        assert snippet in sources, f"README snippet not found in dags/:\n{snippet}"


def test_the_readme_quotes_a_whole_example_dag():
    whole = {path.read_text() for path in (REPO / "dags").glob("*.py")}
    assert any(snippet in whole for snippet in snippets(README.read_text()))


def test_links_in_the_readme_are_absolute_and_reach_a_docs_page_or_a_repository_file():
    docs_site = _setup_constant("DOCUMENTATION")
    repository = _setup_constant("REPOSITORY")
    links = re.findall(r"\]\(([^)\s]+)\)|<(https?://[^>]+)>", README.read_text())
    targets = [inline or bare for inline, bare in links]
    assert targets
    for target in targets:
        assert re.match(r"https?://", target), f"README link {target!r} is relative: PyPI cannot follow it"
        if target.startswith(docs_site):
            page = target[len(docs_site) :].strip("/").split("#", 1)[0]
            if page:
                assert page.endswith(".html"), target
                assert (REPO / "docs" / page.replace(".html", ".md")).is_file(), f"no docs page for {target}"
        elif target.startswith(f"{repository}/blob/main/"):
            path = target[len(f"{repository}/blob/main/") :].split("#", 1)[0]
            assert (REPO / path).is_file(), f"{target}: no such file in the repository"


def test_the_commands_exist_in_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^example: ", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    assert re.search(r"^docs: ", makefile, flags=re.M)
    assert "$(call phase,docs," in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()
