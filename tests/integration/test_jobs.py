"""The Jobs API transport in real Airflow runs, against the embedded cluster's dashboard.

The Airflow worker (this process runs every task of ``dag.test()``) speaks only HTTP to the
cluster; the job's entrypoint is the driver, inside the cluster.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import numpy as np
import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_ray import RayPythonOperator
from airflow_ray.exceptions import RayConnectionError
from tests.integration.dagrun import run_dag, task_states, with_peak_growth, xcom, xcom_row
from tests.integration.dashboard_log import dashboard_lines, dashboard_logs
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def jobs_conn(ray_cluster) -> Iterator[str]:
    """A ``ray`` connection to the embedded cluster through its Jobs API (for this module only)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "AIRFLOW_CONN_RAY_JOBS", json.dumps({"conn_type": "ray", "extra": {"transport": "jobs"}})
        )
        yield "ray_jobs"


def make_array(mb: int) -> np.ndarray:
    return np.arange(mb * MB // 8, dtype=np.float64)


def fingerprint(array: np.ndarray) -> list:
    return [float(array[0]), float(array[-1]), int(array.size), bool(array.flags.writeable)]


def handover_dag(dag_id: str, mb: int, conn_id: str) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(
            task_id="produce", python_callable=make_array, op_args=[mb], ray_conn_id=conn_id
        )

        @task.ray(ray_conn_id=conn_id)
        def in_ray(array: np.ndarray) -> list:
            print(f"got {array.nbytes // MB} MB in the cluster")
            return fingerprint(array)

        @task
        def in_airflow(summary: list) -> list:
            return summary

        in_airflow(in_ray(produced.output))
    return dag


def test_results_are_handed_over_inside_the_cluster_and_the_worker_stays_flat(jobs_conn, capfd):
    # The same DAG with 1 MB first: what the first run of a process loads is not the data's.
    assert set(task_states(run_dag(handover_dag("x_jobs_warm", 1, jobs_conn))).values()) == {"success"}
    dag = handover_dag("x_jobs_handover", 200, jobs_conn)
    dag_run, grown_bytes = with_peak_growth(lambda: run_dag(dag))
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    row = xcom_row(dag_run, "produce")
    assert len(json.dumps(row)) < 1024
    assert row["size_bytes"] == 200 * MB and row["conn_id"] == "ray_jobs"
    expected = [0.0, float(200 * MB // 8 - 1), 200 * MB // 8, False]  # read-only: zero-copy
    assert xcom(dag_run, "in_airflow") == expected
    grown = grown_bytes / MB
    assert grown < 100, f"the worker grew by {grown:.0f} MB while 200 MB passed"
    out = capfd.readouterr().out
    assert "got 200 MB in the cluster" in out
    assert "1 input(s) handed over inside the cluster" in out


def test_a_plain_consumer_gets_a_small_value_a_checkpointed_one_and_a_clear_error_otherwise(
    jobs_conn, checkpoints, capfd
):
    with DAG("x_jobs_plain", schedule=None, start_date=START) as dag:
        small = RayPythonOperator(
            task_id="small", python_callable=lambda: {"accuracy": 0.79}, ray_conn_id=jobs_conn
        )
        large = RayPythonOperator(
            task_id="large", python_callable=make_array, op_args=[4], ray_conn_id=jobs_conn
        )

        @task
        def read_small(metrics: dict) -> float:
            return metrics["accuracy"]

        saved = RayPythonOperator(
            task_id="saved", python_callable=make_array, op_args=[4], ray_conn_id=jobs_conn, checkpoint=True
        )

        @task
        def read_large(array: np.ndarray) -> int:
            return int(array.size)

        read_small(small.output)
        read_large(large.output)
        read_large.override(task_id="read_saved")(saved.output)

    dag_run = run_dag(dag)
    states = task_states(dag_run)
    assert states["read_small"] == "success" and xcom(dag_run, "read_small") == 0.79
    # Too large for the Jobs API, but checkpointed: read from S3 (written there from the cluster).
    assert states["read_saved"] == "success" and xcom(dag_run, "read_saved") == 4 * MB // 8
    assert xcom_row(dag_run, "saved")["checkpoint"]["bucket"] == checkpoints.name
    assert states["read_large"] == "failed"
    out = capfd.readouterr().out
    assert "more than the 1048576 bytes ([ray] jobs_inline_max_bytes)" in out
    assert "Consume it in a Ray task" in out and "checkpoint=True" in out


def test_a_checkpointed_result_that_a_mapped_task_expands_over_comes_back_and_is_released(
    jobs_conn, checkpoints, monkeypatch
):
    # A mapped task needs the list itself: the result, pinned only for its checkpoint, is
    # fetched and released by one Ray job (two before).
    from airflow_ray.cluster.jobs import JobsTransport
    from airflow_ray.hooks.ray import RayHook

    asked: list[str] = []
    original = JobsTransport._ask

    def ask(self, command, arguments):
        asked.append(command)
        return original(self, command, arguments)

    monkeypatch.setattr(JobsTransport, "_ask", ask)
    with DAG("x_jobs_expand", schedule=None, start_date=START) as dag:

        @task.ray(ray_conn_id=jobs_conn, checkpoint=True)
        def factors() -> list:
            return [1, 2, 3]

        @task
        def doubled(factor: int) -> int:
            return 2 * factor

        doubled.expand(factor=factors())

    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    assert [xcom(dag_run, "doubled", map_index=i) for i in range(3)] == [2, 4, 6]
    assert asked == ["fetch"], asked
    assert JobsTransport(RayHook(jobs_conn)).list_pins("x_jobs_expand") == []


class DataError(Exception):
    pass


def test_a_failing_callable_fails_the_task_with_its_remote_traceback(jobs_conn, capfd):
    def validate(rows: int) -> None:
        print("validating", rows)
        raise DataError(f"bad rows {rows}")

    with DAG("x_jobs_fail", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="validate", python_callable=validate, op_args=[13], ray_conn_id=jobs_conn)
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"validate": "failed"}
    out = capfd.readouterr().out
    assert "validating 13" in out
    assert "in validate" in out and "DataError: bad rows 13" in out
    # Ray's own start-up lines are not the task's output.
    assert "Connecting to existing Ray cluster" not in out


def test_output_that_looks_like_an_answer_is_shown_as_output_not_taken_as_one(jobs_conn, capfd):
    from airflow_ray._remote.job_entry import record

    imitation = record("end", reply={"state": "failed", "error": None})

    def prints_an_answer_of_its_own() -> int:
        print(imitation)  # as a callable that prints another job's log would
        print("\\ and a line that starts with a backslash")
        time.sleep(1)  # the Airflow side reads the log meanwhile
        return 42

    with DAG("x_jobs_imitation", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="imitates", python_callable=prints_an_answer_of_its_own, ray_conn_id=jobs_conn
        )
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"imitates": "success"}
    assert xcom(dag_run, "imitates") == 42
    out = capfd.readouterr().out
    assert imitation in out and "\\ and a line that starts with a backslash" in out
    assert "\\\\ and a line" not in out


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "triggerer"])
def test_a_long_output_is_followed_over_the_logs_tail_each_line_once(
    jobs_conn, ray_cluster, deferrable: bool, capfd
):
    def chatty() -> str:
        for i in range(300):
            print(f"progress {i} of 300 " + "." * 1000, flush=True)
            time.sleep(0.01)
        return "done"

    since = dashboard_logs(ray_cluster)
    with DAG(f"x_jobs_tail_{deferrable}", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="chatty",
            python_callable=chatty,
            ray_conn_id=jobs_conn,
            deferrable=deferrable,
            poll_interval=0.25,
        )
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"chatty": "success"}
    assert xcom(dag_run, "chatty") == "done"
    out = capfd.readouterr().out
    shown = [int(n) for n in re.findall(r"progress (\d+) of 300 \.{1000}", out)]
    assert shown == list(range(300))  # each line once, in order
    lines = dashboard_lines(ray_cluster, since)
    (job,) = {m for line in lines for m in re.findall(r"'GET /api/jobs/(airflow-ray-[^/ ]+)/logs ", line)}

    def tail_closed() -> list[str]:
        # The dashboard logs the tail's request once its handler has returned: nothing of it is
        # left open on the dashboard (a log stream of its state API would stay open for good).
        return [
            line for line in dashboard_lines(ray_cluster, since) if f"'GET /api/jobs/{job}/logs/tail " in line
        ]

    # The log was followed over the Jobs API's tail, which ended with the job ...
    wait_until(tail_closed, 60, "the dashboard to close the job's log tail", every=1.0)
    # ... and the whole log (300 KB by the end) was read at each poll only until it passed
    # TAIL_AFTER (64 KB): once past it, and at most once more when the job had ended.
    sizes = [
        int(size)
        for line in lines
        for size in re.findall(rf"'GET /api/jobs/{job}/logs HTTP/1.1' 200 (\d+) bytes", line)
    ]
    assert sizes and len([size for size in sizes if size > 64 * 1024]) <= 2, sizes


