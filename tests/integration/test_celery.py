"""Airflow as teams deploy it: the CeleryExecutor with two workers as two hosts, one Ray cluster.

One PostgreSQL server holds the metadata DB, Celery's broker (kombu's SQLAlchemy transport) and
its result backend. The API server, scheduler, DAG processor and triggerer run beside two
``airflow celery worker`` processes, each with an ``AIRFLOW_HOME`` (its own config, DAGs folder,
logs and ``[ray] embedded_dir``) as a host of its own would have. Queues ``host_a`` and ``host_b``
pin tasks to one host; both consume ``shared``, a pool where a retry lands on whichever worker is
alive. Every component reaches one Ray cluster with token auth by address (its GCS for the driver
transport, its dashboard for the Jobs API), from ``AIRFLOW_CONN_*``.

Airflow 3.3 sends a retry to the queue its task instance already has (a cluster policy's
``task_instance_mutation_hook`` runs when a task instance is created or cleared, not when it is
retried), so a task pinned to one host's queue waits for that host to come back. The test that
kills a worker therefore runs its task on ``shared``: whichever worker took the first try is
killed, and the retry must run on the other one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts.ports import free_port
from tests.integration.airflow_processes import AirflowApiServer, AirflowProcess
from tests.integration.postgres import PostgresServer
from tests.integration.test_deployment import Deployment
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = Path(__file__).parent / "celery_dags"
HOSTS = {"host_a": "host_a,shared", "host_b": "host_b,shared"}
SIZE = 200 * 1024 * 1024
RUN_TIMEOUT = 300


@dataclass
class CeleryDeployment(Deployment):
    """The deployment, its components by name, and the home of each worker host."""

    components: dict[str, AirflowProcess] = field(default_factory=dict)
    homes: dict[str, Path] = field(default_factory=dict)
    logs_dir: Path = Path()
    host_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(self, name: str, command: str, env: dict[str, str], *args: str) -> AirflowProcess:
        log = self.logs_dir / f"{name}-{int(time.monotonic() * 1000)}.log"
        process = AirflowProcess.start(command, env, log, *args)
        self.components[name] = process
        return process

    def start_worker(self, host: str) -> AirflowProcess:
        return self.start(
            host,
            "celery",
            self.host_env[host],
            "worker",
            "--queues",
            HOSTS[host],
            "--concurrency",
            "2",
            "--celery-hostname",
            f"{host}@%h",
        )

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{process.log(2500)}" for name, process in self.components.items())

    def tries_on(self, host: str, dag_id: str, run_id: str, task_id: str) -> list[str]:
        """The log files of a task's tries that ``host`` ran (``attempt=N.log``)."""
        folder = self.homes[host] / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(p.name for p in folder.glob("attempt=*.log"))

    def host_log(self, host: str, dag_id: str, run_id: str, task_id: str) -> str:
        folder = self.homes[host] / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.call("GET", path)["value"]

    def run_report(self, dag_id: str, run_id: str) -> str:
        tis = self.task_instances(dag_id, run_id)
        lines = [f"{k}: {ti['state']} try {ti['try_number']} queue {ti['queue']}" for k, ti in tis.items()]
        for task_id in tis:
            for host in self.homes:
                log = self.host_log(host, dag_id, run_id, task_id)
                if log:
                    lines.append(f"--- {task_id} on {host}\n{log[-2500:]}")
            lines.append(f"--- {task_id} (triggerer)\n{self.task_log(dag_id, run_id, task_id)[-1500:]}")
        return "\n".join(lines) + "\n" + self.logs()

    def finish(self, dag_id: str, run_id: str) -> None:
        """Wait for the run to end; fail with every component's and task's log if it did not succeed."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while (state := self.run_state(dag_id, run_id)) not in ("success", "failed"):
            assert time.monotonic() < deadline, (
                f"{dag_id} {run_id} still {state}: {self.run_report(dag_id, run_id)}"
            )
            time.sleep(1)
        assert state == "success", self.run_report(dag_id, run_id)


@pytest.fixture(scope="module")
def celery(
    ray_cluster,
    airflow_home: Path,
    postgres: PostgresServer,
    postgres_metadata_db: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryDeployment]:
    head = ray_cluster.status()
    assert head is not None
    token = ray_cluster.token()
    root = tmp_path_factory.mktemp("celery")
    port = free_port()
    env = os.environ.copy()
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_metadata_db,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            # The broker and result backend: the metadata DB's PostgreSQL (kombu needs the driver named).
            "AIRFLOW__CELERY__BROKER_URL": f"sqla+{postgres_metadata_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{postgres_metadata_db}",
            # Sending a task to the broker on two busy cores can take longer than the 1 s default.
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "30",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Every component signs and checks the same tokens, as one deployment's config does.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # A task whose worker died is failed (and retried) after 20 s without a heartbeat
            # instead of the default 300 s.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # One Ray cluster for every component, by address, its token in the connection.
            "AIRFLOW_CONN_RAY_DEFAULT": json.dumps(
                {"conn_type": "ray", "host": head.gcs_address, "password": token}
            ),
            "AIRFLOW_CONN_RAY_JOBS": json.dumps(
                {"conn_type": "ray", "host": head.dashboard_url, "password": token}
            ),
        }
    )
    # The scheduler's side (API server, scheduler, DAG processor, triggerer): one home, one DAGs folder.
    central_dags = root / "dags"
    central_dags.mkdir()
    for dag_file in DAG_FILES.glob("*.py"):
        shutil.copy(dag_file, central_dags / dag_file.name)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(central_dags)
    logs_dir = root / "components"
    logs_dir.mkdir()
    deployment = CeleryDeployment(airflow_home, f"http://127.0.0.1:{port}", env, logs_dir=logs_dir)
    for host in HOSTS:
        home = root / host
        (home / "dags").mkdir(parents=True)
        for dag_file in DAG_FILES.glob("*.py"):
            shutil.copy(dag_file, home / "dags" / dag_file.name)
        deployment.homes[host] = home
        deployment.host_env[host] = {
            **env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Where an embedded cluster would live on this host: the connection names an
            # address, so nothing may start one.
            "AIRFLOW__RAY__EMBEDDED_DIR": str(home / "ray"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
    declare_broker_queues(env)
    try:
        api = AirflowApiServer.start_on(env, logs_dir / "api-server.log", port=port, wait=False)
        deployment.components["api-server"] = api
        for name in ("scheduler", "dag-processor", "triggerer"):
            deployment.start(name, name, env)
        for host in HOSTS:
            deployment.start_worker(host)
        api.wait_until_healthy(beside=list(deployment.components.values())[1:])
        yield deployment
    finally:
        for process in deployment.components.values():
            process.stop()
    for host, home in deployment.homes.items():
        assert not (home / "ray").exists(), f"{host} started an embedded Ray cluster of its own"


def declare_broker_queues(env: dict[str, str]) -> None:
    """Create the broker's tables and the queues, as a deployment step before any worker starts.

    kombu's SQLAlchemy transport creates its tables and each queue's row on first use, without
    retrying a race: two workers starting at once on a fresh database failed with
    ``UniqueViolation ... pg_class_relname_nsp_index`` (both ran ``CREATE TABLE``), and two
    declaring ``shared`` would both insert its row (only ``OperationalError`` is caught there).
    """
    declare = (
        "from kombu import Exchange, Queue\n"
        "from airflow.providers.celery.executors.celery_executor_utils import app\n"
        "with app.connection_for_write() as connection:\n"
        f"    for name in {sorted({q for queues in HOSTS.values() for q in queues.split(',')})!r}:\n"
        "        Queue(name, Exchange(name), routing_key=name)(connection.default_channel).declare()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", declare], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


def xcom_rows(postgres: PostgresServer, dag_id: str) -> dict[str, int]:
    """The size in bytes of each XCom row of a DAG, as the metadata DB stores it."""
    with postgres.connect("test_celery") as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_id, key, octet_length(value::text) FROM xcom WHERE dag_id = %s", (dag_id,)
        )
        return {f"{task_id}/{key}": size for task_id, key, size in cursor.fetchall()}


def test_a_200_mb_result_made_on_host_a_is_read_by_ray_tasks_on_host_b(
    celery: CeleryDeployment, postgres: PostgresServer
):
    run_id = celery.trigger("celery_handoff")
    celery.finish("celery_handoff", run_id)
    # Each task ran where its queue pinned it.
    for task_id, host in {
        "make": "host_a",
        "measure_driver": "host_b",
        "measure_jobs": "host_b",
        "report": "host_b",
    }.items():
        other = "host_b" if host == "host_a" else "host_a"
        assert celery.tries_on(host, "celery_handoff", run_id, task_id), (task_id, host)
        assert not celery.tries_on(other, "celery_handoff", run_id, task_id), (task_id, other)
    report = celery.xcom("celery_handoff", run_id, "report")
    expected = {"size": SIZE, "sum_head": 7000}
    assert report["driver"] == {**expected, "transport": "driver"}, report
    assert report["jobs"] == {**expected, "transport": "jobs"}, report
    assert report["home"] == str(celery.homes["host_b"])
    # The Jobs API task got the result by its pin key inside the cluster: it never connected
    # through the producer's connection to fetch the value.
    jobs_log = celery.host_log("host_b", "celery_handoff", run_id, "measure_jobs")
    assert "connection 'ray_default'" not in jobs_log, jobs_log[-3000:]
    rows = xcom_rows(postgres, "celery_handoff")
    assert {"make/return_value", "measure_driver/return_value", "report/return_value"} <= set(rows), rows
    assert max(rows.values()) < 1024, rows
    print(f"XCom rows (bytes): {rows}")


def test_a_deferred_task_completes_across_a_triggerer_restart(celery: CeleryDeployment, tmp_path: Path):
    marker = tmp_path / "deferred.marker"
    run_id = celery.trigger("celery_deferred", {"marker": str(marker), "seconds": 25})

    def deferred_and_working() -> bool:
        state = celery.task_instances("celery_deferred", run_id)["wait"]["state"]
        return state == "deferred" and marker.exists() and len(marker.read_text().split()) >= 3

    wait_until(deferred_and_working, 180, lambda: celery.run_report("celery_deferred", run_id))
    celery.components["triggerer"].stop()
    written_while_down = len(marker.read_text().split())
    celery.start("triggerer", "triggerer", celery.env)
    celery.finish("celery_deferred", run_id)
    assert celery.xcom("celery_deferred", run_id, "read") == "waited"
    lines = marker.read_text().split()
    assert lines == [str(i) for i in range(25)], lines  # one run of the callable, start to end
    assert written_while_down < 25, "the Ray job had ended before the triggerer stopped"
    assert celery.task_instances("celery_deferred", run_id)["wait"]["try_number"] == 1
    ran = [host for host in celery.homes if celery.tries_on(host, "celery_deferred", run_id, "wait")]
    print(f"the deferred task's try ran on {ran} (submitted, then resumed after the trigger fired)")


@pytest.mark.parametrize("transport", ["driver", "jobs"])
def test_a_retry_after_its_worker_was_killed_runs_on_the_other_host_and_reconnects(
    celery: CeleryDeployment, tmp_path: Path, transport: str
):
    marker = tmp_path / "killed.marker"
    dag_id = f"celery_killed_worker_{transport}"
    run_id = celery.trigger(dag_id, {"marker": str(marker), "seconds": 40})
    stored = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/work/state-store/airflow_ray_call"

    def first_try_host() -> str | None:
        # The callable runs and the try has stored its Ray work's id: killed now, the retry
        # reconnects to that work.
        if not (marker.exists() and "start" in marker.read_text() and celery.exists(stored)):
            return None
        hosts = [host for host in celery.homes if celery.tries_on(host, dag_id, run_id, "work")]
        return hosts[0] if len(hosts) == 1 else None

    killed = wait_until(first_try_host, 180, lambda: celery.run_report(dag_id, run_id))
    survivor = next(host for host in celery.homes if host != killed)
    celery.components[killed].kill()
    try:
        celery.finish(dag_id, run_id)
    finally:
        celery.start_worker(killed)
    ti = celery.task_instances(dag_id, run_id)["work"]
    assert ti["try_number"] == 2, ti
    assert celery.tries_on(killed, dag_id, run_id, "work") == ["attempt=1.log"]
    assert celery.tries_on(survivor, dag_id, run_id, "work") == ["attempt=2.log"]
    retry_log = celery.host_log(survivor, dag_id, run_id, "work")
    # The callable ran once: the retry followed the Ray work the first try had started.
    assert marker.read_text().count("start") == 1, marker.read_text()
    assert celery.xcom(dag_id, run_id, "read")["starts"] == 1
    assert "Reconnecting to existing job" in retry_log, retry_log[-3000:]
    assert "working 39" in retry_log, retry_log[-3000:]
    print(f"{transport}: first try on {killed} (killed), retry on {survivor}")
