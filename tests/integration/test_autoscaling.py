"""Tasks on a cluster with a real autoscaler (Ray's fake multi-node provider launches its nodes as
processes of this machine): a task no live node can run waits for the node the autoscaler
launches, a request no node type offers fails at once, and ``[ray] schedule_timeout`` bounds the
wait. Both transports.

The head has 1 CPU; the autoscaler (v2, as KubeRay runs it) can launch one ``{CPU: 1, GPU: 1}``
node, one ``{CPU: 1, accel: 1}`` node, and no ``{CPU: 1, TPU: 1}`` node (``max_workers: 0``);
none is up when the module starts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_ray.cluster.driver import DriverTransport
from airflow_ray.cluster.jobs import JobsTransport
from airflow_ray.operators.ray import RayPythonOperator
from tests.integration.autoscaling import AutoscalingHead
from tests.integration.dagrun import run_dag, task_states, xcom

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
DRIVER, JOBS = "ray_autoscaling", "ray_autoscaling_jobs"
NODE_TYPES = {
    "gpu_node": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 1},
    "accel_node": {"resources": {"CPU": 1, "accel": 1}, "min_workers": 0, "max_workers": 1},
    "tpu_node": {"resources": {"CPU": 1, "TPU": 1}, "min_workers": 0, "max_workers": 0},
}
# Seconds a refused request may take: the autoscaler looks at it in its next round (1 s here).
AT_ONCE = 30.0


@pytest.fixture(scope="module")
def head(airflow_db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AutoscalingHead]:
    head = AutoscalingHead.start(tmp_path_factory.mktemp("autoscaling"), NODE_TYPES, dashboard=True)
    os.environ[f"AIRFLOW_CONN_{DRIVER.upper()}"] = json.dumps(head.connection())
    os.environ[f"AIRFLOW_CONN_{JOBS.upper()}"] = json.dumps(head.connection(jobs=True))
    try:
        yield head
    finally:
        del os.environ[f"AIRFLOW_CONN_{DRIVER.upper()}"], os.environ[f"AIRFLOW_CONN_{JOBS.upper()}"]
        head.stop(timeout=10)  # SIGKILL after 5 s: nothing of it needs a clean stop
        assert head.launched() == [], "processes of the autoscaler's nodes outlived the head"


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The wall-clock times at which either transport was asked to submit a task."""
    times: list[float] = []
    for transport in (DriverTransport, JobsTransport):
        original = transport.submit

        def submit(self: Any, spec: Any, _original: Any = original) -> Any:
            times.append(time.time())
            return _original(self, spec)

        monkeypatch.setattr(transport, "submit", submit)
    return times


def started() -> dict[str, Any]:
    import ray

    return {"at": time.time(), "resources": ray.get_runtime_context().get_assigned_resources()}


def _nodes_with(resource: str) -> int:
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get(resource))


def test_a_gpu_task_starts_on_the_node_the_autoscaler_launches(head, submitted, capfd):
    with DAG("t_autoscale_gpu", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="gpu", python_callable=started, num_gpus=1, ray_conn_id=DRIVER)
    dag_run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"gpu": "success"}, out[-3000:]
    result = xcom(dag_run, "gpu")
    assert result["resources"]["GPU"] == 1.0
    waited = result["at"] - submitted[0]
    print(f"\nsubmit to start on a scaled-to-zero GPU node (driver transport): {waited:.1f} s")
    assert _nodes_with("GPU") == 1


def test_requests_no_node_type_offers_fail_at_once(head, submitted, capfd):
    with DAG("t_autoscale_never", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="two_gpus", python_callable=started, num_gpus=2, ray_conn_id=DRIVER)
        RayPythonOperator(
            task_id="tpu", python_callable=started, resources={"TPU": 1}, ray_conn_id=DRIVER
        )  # its node type has max_workers 0
    began = time.monotonic()
    dag_run = run_dag(dag)
    took = time.monotonic() - began
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"two_gpus": "failed", "tpu": "failed"}, out[-3000:]
    assert "no node type its autoscaler can launch, can run a task asking for CPU=1, GPU=2" in out
    assert "no node type its autoscaler can launch, can run a task asking for CPU=1, TPU=1" in out
    assert took < 2 * AT_ONCE, f"the refusals took {took:.0f} s"


