"""Test settings: a private AIRFLOW_HOME on SQLite and a private embedded Ray cluster.

Airflow reads its configuration when first imported, so the environment is set here, before
any test module imports airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Short on purpose: Ray's unix socket paths live under the embedded cluster's temp dir.
_HOME = Path(tempfile.mkdtemp(prefix="afr-"))
_DAGS = _HOME / "dags"
_DAGS.mkdir()

os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
        # The product's configuration: results of Ray tasks stay in the cluster.
        "AIRFLOW__CORE__XCOM_BACKEND": "airflow_ray.xcom.backend.RayXComBackend",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__RAY__EMBEDDED_DIR": str(_HOME / "ray"),
        # Four logical CPUs on a two-core machine: enough for a 2-CPU task beside others.
        "AIRFLOW__RAY__EMBEDDED_NUM_CPUS": "4",
        "AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY": str(3 * 1024**3),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Checkpoint tests talk to S3 servers on 127.0.0.1 only; never to AWS or its metadata.
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for name in list(os.environ):
    if name.startswith(
        (
            "AIRFLOW_CONN_",
            "AIRFLOW__RAY__CHECKPOINT",
            "RAY_AUTH_",
            "RAY_ADDRESS",
            "AWS_ACCESS",
            "AWS_SECRET",
            "AWS_SESSION",
            "AWS_PROFILE",
        )
    ):
        del os.environ[name]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the embedded cluster the tests started (only it) and remove the test home.

    This process first stops being a Ray driver: a driver whose raylet goes away is ended by
    Ray's core worker with exit status 1 and no word on the terminal, which made a run whose
    145 tests had all passed exit 1 (the shuffled run, with the embedded cluster's last module
    still connected).
    """
    from airflow_ray.cluster.local import EmbeddedCluster

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    EmbeddedCluster(_HOME / "ray").stop()
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated SQLite metadata DB, and the repository's example DAGs in the DAGs folder."""
    for dag_file in (REPO / "dags").glob("*.py"):
        shutil.copy(dag_file, _DAGS / dag_file.name)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return airflow_home
