"""Three deferrable Ray tasks of one run, each 20 seconds long, through the Jobs API."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

SECONDS = 20


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def jobs_deferred():
    @task.ray(ray_conn_id="ray_jobs", deferrable=True, num_cpus=0.5)
    def wait(i: int) -> int:
        import time

        for second in range(SECONDS):
            print(f"task {i} second {second}", flush=True)
            time.sleep(1)
        return i

    for i in range(3):
        wait.override(task_id=f"wait_{i}")(i)


jobs_deferred()
