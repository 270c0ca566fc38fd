"""Each module of ``airflow_ray._remote`` imports, where Airflow is missing, only the standard
library and ``airflow_ray._remote``: it is shipped to a cluster that has neither Airflow nor the
rest of airflow-ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_ray._remote

REMOTE = "airflow_ray._remote"

# Run in a fresh interpreter: blocks ``airflow``, imports one module and prints what that
# newly imported and which imports it tried that were blocked.
PROBE = """
import importlib, json, sys

class BlockAirflow:
    blocked = []

    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            self.blocked.append(name)
            raise ImportError(f"airflow is not installed here ({name})")
        return None

sys.path[:0] = json.loads(sys.argv[2])
sys.meta_path.insert(0, BlockAirflow())
before = set(sys.modules)
try:
    importlib.import_module(sys.argv[1])
    error = None
except ImportError as err:
    error = f"{type(err).__name__}: {err}"
print(json.dumps({"new": sorted(set(sys.modules) - before), "blocked": BlockAirflow.blocked, "error": error}))
"""


def remote_modules() -> list[str]:
    folder = Path(airflow_ray._remote.__file__).parent
    return sorted(
        REMOTE if path.stem == "__init__" else f"{REMOTE}.{path.stem}" for path in folder.glob("*.py")
    )


def probe(module: str, path: list[Path] | None = None) -> dict:
    """What importing ``module`` in a fresh interpreter without Airflow imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps([str(p) for p in path or []])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"importing {module} failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def not_allowed(report: dict) -> list[str]:
    """What the import pulled in or tried that a cluster without Airflow may not have."""
    found = [f"blocked: {name}" for name in report["blocked"]]
    if report["error"]:
        found.append(report["error"])
    for name in report["new"]:
        top = name.partition(".")[0]
        if top == "airflow_ray":
            if name not in ("airflow_ray", REMOTE) and not name.startswith(f"{REMOTE}."):
                found.append(name)
        elif top not in sys.stdlib_module_names:
            found.append(name)
    return found


def test_the_remote_modules_are_found():
    modules = remote_modules()
    assert REMOTE in modules and f"{REMOTE}.protocol" in modules
    assert len(modules) > 2


@pytest.mark.parametrize("module", remote_modules())
def test_imports_only_the_standard_library_without_airflow(module):
    report = probe(module)
    assert module in report["new"]
    assert not_allowed(report) == []


def test_the_probe_sees_airflow_and_worker_side_modules():
    hook = not_allowed(probe("airflow_ray.hooks.ray"))
    assert "blocked: airflow" in hook or "blocked: airflow.sdk" in hook
    assert any(item.startswith("ImportError") for item in hook)
    # Airflow-free, but worker-side: the reference and its package airflow_ray.xcom.
    assert not_allowed(probe("airflow_ray.xcom.reference")) == [
        "airflow_ray.xcom",
        "airflow_ray.xcom.reference",
    ]


def test_the_probe_sees_third_party_modules(tmp_path):
    (tmp_path / "uses_pluggy.py").write_text("import json\nimport pluggy\n")
    found = not_allowed(probe("uses_pluggy", [tmp_path]))
    assert "pluggy" in found
    assert "json" not in found and "uses_pluggy" in found
