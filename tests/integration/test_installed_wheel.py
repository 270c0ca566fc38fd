"""The user's install: the built wheel, with pip, into a fresh Airflow 3.3.2, and a DAG run there.

Users install the provider into the Airflow they already run; nobody imports it from our source
tree. So this module builds the sdist and the wheel (``python -m build``, the wheel from the
sdist, as ``make dist`` does), creates a fresh virtual environment, installs
``apache-airflow==3.3.2`` and then the wheel with pip, and drives that environment only through
its own commands, from a temporary directory, with no ``PYTHONPATH``: this checkout cannot be
imported there (a test checks where ``airflow_ray`` comes from).

Airflow's own constraints file cannot be downloaded on the machines these tests run on, so both
installs are constrained by ``requirements/lock.txt`` (the versions the rest of the suite tests).
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from airflow_ray import __version__
from airflow_ray.xcom.reference import is_reference_json
from tests.integration.airflow_processes import AirflowApiServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
AIRFLOW = "apache-airflow==3.3.2"
INSTALL_TIMEOUT = 900
DAG_ID = "example_ray_pipeline"


@dataclass
class Dist:
    sdist: Path
    wheel: Path


@dataclass
class UserInstall:
    """A virtual environment where a user installed Airflow, then our wheel."""

    venv: Path
    home: Path
    timings: dict[str, float]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """This environment's variables: ours and the test session's Airflow settings left out."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "RAY_", "AWS_"))
        }
        env.update(
            PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            VIRTUAL_ENV=str(self.venv),
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.home / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="false",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home / 'airflow.db'}",
            # The product's configuration, as the README tells users to set it.
            AIRFLOW__CORE__XCOM_BACKEND="airflow_ray.xcom.backend.RayXComBackend",
            AIRFLOW__RAY__EMBEDDED_DIR=str(self.home / "ray"),
            AIRFLOW__RAY__EMBEDDED_NUM_CPUS="2",
            AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY=str(100 * 1024**2),
            RAY_USAGE_STATS_ENABLED="0",
        )
        env.update(extra)
        return env

    def run(self, *command: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        """``command`` from this environment's bin folder, in its home (not in this checkout)."""
        done = subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            env=self.env(**extra),
            cwd=self.home,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-5000:]}"
        return done