def test_schedule_timeout_cancels_a_task_that_waits_for_a_busy_node(head, monkeypatch, capfd):
    import ray

    from airflow_ray.hooks.ray import RayHook

    RayHook(DRIVER).get_conn()  # this process is the driver that occupies the GPU node
    if not _nodes_with("GPU"):
        pytest.skip("needs the GPU node launched by the first test")
    busy = ray.remote(num_gpus=1)(lambda: time.sleep(60)).remote()
    monkeypatch.setenv("AIRFLOW__RAY__SCHEDULE_TIMEOUT", "3")
    try:
        with DAG("t_autoscale_timeout", schedule=None, start_date=START) as dag:
            RayPythonOperator(task_id="waits", python_callable=started, num_gpus=1, ray_conn_id=DRIVER)
        began = time.monotonic()
        dag_run = run_dag(dag)
        took = time.monotonic() - began
    finally:
        ray.cancel(busy, force=True)
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"waits": "failed"}, out[-3000:]
    assert "did not start within the 3 s of [ray] schedule_timeout" in out
    assert "AIRFLOW__RAY__SCHEDULE_TIMEOUT" in out
    assert took < 60, f"the timeout took {took:.0f} s"


def test_through_the_jobs_api_a_task_waits_for_its_node_and_the_impossible_fails(head, submitted, capfd):
    with DAG("t_autoscale_jobs", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="accel", python_callable=started, resources={"accel": 1}, ray_conn_id=JOBS)
        RayPythonOperator(task_id="two_gpus", python_callable=started, num_gpus=2, ray_conn_id=JOBS)
    dag_run = run_dag(dag)
    out = capfd.readouterr().out
    states = task_states(dag_run)
    assert states == {"accel": "success", "two_gpus": "failed"}, out[-3000:]
    result = xcom(dag_run, "accel")
    assert result["resources"]["accel"] == 1.0
    print(
        f"\nsubmit to start on a scaled-to-zero node (Jobs API transport): {result['at'] - submitted[0]:.1f} s"
    )
    assert "no node type its autoscaler can launch, can run a task asking for CPU=1, GPU=2" in out


def test_through_the_jobs_api_schedule_timeout_cancels_the_wait(head, monkeypatch, capfd):
    import ray

    from airflow_ray.hooks.ray import RayHook

    RayHook(DRIVER).get_conn()
    if not _nodes_with("accel"):
        pytest.skip("needs the accel node launched by the previous test")
    busy = ray.remote(resources={"accel": 1})(lambda: time.sleep(60)).remote()
    monkeypatch.setenv("AIRFLOW__RAY__SCHEDULE_TIMEOUT", "3")
    try:
        with DAG("t_autoscale_jobs_timeout", schedule=None, start_date=START) as dag:
            RayPythonOperator(
                task_id="waits", python_callable=started, resources={"accel": 1}, ray_conn_id=JOBS
            )
            RayPythonOperator(
                task_id="waits_deferred",
                python_callable=started,
                resources={"accel": 1},
                ray_conn_id=JOBS,
                deferrable=True,
                poll_interval=0.5,
            )
        dag_run = run_dag(dag)
    finally:
        ray.cancel(busy, force=True)
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"waits": "failed", "waits_deferred": "failed"}, out[-3000:]
    assert out.count("did not start within the 3 s of [ray] schedule_timeout") >= 2, out[-3000:]


# -- autoscaler v1: it launches nodes, but does not say which requests it cannot place --------

V1 = "ray_autoscaling_v1"


@pytest.fixture(scope="module")
def head_v1(airflow_db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AutoscalingHead]:
    head = AutoscalingHead.start(tmp_path_factory.mktemp("autoscaling-v1"), NODE_TYPES, v2=False)
    os.environ[f"AIRFLOW_CONN_{V1.upper()}"] = json.dumps(head.connection())
    try:
        yield head
    finally:
        del os.environ[f"AIRFLOW_CONN_{V1.upper()}"]
        head.stop(timeout=10)  # SIGKILL after 5 s: nothing of it needs a clean stop
        assert head.launched() == [], "processes of the autoscaler's nodes outlived the head"


def test_with_autoscaler_v1_a_task_waits_for_its_node_and_schedule_timeout_ends_a_hopeless_wait(
    head_v1, submitted, monkeypatch, capfd
):
    monkeypatch.setenv("AIRFLOW__RAY__SCHEDULE_TIMEOUT", "20")
    with DAG("t_autoscale_v1", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="gpu", python_callable=started, num_gpus=1, ray_conn_id=V1)
        RayPythonOperator(task_id="tpu", python_callable=started, resources={"TPU": 1}, ray_conn_id=V1)
    dag_run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"gpu": "success", "tpu": "failed"}, out[-3000:]
    result = xcom(dag_run, "gpu")
    print(
        f"\nsubmit to start on a scaled-to-zero GPU node (driver transport, autoscaler v1): {result['at'] - submitted[0]:.1f} s"
    )
    assert "did not start within the 20 s of [ray] schedule_timeout" in out
