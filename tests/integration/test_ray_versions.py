"""The Ray version window, on real clusters of its oldest and newest Ray (each started from a
virtual environment with only ``ray[default]``), reached through their dashboards by this worker's
Ray 2.60: results handed over, a plain consumer, deferral; and what cannot work refused before
the callable runs, naming both versions.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_ray.cluster import versions
from airflow_ray.exceptions import AirflowRayError
from airflow_ray.operators.ray import RayPythonOperator
from scripts.ray_only_cluster import OLDEST_RAY, RayOnlyCluster, ray_version
from tests.integration.dagrun import run_dag, task_states, xcom, xcom_row

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
KB = 1024
CONN = "ray_window"


@pytest.fixture(scope="module", params=[OLDEST_RAY, ray_version()], ids=["oldest", "newest"])
def cluster(request, airflow_db, tmp_path_factory) -> Iterator[tuple[str, RayOnlyCluster]]:
    """A cluster of the window's oldest or newest Ray, and that Ray version; the connection
    ``ray_window`` to its dashboard."""
    started = RayOnlyCluster.start(
        tmp_path_factory.mktemp(f"ray-{request.param}"), num_cpus=2, object_store_mb=200, ray=request.param
    )
    os.environ[f"AIRFLOW_CONN_{CONN.upper()}"] = json.dumps(
        {"conn_type": "ray", "host": started.dashboard_url, "password": started.token}
    )
    try:
        yield request.param, started
    finally:
        del os.environ[f"AIRFLOW_CONN_{CONN.upper()}"]
        started.stop()


def test_the_window_is_what_the_tests_run():
    assert versions.release(OLDEST_RAY) == versions.OLDEST_RAY
    assert versions.release(ray_version()) == versions.NEWEST_RAY


def make_bytes(kb: int) -> bytes:
    # Standard library only: the clusters have nothing but ray[default] (no numpy).
    return bytes(range(256)) * (kb * KB // 256)


def test_results_travel_and_tasks_defer_on_the_oldest_and_the_newest_ray(cluster):
    version, _ = cluster
    with DAG("x_ray_window", schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(
            task_id="produce", python_callable=make_bytes, op_args=[512], ray_conn_id=CONN
        )

        @task.ray(ray_conn_id=CONN, deferrable=True, poll_interval=0.5)
        def total(data: bytes) -> dict:
            import ray

            return {"sum": sum(data), "cluster_ray": ray.__version__}

        @task
        def in_airflow(data: bytes) -> int:
            return len(data)

        total(produced.output)
        in_airflow(produced.output)
    dag_run = run_dag(dag)
    assert task_states(dag_run) == dict.fromkeys(["produce", "total", "in_airflow"], "success")
    assert xcom_row(dag_run, "produce")["size_bytes"] >= 512 * KB  # kept in the cluster
    summed = xcom(dag_run, "total")
    assert summed["sum"] == sum(make_bytes(512))
    assert summed["cluster_ray"] == version  # the cluster's own Ray ran it
    assert xcom(dag_run, "in_airflow") == 512 * KB


def test_a_cluster_ray_outside_the_window_is_refused_before_any_job(cluster, monkeypatch):
    from airflow_ray.cluster.jobs_api import JobsClient
    from airflow_ray.hooks.ray import RayHook

    answered = JobsClient(RayHook(CONN).jobs_endpoint()).version()["ray_version"]
    found = versions.release(answered)
    assert found is not None
    # The window as a later airflow-ray would have it: this cluster's Ray is just outside.
    monkeypatch.setattr(versions, "OLDEST_RAY", (found[0], found[1] + 1))
    monkeypatch.setattr(versions, "NEWEST_RAY", (found[0], found[1] + 5))
    transport = RayHook(CONN).get_transport()
    started = time.monotonic()
    with pytest.raises(AirflowRayError) as raised:
        _ = transport.client  # its first use asks the cluster's version
    took = time.monotonic() - started
    assert f"runs Ray {answered}" in str(raised.value) and "this Airflow worker runs Ray" in str(raised.value)
    print(f"a cluster of Ray {answered} outside the window was refused in {took:.2f} s")


def test_a_cluster_python_of_another_minor_is_refused_before_the_callable_runs(cluster, monkeypatch, capfd):
    import platform

    # The worker claims another Python: the job's entrypoint compares it with its own.
    claimed = "3.10" if versions.worker_python() != "3.10" else "3.12"
    monkeypatch.setattr("airflow_ray.cluster.jobs.worker_python", lambda: claimed)

    def never() -> None:
        print("the callable ran")

    with DAG("x_ray_window_python", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="refused", python_callable=never, ray_conn_id=CONN)
    started = time.monotonic()
    dag_run = run_dag(dag)
    took = time.monotonic() - started
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"refused": "failed"}
    assert "was refused before it ran" in out and f"runs Python {platform.python_version()}" in out, out[
        -3000:
    ]
    assert "does not cross Python minor versions" in out and "the callable ran" not in out
    print(
        f"a job whose cluster Python differs was refused, its task failed, {took:.1f} s after the run began"
    )


def test_a_driver_of_another_ray_gets_a_clear_error(cluster, monkeypatch):
    import ray

    from airflow_ray.hooks.ray import RayHook

    version, cluster = cluster
    if version == ray.__version__:
        pytest.skip("this cluster runs the worker's own Ray: a driver connects (tested elsewhere)")
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_WINDOW_DRIVER",
        json.dumps({"conn_type": "ray", "host": cluster.gcs_address, "password": cluster.token}),
    )
    started = time.monotonic()
    with pytest.raises(AirflowRayError) as raised:
        RayHook("ray_window_driver").get_conn()
    took = time.monotonic() - started
    message = str(raised.value)
    assert "cannot take this Airflow worker as a driver" in message, message
    assert f"Ray: {OLDEST_RAY}" in message and f"Ray: {ray.__version__}" in message
    print(f"a driver of Ray {ray.__version__} was refused by a cluster of Ray {OLDEST_RAY} in {took:.1f} s")