def _metadata(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist and the wheel, built as ``make dist`` builds them (the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-5000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def installed(dist: Dist) -> Iterator[UserInstall]:
    """A fresh virtual environment: Airflow 3.3.2 first, then the wheel, each with pip."""
    # Short: Ray's unix socket paths live under the embedded cluster's folder.
    root = Path(tempfile.mkdtemp(prefix="afw-"))
    user = UserInstall(root / "venv", root / "home", {})
    (user.home / "dags").mkdir(parents=True)
    try:
        start = time.monotonic()
        venv.create(user.venv, with_pip=True)
        user.run(
            "python", "-m", "pip", "install", "--quiet", "-c", str(LOCK), AIRFLOW, timeout=INSTALL_TIMEOUT
        )
        user.timings["venv and Airflow"] = time.monotonic() - start
        start = time.monotonic()
        user.run(
            "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            str(LOCK),
            str(dist.wheel),
            timeout=INSTALL_TIMEOUT,
        )
        user.timings["the wheel"] = time.monotonic() - start
        start = time.monotonic()
        user.run("airflow", "db", "migrate", timeout=600)
        user.timings["airflow db migrate"] = time.monotonic() - start
        yield user
    finally:
        print("installed-wheel timings:", ", ".join(f"{k} {v:.1f} s" for k, v in user.timings.items()))
        try:
            if (user.bin / "airflow-ray").exists():
                # Stops only the embedded cluster of this environment's [ray] embedded_dir.
                user.run("airflow-ray", "local", "stop", timeout=120)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_the_sdist_and_the_wheel_hold_what_they_should(dist: Dist):
    with tarfile.open(dist.sdist) as sdist:
        top = f"airflow_ray-{__version__}/"
        in_sdist = {name.removeprefix(top) for name in sdist.getnames()}
        sdist_meta = _metadata(sdist.extractfile(f"{top}PKG-INFO").read().decode())  # type: ignore[union-attr]
    # What a packager needs to build it and run its tests (they read the files beside them).
    for needed in (
        "README.md", "CHANGELOG.md", "LICENSE", "NOTICE", "setup.py", "pyproject.toml", "MANIFEST.in",
        "requirements/lock.txt", "tox.ini", ".ci/run", "airflow_ray/py.typed", "airflow_ray/_remote/ruff.toml",
        "tests/conftest.py", "tests/integration/test_installed_wheel.py", "scripts/local_s3.py",
        "dags/example_ray_pipeline.py", "notebooks/higgs_xgboost_ray.ipynb",
    ):  # fmt: skip
        assert needed in in_sdist, f"{needed} is missing from {dist.sdist.name}"
    assert not [name for name in in_sdist if "__pycache__" in name or name.endswith(".pyc")]

    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
        info = f"airflow_ray-{__version__}.dist-info/"
        meta = _metadata(wheel.read(f"{info}METADATA").decode())
        license_text = wheel.read(f"{info}licenses/LICENSE").decode()
        assert wheel.read(f"{info}licenses/NOTICE").decode() == (REPO / "NOTICE").read_text()
    # The package only: no tests, DAGs, scripts or benchmarks.
    assert {name.split("/")[0] for name in names} == {"airflow_ray", info.rstrip("/")}
    assert "airflow_ray/py.typed" in names
    assert "Version 2.0, January 2004" in license_text and "END OF TERMS AND CONDITIONS" in license_text

    for found in (meta, sdist_meta):
        assert found["Version"] == __version__
        assert found["Requires-Python"] == ">=3.11"
        assert found["License-Expression"] == "Apache-2.0"
        assert sorted(found.get_all("License-File")) == ["LICENSE", "NOTICE"]
        urls = dict(url.split(", ", 1) for url in found.get_all("Project-URL"))
        assert urls["Documentation"].startswith("https://") and urls["Documentation"].endswith("/docs")
        assert "Framework :: Apache Airflow :: Provider" in found.get_all("Classifier")
        assert "airflow-provider" in found["Keywords"].split(",")

    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_airflow_registers_the_installed_provider(installed: UserInstall):
    # Airflow's and our requirements agree (what pip installed is consistent).
    installed.run("python", "-m", "pip", "check")
    where = installed.run("python", "-c", "import airflow_ray; print(airflow_ray.__file__)")
    site = (
        installed.venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
    assert Path(where.stdout.strip()) == site / "airflow_ray" / "__init__.py"

    providers = json.loads(installed.run("airflow", "providers", "list", "--output", "json").stdout)
    assert [p["version"] for p in providers if p["package_name"] == "airflow-ray"] == [__version__]

    hooks = json.loads(installed.run("airflow", "providers", "hooks", "--output", "json").stdout)
    assert [h["connection_type"] for h in hooks if h["class"] == "airflow_ray.hooks.ray.RayHook"] == ["ray"]

    decorator = installed.run(
        "python", "-c", "from airflow.sdk import task; print(task.ray.__module__, task.ray.__name__)"
    )
    assert decorator.stdout.split() == ["airflow_ray.decorators.ray", "ray_task"]

    plugins = json.loads(installed.run("airflow", "plugins", "--output", "json").stdout)
    (ours,) = [p for p in plugins if p["name"] == "airflow_ray"]
    assert ours["source"].startswith(f"airflow-ray=={__version__}: EntryPoint")
    assert [m["middleware"] for m in ours["fastapi_root_middlewares"]] == [
        "airflow_ray.hooks.connection_test.ConnectionTestMiddleware"
    ]


def test_the_api_server_loads_the_plugin(installed: UserInstall, tmp_path: Path):
    server = AirflowApiServer.start_on(
        installed.env(AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True"),
        tmp_path / "api-server.log",
        wait=False,
        airflow=[str(installed.bin / "airflow")],
        cwd=installed.home,
    )
    try:
        server.wait_until_healthy(timeout=180)
        # Mounted by the plugin (hooks/plugin.py): answers only if the API server loaded it.
        with urllib.request.urlopen(f"{server.url}/airflow-ray/readme", timeout=30) as answer:
            readme = answer.read().decode()
        assert readme == (REPO / "README.md").read_text()
        with urllib.request.urlopen(f"{server.url}/api/v2/providers", timeout=30) as answer:
            providers = json.load(answer)["providers"]
        (ours,) = [p for p in providers if p["package_name"] == "airflow-ray"]
        assert ours["version"] == __version__
        assert ours["documentation_url"].startswith("https://"), ours
    finally:
        server.stop()


def test_a_dag_runs_on_the_embedded_cluster_with_the_ray_xcom_backend(installed: UserInstall):
    # As the README tells users: an example DAG copied into their DAGs folder.
    shutil.copy(REPO / "dags" / f"{DAG_ID}.py", installed.home / "dags" / f"{DAG_ID}.py")
    start = time.monotonic()
    # 20,000 floats: too large to stay in the XCom row (inline_max_bytes), so kept in the cluster.
    done = installed.run("airflow", "dags", "test", DAG_ID, "-c", '{"rows": 20000}', timeout=600)
    installed.timings["airflow dags test"] = time.monotonic() - start
    assert "rows, mean" in done.stdout, done.stdout[-3000:]

    with sqlite3.connect(installed.home / "airflow.db") as db:
        rows = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'generate' AND key = 'return_value'",
            (DAG_ID,),
        ).fetchall()
    assert len(rows) == 1, rows
    stored = json.loads(rows[0][0])
    assert is_reference_json(stored), str(stored)[:500]
    assert stored["producer"]["task_id"] == "generate", stored
