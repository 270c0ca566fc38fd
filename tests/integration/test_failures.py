"""Ray tasks that fail in the ways users' tasks do, in real Airflow runs on the embedded cluster:
a worker process that dies, a result that cannot be stored, an exception class of the user's own."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_ray.operators.ray import RayPythonOperator
from tests.integration.dagrun import run_dag, task_states
from tests.integration.waiting import wait_until, wait_until_still

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
FAILURES: list[BaseException] = []


def record_failure(context: Any) -> None:
    FAILURES.append(context["exception"])


def die_after_printing(marker: str) -> None:
    import os

    with open(marker, "a") as out:
        out.write("start\n")
    print("last words before the crash", flush=True)
    time.sleep(0.05)
    os._exit(1)


def test_a_crashed_worker_fails_the_task_once_with_its_last_output(ray_cluster, capfd, tmp_path: Path):
    marker = tmp_path / "starts"
    with DAG("t_crash", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="crash", python_callable=die_after_printing, op_args=[str(marker)])
    started = time.monotonic()
    dag_run = run_dag(dag)
    elapsed = time.monotonic() - started
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"crash": "failed"}
    # Ray ran it once: retries are Airflow's (Ray's default would have started it 4 times).
    assert marker.read_text().count("start") == 1, marker.read_text()
    assert "last words before the crash" in out
    assert "failed outside the callable" in out
    print(f"a crashed Ray worker failed its Airflow task in {elapsed:.1f} s")


def returns_a_lock() -> dict[str, Any]:
    print("computed the result")
    return {"rows": 3, "lock": threading.Lock()}


def consume(value: Any) -> Any:
    return value


def test_a_result_that_cannot_be_stored_fails_its_own_task(ray_cluster, capfd):
    FAILURES.clear()
    with DAG("t_unstorable", schedule=None, start_date=START) as dag:
        producer = RayPythonOperator(
            task_id="producer", python_callable=returns_a_lock, on_failure_callback=record_failure
        )
        consumer = RayPythonOperator(task_id="consumer", python_callable=consume, op_args=[producer.output])
        producer >> consumer
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"producer": "failed", "consumer": "upstream_failed"}
    (error,) = FAILURES
    assert isinstance(error, TypeError), repr(error)
    assert "dict that cannot be stored in Ray" in str(error) and "_thread.lock" in str(error)
    assert "computed the result" in capfd.readouterr().out


class QuotaError(Exception):
    """A user's exception whose ``__init__`` takes other arguments than its message."""

    def __init__(self, table: str, limit: int) -> None:
        super().__init__(f"table {table} is over its quota of {limit} rows")
        self.table = table
        self.limit = limit


def over_quota() -> None:
    raise QuotaError("events", 1000)


def test_an_exception_class_of_the_dag_file_is_raised_as_itself(ray_cluster, capfd):
    FAILURES.clear()
    with DAG("t_custom_error", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="quota", python_callable=over_quota, on_failure_callback=record_failure)
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"quota": "failed"}
    (error,) = FAILURES
    assert type(error) is QuotaError, repr(error)
    assert (error.table, error.limit) == ("events", 1000)
    assert str(error) == "table events is over its quota of 1000 rows"
    assert "in over_quota" in capfd.readouterr().out  # the remote traceback is in the log


def test_a_ray_task_nobody_follows_any_more_is_stopped_after_the_orphan_timeout(ray_cluster, tmp_path: Path):
    import json
    import os
    import shutil
    import signal
    import subprocess
    import sys

    dags = tmp_path / "dags"  # this test's own DAGs folder: nothing else parses it
    dags.mkdir()
    shutil.copy(Path(__file__).parent / "dag_files" / "orphan.py", dags / "orphan.py")
    marker = tmp_path / "ticks"
    env = {**os.environ, "AIRFLOW__RAY__ORPHAN_TIMEOUT": "4", "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    conf = json.dumps({"marker": str(marker), "seconds": 60})
    log = tmp_path / "dags-test.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", "orphan_alone", "--conf", conf],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ticking() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return marker.exists() and marker.read_text().count("tick") >= 4

        wait_until(ticking, 180, lambda: log.read_text()[-3000:], every=0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the Airflow side dies; nothing will retry
        process.wait(timeout=30)
    at_kill = marker.read_text().count("tick")
    # Left alone it ticks for 60 s (120 ticks); the owner stops it once nobody has followed it for
    # the orphan timeout (4 s): it ticks on for a while after the kill, then stops, long before its end.
    stopped_at = wait_until_still(
        lambda: marker.read_text().count("tick"), quiet=5, timeout=45, what="the orphaned Ray task's ticks"
    )
    assert at_kill < stopped_at < 120, (at_kill, stopped_at)
    assert "tick 119" not in marker.read_text()
    print(f"the orphan ticked {stopped_at - at_kill} times after its Airflow process was killed")


def hog_memory(marker: str) -> int:
    chunks = []
    with open(marker, "a") as out:
        out.write("start\n")
    for step in range(64):  # up to 8 GB, in 128 MB steps
        chunks.append(bytearray(128 * 1024 * 1024))
        print(f"holding {(step + 1) * 128} MB", flush=True)
        time.sleep(0.1)
    return len(chunks)


def test_a_task_killed_for_memory_fails_at_once_saying_what_to_do(ray_cluster, tmp_path: Path, capfd):
    import json
    import os

    import psutil

    from tests.integration.clusters import NodeCluster

    memory = psutil.virtual_memory()
    # Ray's memory monitor kills a worker when the node's memory in use passes this fraction:
    # here about 3 GB above what is in use now (the hog holds up to 8 GB).
    threshold = min((memory.total - memory.available + 3 * 2**30) / memory.total, 0.95)
    cluster = NodeCluster.start(
        tmp_path / "cluster",
        head_cpus=2,
        env={"RAY_memory_usage_threshold": f"{threshold:.3f}", "RAY_memory_monitor_refresh_ms": "100"},
    )
    os.environ["AIRFLOW_CONN_RAY_SMALL"] = json.dumps(cluster.connection())
    marker = tmp_path / "starts"
    try:
        with DAG("t_oom", schedule=None, start_date=START) as dag:
            RayPythonOperator(
                task_id="hog", python_callable=hog_memory, op_args=[str(marker)], ray_conn_id="ray_small"
            )
        started = time.monotonic()
        dag_run = run_dag(dag)
        elapsed = time.monotonic() - started
    finally:
        del os.environ["AIRFLOW_CONN_RAY_SMALL"]
        cluster.stop()
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"hog": "failed"}
    assert marker.read_text().count("start") == 1  # not restarted by Ray
    assert "memory monitor killed it" in out and "memory=<bytes>" in out, out[-3000:]
    assert "holding 128 MB" in out  # what it printed before it was killed reached the log
    assert "holding 8192 MB" not in out
    print(f"the out-of-memory kill failed the Airflow task in {elapsed:.1f} s (run included)")
