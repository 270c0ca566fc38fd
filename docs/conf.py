"""Sphinx configuration of the airflow-ray docs (built by ``make docs`` into docs/_build/html)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

from airflow_ray import __version__  # noqa: E402  (the path above first)

project = "airflow-ray"
author = "The airflow-ray authors"
copyright = "The airflow-ray authors"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "airflow_ray_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"airflow-ray {release}"
html_static_path = ["_static"]

# Importing airflow_ray imports none of these; autodoc imports the modules behind its public
# names, which import them only inside functions. Mocked so that a docs build needs none.
autodoc_mock_imports = ["ray", "xgboost", "xgboost_ray", "boto3", "botocore"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"

# -n (nitpicky): references to the classes of Airflow, Ray and the standard library are not
# resolvable without intersphinx (which needs the network): they are left as plain text.
nitpick_ignore_regex = [
    ("py:class", r"(airflow|ray|pendulum|pandas|pyarrow|numpy|collections|typing|datetime|argparse)\..*"),
    ("py:class", r"(Any|Context|Callable|Sequence|Mapping|Collection|Iterable|TaskDecorator|Transport)"),
    ("py:class", r"(optional|default|XComArg)"),
    ("py:meth", r"get_transport"),
    ("py:mod", r"airflow_ray\._remote\..*"),
]