def test_deferrable_tasks_run_in_the_triggerer_and_return_references(jobs_conn, capfd):
    def slow(n: int) -> np.ndarray:
        for i in range(3):
            print(f"step {i} of task {n}", flush=True)
            time.sleep(0.5)
        return make_array(1) * n

    with DAG("x_jobs_defer", schedule=None, start_date=START) as dag:
        first = RayPythonOperator(
            task_id="first", python_callable=slow, op_args=[1], ray_conn_id=jobs_conn, deferrable=True
        )

        @task.ray(ray_conn_id=jobs_conn, deferrable=True, poll_interval=0.5)
        def total(array: np.ndarray) -> float:
            return float(array.sum())

        total(first.output)
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"first": "success", "total": "success"}
    assert xcom_row(dag_run, "first")["size_bytes"] == MB
    assert xcom(dag_run, "total") == float(np.arange(MB // 8).sum())
    out = capfd.readouterr().out
    assert "step 2 of task 1" in out


def test_a_bad_token_and_an_unreachable_dashboard_fail_in_seconds_naming_the_connection(
    jobs_conn, monkeypatch
):
    from airflow_ray.cluster.local import EmbeddedCluster
    from airflow_ray.hooks.ray import RayHook

    head = EmbeddedCluster.from_config().status()
    assert head is not None
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_BADTOKEN",
        json.dumps({"conn_type": "ray", "host": head.dashboard_url, "password": "not-the-token"}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_NOBODY", json.dumps({"conn_type": "ray", "host": "http://127.0.0.1:1"})
    )
    for conn_id, message in [
        ("ray_badtoken", "refused our token"),
        ("ray_nobody", "Cannot reach the Ray Jobs API"),
    ]:
        started = time.monotonic()
        with pytest.raises(RayConnectionError, match=message) as failed:
            _ = RayHook(conn_id).get_transport().client
        # From the first answer (or refusal), not after the client's 30 s read timeout.
        assert time.monotonic() - started < 25
        assert repr(conn_id) in str(failed.value)
        assert "not-the-token" not in str(failed.value)


# -- a cluster that has nothing but ray[default] --------------------------------------------


@pytest.fixture(scope="module")
def ray_only_conn(airflow_db, tmp_path_factory: pytest.TempPathFactory):
    """A cluster started from a virtual environment with only ``ray[default]``, reached through
    its dashboard with its token, as a production cluster would be."""
    from scripts.ray_only_cluster import RayOnlyCluster

    cluster = RayOnlyCluster.start(tmp_path_factory.mktemp("ray-only"))
    os.environ["AIRFLOW_CONN_RAY_REMOTE"] = json.dumps(
        {"conn_type": "ray", "host": cluster.dashboard_url, "password": cluster.token}
    )
    try:
        yield "ray_remote"
    finally:
        del os.environ["AIRFLOW_CONN_RAY_REMOTE"]
        cluster.stop()


def test_the_cluster_needs_nothing_but_ray(ray_only_conn, capfd):
    import subprocess

    from scripts.ray_only_cluster import VENV

    for module in ("airflow_ray", "airflow"):
        probe = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", f"import {module}"],
            capture_output=True,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
        )
        assert probe.returncode != 0, f"{module} is installed in the ray-only environment"

    # The cluster has no numpy: the values are the standard library's.
    def produce(mb: int) -> bytes:
        return bytes(range(256)) * (mb * MB // 256)

    def validate(blob: bytes) -> None:
        raise DataError(f"bad blob of {len(blob)} bytes")

    with DAG("x_jobs_ray_only", schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(
            task_id="produce", python_callable=produce, op_args=[50], ray_conn_id=ray_only_conn
        )

        @task.ray(ray_conn_id=ray_only_conn)
        def in_ray(blob: bytes) -> list:
            return [len(blob), blob[0], blob[-1]]

        @task
        def in_airflow(summary: list) -> list:
            return summary

        in_airflow(in_ray(produced.output))
        RayPythonOperator(
            task_id="validate", python_callable=validate, op_args=[produced.output], ray_conn_id=ray_only_conn
        )
    dag_run = run_dag(dag)
    states = task_states(dag_run)
    assert {k: states[k] for k in ("produce", "in_ray", "in_airflow")} == dict.fromkeys(
        ("produce", "in_ray", "in_airflow"), "success"
    ), states
    assert xcom(dag_run, "in_airflow") == [50 * MB, 0, 255]
    row = xcom_row(dag_run, "produce")
    assert row["conn_id"] == "ray_remote" and row["size_bytes"] == 50 * MB
    assert states["validate"] == "failed"
    out = capfd.readouterr().out
    assert f"DataError: bad blob of {50 * MB} bytes" in out


def test_a_checkpoint_the_cluster_cannot_write_fails_before_the_callable_runs(
    ray_only_conn, checkpoints, capfd, tmp_path
):
    marker = tmp_path / "ran"

    def produce(marker: str) -> bytes:
        with open(marker, "w") as out:
            out.write("the callable ran")
        return b"x" * 1000

    with DAG("x_jobs_no_botocore", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="produce",
            python_callable=produce,
            op_args=[str(marker)],
            ray_conn_id=ray_only_conn,
            checkpoint=True,
        )
    started = time.monotonic()
    dag_run = run_dag(dag)
    elapsed = time.monotonic() - started
    assert task_states(dag_run) == {"produce": "failed"}
    assert not marker.exists()
    out = capfd.readouterr().out
    assert "Checkpointing the result to S3 (checkpoint=True) needs the Python package 'botocore'" in out
    assert "pip install boto3" in out
    print(f"the missing botocore failed the task in {elapsed:.1f} s (run included)")


def test_the_example_dag_runs_through_the_jobs_api(jobs_conn, capfd):
    from airflow.dag_processing.dagbag import BundleDagBag

    from tests.conftest import REPO

    folder = REPO / "dags"
    bag = BundleDagBag(
        dag_folder=str(folder / "example_ray_jobs.py"), bundle_path=folder, bundle_name="dags-folder"
    )
    dag = bag.dags["example_ray_jobs"]
    dag_run = run_dag(dag, conf={"rows": 1000, "seconds": 2})
    assert task_states(dag_run) == {"generate": "success", "fit": "success", "report": "success"}
    assert xcom(dag_run, "report").startswith("1000 rows, mean ")
    assert "fitting, step 1" in capfd.readouterr().out


WORKER_PROBE = """
import json, psutil
from airflow_ray.cluster.local import EmbeddedCluster
from airflow_ray.cluster.transport import TaskSpec, run_in_cluster
from airflow_ray.hooks.ray import RayHook

head = EmbeddedCluster.from_config().status()
value = run_in_cluster(RayHook("ray_jobs").get_transport(), TaskSpec(lambda: 6 * 7, (), {}, name="probe"))
import ray
ports = {head.gcs_port, head.client_port}
print(json.dumps({
    "value": value,
    "driver": ray.is_initialized(),
    "cluster_connections": [c.raddr.port for c in psutil.Process().net_connections() if c.raddr and c.raddr.port in ports],
}))
"""


def test_the_worker_is_not_a_ray_driver(jobs_conn):
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report == {"value": 42, "driver": False, "cluster_connections": []}


@pytest.mark.parametrize("transport", ["driver", "jobs"])
def test_a_tasks_runtime_env_is_merged_over_the_connections(ray_cluster, transport: str, capfd, caplog):
    caplog.set_level("INFO")
    conn_id = f"ray_env_{transport}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {
            "conn_type": "ray",
            "extra": {
                "transport": transport,
                "runtime_env": {"env_vars": {"FROM_CONN": "conn", "BOTH": "conn"}},
            },
        }
    )

    def read_env() -> list:
        return [os.environ.get(name) for name in ("FROM_CONN", "BOTH", "FROM_TASK")]

    try:
        with DAG(f"x_env_{transport}", schedule=None, start_date=START) as dag:
            RayPythonOperator(
                task_id="read",
                python_callable=read_env,
                ray_conn_id=conn_id,
                runtime_env={"env_vars": {"BOTH": "task", "FROM_TASK": "task"}},
            )
        dag_run = run_dag(dag)
    finally:
        del os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"]
    assert task_states(dag_run) == {"read": "success"}
    assert xcom(dag_run, "read") == ["conn", "task", "task"]
    out = capfd.readouterr().out + caplog.text
    assert f"runtime_env of Ray task x_env_{transport}.read replaces the connection's env_vars.BOTH" in out
