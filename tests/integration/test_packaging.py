"""The installed provider as Airflow sees it, and what importing it costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_airflow_lists_the_provider_and_its_decorator(airflow_db):
    env = os.environ.copy()
    providers = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    names = {entry["package_name"] for entry in json.loads(providers.stdout)}
    assert "airflow-ray" in names
    code = "from airflow.sdk import task; print(task.ray.__module__, task.ray.__name__)"
    decorator = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert decorator.stdout.split() == ["airflow_ray.decorators.ray", "ray_task"]
    hooks = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "airflow_ray.hooks.ray.RayHook" in hooks.stdout


IMPORT_PROBE = """
import json, sys
from airflow.sdk import BaseHook
reads = []
original = BaseHook.get_connection.__func__
def spy(cls, conn_id):
    reads.append(conn_id)
    return original(cls, conn_id)
BaseHook.get_connection = classmethod(spy)

import airflow_ray, airflow_ray.hooks.ray, airflow_ray.operators.ray, airflow_ray.decorators.ray
import airflow_ray.operators.checkpoint, airflow_ray.xcom.backend
import airflow_ray.cli, airflow_ray.get_provider_info, airflow_ray.cluster.local, airflow_ray.cluster.driver
import airflow_ray.results.handover, airflow_ray.results.persist, airflow_ray.results.release
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
# As Airflow's DAG processor parses a bundle: its folder on sys.path, so DAGs can import helpers.
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]), bundle_name="dags-folder")
print(json.dumps({
    "heavy": sorted(m for m in ("ray", "xgboost", "xgboost_ray", "boto3", "botocore") if m in sys.modules),
    "dags": sorted(bag.dag_ids),
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "connections_read": reads,
}))
"""


def test_import_and_dag_parsing_import_no_ray_and_read_no_connection(airflow_db):
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(REPO / "dags")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert "example_ray_pipeline" in report["dags"]
    assert report["heavy"] == []
    assert report["connections_read"] == []
