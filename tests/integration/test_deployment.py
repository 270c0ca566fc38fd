"""Airflow as it is deployed: a scheduler with the LocalExecutor, a triggerer, a DAG processor and
an API server, each a process of its own on a PostgreSQL metadata DB, running DAGs whose Ray tasks
go through the Jobs API.

Slots, crashes and user actions are exercised as a user would: parallelism 1, a SIGKILLed task
process, a task marked failed from the REST API while it is deferred.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.ports import free_port
from tests.integration.airflow_processes import AirflowApiServer, AirflowProcess
from tests.integration.waiting import wait_until, wait_until_still

pytestmark = pytest.mark.integration

DAG_FILES = Path(__file__).parent / "deploy_dags"
COMPONENTS = ("api-server", "scheduler", "triggerer", "dag-processor")


@dataclass
class Deployment:
    home: Path
    api: str
    env: dict[str, str]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.api}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def exists(self, path: str) -> bool:
        """Whether the REST API answers ``GET path`` (it answers 404 for what is not there yet)."""
        try:
            self.call("GET", path)
        except OSError:
            return False
        return True

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        wait_until(lambda: self.exists(f"/api/v2/dags/{dag_id}"), timeout, f"DAG {dag_id} parsed", every=1)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self.wait_for_dag(dag_id)
        run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        listed = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in listed["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise AssertionError(f"run {run_id} of {dag_id} did not end within {timeout} s: {self.logs()}")

    def ray_job(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """The Ray job of a task, as the dashboard its "Ray job" link points at describes it."""
        links = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
        dashboard, _, job_id = links["extra_links"]["Ray job"].partition("/#/jobs/")
        token = (self.home / "ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(
            f"{dashboard}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return dict(json.load(answer))

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file())

    def task_log_tails(self, dag_id: str, run_id: str, task_id: str, size: int = 2000) -> str:
        """The end of each log file of a task (each try's, and the triggerer's), for a failure's report."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(
            f"--- {p.relative_to(folder)}\n{p.read_text(errors='replace')[-size:]}"
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.home / f'{name}.log').read_text(errors='replace')[-2500:]}"
            for name in COMPONENTS
        )


@pytest.fixture(scope="module")
def deploy_dag_files() -> list[Path]:
    """What the deployment's DAG processor parses (a module that uses the deployment may say otherwise)."""
    return sorted(DAG_FILES.glob("*.py"))


