"""DAGs of the CeleryExecutor deployment test (tests/integration/test_celery.py): two workers as
two hosts, whose queues ``host_a`` and ``host_b`` pin tasks to them, and a queue ``shared`` that
both consume (a pool of workers, where a retry may land on either).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SIZE = 200 * 1024 * 1024


@dag(schedule=None, start_date=START)
def celery_handoff():
    """A 200 MB result made on host_a, consumed by Ray tasks on host_b through both transports."""

    @task.ray(queue="host_a")
    def make() -> bytes:
        return b"\x07" * SIZE

    @task.ray(queue="host_b")
    def measure_driver(blob: bytes) -> dict:
        return {"size": len(blob), "sum_head": sum(blob[:1000]), "transport": "driver"}

    @task.ray(queue="host_b", ray_conn_id="ray_jobs", deferrable=True)
    def measure_jobs(blob: bytes) -> dict:
        return {"size": len(blob), "sum_head": sum(blob[:1000]), "transport": "jobs"}

    @task(queue="host_b")
    def report(driver: dict, jobs: dict) -> dict:
        import os

        return {"driver": driver, "jobs": jobs, "home": os.environ["AIRFLOW_HOME"]}

    blob = make()
    report(measure_driver(blob), measure_jobs(blob))


def killed_worker_dag(dag_id: str, conn_id: str) -> None:
    """A Ray task on the shared queue whose worker is killed while it runs; the retry reconnects."""

    @dag(dag_id=dag_id, schedule=None, start_date=START, params={"marker": "/tmp/marker", "seconds": 40})
    def killed_worker():
        @task.ray(queue="shared", ray_conn_id=conn_id, retries=1, retry_delay=timedelta(seconds=1))
        def work(marker: str, seconds: int) -> dict:
            import time
            from pathlib import Path

            with open(marker, "a") as out:
                out.write("start\n")
            for second in range(int(seconds)):
                print(f"working {second}", flush=True)
                time.sleep(1)
            return {"starts": Path(marker).read_text().count("start")}

        @task(queue="shared")
        def read(result: dict) -> dict:
            import os

            return {**result, "home": os.environ["AIRFLOW_HOME"]}

        read(work("{{ params.marker }}", "{{ params.seconds }}"))

    killed_worker()


@dag(schedule=None, start_date=START, params={"marker": "/tmp/marker", "seconds": 25})
def celery_deferred():
    """A deferred Ray task (Jobs API) whose trigger outlives a triggerer restart; it resumes on
    whichever worker of the shared queue takes it, and host_b reads its result."""

    @task.ray(queue="shared", ray_conn_id="ray_jobs", deferrable=True)
    def wait(marker: str, seconds: int) -> str:
        import time

        for second in range(int(seconds)):
            with open(marker, "a") as out:
                out.write(f"{second}\n")
            time.sleep(1)
        return "waited"

    @task(queue="host_b")
    def read(value: str) -> str:
        return value

    read(wait("{{ params.marker }}", "{{ params.seconds }}"))


celery_handoff()
celery_deferred()
killed_worker_dag("celery_killed_worker_driver", "ray_default")
killed_worker_dag("celery_killed_worker_jobs", "ray_jobs")
