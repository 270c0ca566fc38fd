"""The lint rule scoped to ``airflow_ray/_remote`` keeps up with the package and the root config."""

from __future__ import annotations

import tomllib
from pathlib import Path

# The source tree, not the installed package: the lint config is not shipped.
REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "airflow_ray"
REMOTE_CONFIG = PACKAGE / "_remote" / "ruff.toml"


def worker_side_modules() -> set[str]:
    """Every module and package of airflow_ray that is not shipped to the cluster."""
    names = {path.stem for path in PACKAGE.glob("*.py")} | {
        path.parent.name for path in PACKAGE.glob("*/__init__.py")
    }
    return {f"airflow_ray.{name}" for name in names - {"__init__", "_remote"}}


def test_remote_code_may_not_import_airflow_or_any_worker_side_module():
    config = tomllib.loads(REMOTE_CONFIG.read_text())
    assert config["extend"] == "../../pyproject.toml"
    assert "TID251" in config["lint"]["extend-select"]
    banned = set(config["lint"]["flake8-tidy-imports"]["banned-api"])
    assert "airflow_ray.hooks" in worker_side_modules()
    assert banned == {"airflow"} | worker_side_modules()


def test_remote_bans_at_module_level_what_the_root_bans_and_more():
    root = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    remote = tomllib.loads(REMOTE_CONFIG.read_text())["lint"]
    # The nested list replaces the root's: it has to repeat it.
    root_banned = set(root["flake8-tidy-imports"]["banned-module-level-imports"])
    remote_banned = set(remote["flake8-tidy-imports"]["banned-module-level-imports"])
    assert remote_banned == root_banned | {"numpy", "pandas", "pyarrow"}
