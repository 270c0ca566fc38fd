"""Ray jobs that end without an answer, through the Jobs API of the embedded cluster.

A job can end before its entrypoint answers: stopped from outside (``ray job stop``, the
dashboard), an entrypoint whose ``python`` has no Ray, a runtime_env that cannot be built. Each
must fail its task within seconds, saying what happened, and a retry must submit a new job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_ray import RayPythonOperator
from tests.integration.dagrun import run_dag, task_states, xcom

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")


@pytest.fixture(scope="module")
def jobs_conn(ray_cluster) -> Iterator[str]:
    os.environ["AIRFLOW_CONN_RAY_JOBS_ENDS"] = json.dumps(
        {"conn_type": "ray", "extra": {"transport": "jobs"}}
    )
    yield "ray_jobs_ends"
    del os.environ["AIRFLOW_CONN_RAY_JOBS_ENDS"]


def _jobs_api(cluster, method: str, path: str) -> Any:
    """A call of the embedded cluster's Jobs API, as the dashboard makes it."""
    import urllib.request

    head = cluster.status()
    request = urllib.request.Request(
        f"{head.dashboard_url}{path}", method=method, headers={"Authorization": f"Bearer {cluster.token()}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def _stop_when_started(cluster, marker: Path, stopped: list[str], deadline: float) -> None:
    """Stop the job of the first try once its callable runs, as the dashboard's Stop does."""
    while time.monotonic() < deadline:
        if marker.exists() and len(marker.read_text().split()) >= 2:
            for job in _jobs_api(cluster, "GET", "/api/jobs/"):
                if job.get("status") == "RUNNING" and "x_job_stopped" in str(job.get("submission_id")):
                    _jobs_api(cluster, "POST", f"/api/jobs/{job['submission_id']}/stop")
                    stopped.append(str(job["submission_id"]))
                    return
        time.sleep(0.5)


def slow_once(marker: str) -> str:
    """The first try works for two minutes; a later one returns at once."""
    import os
    import time

    if os.path.exists(marker):
        return "second job"
    for second in range(120):
        with open(marker, "a") as out:
            out.write(f"{second}\n")
        time.sleep(1)
    return "first job"


def test_a_deferred_job_stopped_from_outside_fails_in_seconds_and_the_retry_submits_anew(
    jobs_conn, ray_cluster, tmp_path: Path, capfd
):
    marker = tmp_path / "marker"
    with DAG("x_job_stopped", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="work",
            python_callable=slow_once,
            op_args=[str(marker)],
            ray_conn_id=jobs_conn,
            deferrable=True,
            poll_interval=0.5,
            retries=1,
            retry_delay=timedelta(seconds=0),
        )
    stopped: list[str] = []
    started = time.monotonic()
    stopper = threading.Thread(
        target=_stop_when_started, args=(ray_cluster, marker, stopped, started + 120), daemon=True
    )
    stopper.start()
    dag_run = run_dag(dag)
    stopper.join(timeout=5)
    out = capfd.readouterr().out
    assert stopped, f"the job never ran: {out[-3000:]}"
    # The first try did not wait for its callable's two minutes: it ended with the job.
    assert len(marker.read_text().split()) < 60
    assert task_states(dag_run) == {"work": "success"}, out[-4000:]
    assert xcom(dag_run, "work") == "second job"
    assert "KeyError" not in out
    assert f"The Ray job {stopped[0]} of task x_job_stopped.work" in out
    assert "was stopped before it answered (Job was intentionally stopped" in out, out[-4000:]
    assert "a retry submits a new job" in out


def test_an_entrypoint_whose_python_has_no_ray_names_the_interpreter_and_the_fix(
    ray_cluster, tmp_path: Path, capfd
):
    # An interpreter without Ray, as the cluster's PATH finds one when Ray's environment is not on it.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = bare / "bin" / "python"
    os.environ["AIRFLOW_CONN_RAY_BARE_PYTHON"] = json.dumps(
        {"conn_type": "ray", "extra": {"transport": "jobs", "python": str(python)}}
    )
    try:
        with DAG("x_job_no_ray", schedule=None, start_date=START) as dag:
            RayPythonOperator(
                task_id="work", python_callable=lambda: 1, ray_conn_id="ray_bare_python", deferrable=True
            )
        dag_run = run_dag(dag)
    finally:
        del os.environ["AIRFLOW_CONN_RAY_BARE_PYTHON"]
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"work": "failed"}
    assert f"the interpreter that ran its entrypoint, {python} (Python 3.11" in out, out[-4000:]
    assert "cannot import Ray (No module named 'ray')" in out
    assert "first on PATH" in out and '"python": "/path/to/ray-env/bin/python"' in out
    assert "KeyError" not in out


def test_a_runtime_env_that_cannot_be_built_fails_the_task_with_the_error(jobs_conn, capfd):
    package = "airflow-ray-no-such-package"
    runtime_env = {"pip": {"packages": [package], "pip_install_options": ["--no-index"]}}
    with DAG("x_job_bad_env", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="work",
            python_callable=lambda: 1,
            ray_conn_id=jobs_conn,
            runtime_env=runtime_env,
            deferrable=True,
            poll_interval=0.5,
        )
    dag_run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"work": "failed"}
    assert "KeyError" not in out
    # Ray tries to build it three times before it gives up; meanwhile the log says what it waits for.
    assert "or for Ray to set up its runtime_env" in out
    assert "failed outside the callable: RuntimeEnvSetupError" in out, out[-4000:]
    assert f"No matching distribution found for {package}" in out
