"""One version string, and a changelog entry for it."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

from airflow_ray import __version__
from airflow_ray.get_provider_info import get_provider_info

REPO = Path(__file__).resolve().parents[2]
# When each [ray] option appeared: a past version, not the package's own.
VERSION_ADDED = re.compile(r'"version_added": "[^"]*"')


def test_the_version_is_written_once():
    assert str(Version(__version__)) == __version__, f"{__version__!r} is not a normalized version"
    # setup.py and the provider info read airflow_ray.__version__; nothing else spells it.
    sources = [REPO / "setup.py", REPO / "pyproject.toml", *sorted((REPO / "airflow_ray").rglob("*.py"))]
    spelled = [
        path.relative_to(REPO)
        for path in sources
        if f'"{__version__}"' in VERSION_ADDED.sub("", path.read_text())
    ]
    assert spelled == [Path("airflow_ray/__init__.py")]
    assert get_provider_info()["versions"] == [__version__]


def test_no_option_was_added_after_this_version():
    options = get_provider_info()["config"]["ray"]["options"]
    later = {
        name: o["version_added"]
        for name, o in options.items()
        if Version(o["version_added"]) > Version(__version__)
    }
    assert later == {}


def test_the_changelog_begins_with_this_version():
    text = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (\S+) \((?:unreleased|\d{4}-\d{2}-\d{2})\)$", text, re.M)
    assert headings, "CHANGELOG.md has no entry: '## <version> (<date> or unreleased)'"
    assert headings[0] == __version__, f"CHANGELOG.md's newest entry is {headings[0]}, not {__version__}"
    assert len(headings) == len(set(headings)), headings