@pytest.fixture(scope="module")
def deployment(
    ray_cluster,
    airflow_home: Path,
    postgres_metadata_db: str,
    deploy_dag_files: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    dags = tmp_path_factory.mktemp("deploy-dags")  # the module's own DAGs folder: nothing else parses it
    for dag_file in deploy_dag_files:
        shutil.copy(dag_file, dags / dag_file.name)
    port = free_port()
    env = os.environ.copy()
    env.update(
        {
            # A migrated PostgreSQL metadata DB of this module's own, as Airflow is deployed.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_metadata_db,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # One task slot: a deferred task must give it back for the next one to run.
            "AIRFLOW__CORE__PARALLELISM": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW_CONN_RAY_JOBS": json.dumps({"conn_type": "ray", "extra": {"transport": "jobs"}}),
        }
    )
    api = AirflowApiServer.start_on(env, airflow_home / "api-server.log", port=port, wait=False)
    processes: list[AirflowProcess] = [api]
    deployment = Deployment(airflow_home, api.url, env)
    try:
        for name in COMPONENTS:
            if name != "api-server":
                processes.append(AirflowProcess.start(name, env, airflow_home / f"{name}.log"))
        api.wait_until_healthy(beside=processes[1:])
        yield deployment
    finally:
        for process in processes:
            process.stop()


def test_deferred_tasks_free_the_only_slot(deployment: Deployment):
    run_id = deployment.trigger("jobs_deferred")
    state = deployment.wait_for_run("jobs_deferred", run_id, timeout=300)
    tis = deployment.task_instances("jobs_deferred", run_id)
    assert state == "success", {k: ti["state"] for k, ti in tis.items()}
    for i in range(3):
        log = deployment.task_log("jobs_deferred", run_id, f"wait_{i}")
        assert f"task {i} second 19" in log, log[-3000:]
    # The task page's "Ray job" link, as the UI asks for it, points at the job in the dashboard.
    jobs = [deployment.ray_job("jobs_deferred", run_id, f"wait_{i}") for i in range(3)]
    assert [job["status"] for job in jobs] == ["SUCCEEDED"] * 3, jobs
    # Three 20-second Ray jobs through one worker slot: each was submitted while the one before
    # still ran, which only a deferred task that gave its slot back allows.
    windows = sorted((job["start_time"], job["end_time"]) for job in jobs)
    print(f"three deferred 20 s tasks: Ray job windows (ms) {windows}")
    for (_, earlier_end), (later_start, _) in itertools.pairwise(windows):
        assert later_start < earlier_end, f"a job started only after the one before it ended: {windows}"


def test_a_killed_task_process_reconnects_to_its_ray_work(deployment: Deployment, tmp_path: Path):
    for dag_id in ("reconnect_jobs", "reconnect_driver"):
        marker = tmp_path / f"{dag_id}.marker"
        run_id = deployment.trigger(dag_id, {"marker": str(marker), "seconds": 15})
        stored = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/work/state-store/airflow_ray_call"

        def running(marker: Path = marker, stored: str = stored) -> bool:
            # The callable runs, and the try has stored its Ray work's id: killed now, the retry
            # reconnects to that work.
            return marker.exists() and "start" in marker.read_text() and deployment.exists(stored)

        wait_until(
            running, 180, functools.partial(lambda name: f"{name} never started: {deployment.logs()}", dag_id)
        )
        pid = deployment.task_instances(dag_id, run_id)["work"]["pid"]
        assert pid, deployment.task_instances(dag_id, run_id)["work"]
        os.kill(int(pid), signal.SIGKILL)
        state = deployment.wait_for_run(dag_id, run_id, timeout=180)
        ti = deployment.task_instances(dag_id, run_id)["work"]
        assert state == "success", (ti, deployment.task_log(dag_id, run_id, "work")[-4000:])
        assert ti["try_number"] == 2
        # The callable ran once: the retry followed the Ray work the first try had started.
        assert marker.read_text().count("start") == 1, marker.read_text()
        log = deployment.task_log(dag_id, run_id, "work")
        assert "Reconnecting to existing job" in log, log[-3000:]
        assert "working 14" in log


def start_long_work(deployment: Deployment, dag_id: str, marker: Path) -> str:
    """Trigger a DAG of deploy_dags/jobs_killed.py and wait until its deferred Ray task writes to
    ``marker``; the run's id."""
    run_id = deployment.trigger(dag_id, {"marker": str(marker)})
    wait_until(
        lambda: marker.exists() and len(marker.read_text().split()) >= 3,
        180,
        lambda: f"the Ray task never ran: {deployment.logs()}",
    )
    assert deployment.task_instances(dag_id, run_id)["long_work"]["state"] == "deferred"
    return run_id


def test_marking_a_deferred_task_failed_stops_its_ray_job(deployment: Deployment, tmp_path: Path):
    marker = tmp_path / "killed.marker"
    run_id = start_long_work(deployment, "jobs_killed", marker)
    deployment.call(
        "PATCH",
        f"/api/v2/dags/jobs_killed/dagRuns/{run_id}/taskInstances/long_work",
        {"new_state": "failed"},
    )
    # The triggerer's on_kill stops the job; the callable writes one line a second until then,
    # for 120 s if nothing stops it.
    written = wait_until_still(
        lambda: len(marker.read_text().split()), quiet=5, timeout=90, what="the Ray task's lines"
    )
    assert written < 120, "the Ray task went on to its end after the task was failed"


def test_a_deferred_job_stopped_from_outside_fails_its_try_saying_so_and_the_retry_submits_anew(
    deployment: Deployment, tmp_path: Path
):
    marker = tmp_path / "stopped.marker"
    run_id = start_long_work(deployment, "jobs_stopped", marker)
    # Stopped as the dashboard's Stop button does: POST /api/jobs/<id>/stop.
    links = deployment.call(
        "GET", f"/api/v2/dags/jobs_stopped/dagRuns/{run_id}/taskInstances/long_work/links"
    )
    dashboard, _, job_id = links["extra_links"]["Ray job"].partition("/#/jobs/")
    token = (deployment.home / "ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(
        f"{dashboard}/api/jobs/{job_id}/stop", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer)["stopped"] is True
    state = deployment.wait_for_run("jobs_stopped", run_id, timeout=180)
    ti = deployment.task_instances("jobs_stopped", run_id)["long_work"]
    log = deployment.task_log("jobs_stopped", run_id, "long_work")
    tails = deployment.task_log_tails("jobs_stopped", run_id, "long_work")
    assert state == "success", (ti["state"], ti["try_number"], tails)
    assert ti["try_number"] == 2
    assert f"The Ray job {job_id} of task" in log and "was stopped before it answered" in log, log[-4000:]
    assert "KeyError" not in log, log[-4000:]
    # The retry submitted a job of its own, which ran the callable again.
    assert marker.read_text().split().count("restart") == 1
    value = deployment.call(
        "GET", f"/api/v2/dags/jobs_stopped/dagRuns/{run_id}/taskInstances/long_work/xcomEntries/return_value"
    )["value"]
    assert value == "resubmitted"


def test_a_deferred_task_past_its_execution_timeout_fails_and_its_ray_job_stops(
    deployment: Deployment, tmp_path: Path
):
    marker = tmp_path / "timeout.marker"
    run_id = deployment.trigger("jobs_timeout", {"marker": str(marker)})
    # The timeout is 15 s; the scheduler looks for timed-out triggers every 15 s or so. The
    # callable writes one line a second, for 120 s if nothing stops it.
    state = deployment.wait_for_run("jobs_timeout", run_id, timeout=300)
    assert state == "failed"
    assert deployment.task_instances("jobs_timeout", run_id)["long_work"]["state"] == "failed"
    written = wait_until_still(
        lambda: len(marker.read_text().split()), quiet=5, timeout=90, what="the Ray task's lines"
    )
    assert written < 120, "the Ray task went on to its end after the timeout"
    log = deployment.task_log("jobs_timeout", run_id, "long_work")
    assert "its deferral failed" in log, log[-3000:]


def test_a_second_copy_started_by_a_retry_is_the_only_result_anyone_reads(
    deployment: Deployment, tmp_path: Path
):
    marker = tmp_path / "orphan_retry.marker"
    seconds = 12
    run_id = deployment.trigger("orphan_retry", {"marker": str(marker), "seconds": seconds})
    wait_until(
        lambda: marker.exists() and "tick 1" in marker.read_text(),
        180,
        lambda: f"orphan_retry never started: {deployment.logs()}",
    )
    pid = deployment.task_instances("orphan_retry", run_id)["produce"]["pid"]
    os.kill(int(pid), signal.SIGKILL)
    state = deployment.wait_for_run("orphan_retry", run_id, timeout=240)
    tis = deployment.task_instances("orphan_retry", run_id)
    assert state == "success", (
        {k: ti["state"] for k, ti in tis.items()},
        deployment.task_log("orphan_retry", run_id, "produce")[-4000:],
    )
    assert tis["produce"]["try_number"] == 2
    lines = marker.read_text().splitlines()
    assert lines.count("start 1") == 1 and lines.count("start 2") == 1, lines
    # The first copy was stopped when the second started: none of its ticks came after that.
    assert "tick 1" not in lines[lines.index("start 2") + 2 :], lines
    assert lines.count("tick 1") < 2 * seconds, lines
    xcoms = {
        task_id: deployment.call(
            "GET",
            f"/api/v2/dags/orphan_retry/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        )["value"]
        for task_id in ("read_now", "read_later")
    }
    assert xcoms == {"read_now": "COPY-2", "read_later": "COPY-2"}, xcoms
