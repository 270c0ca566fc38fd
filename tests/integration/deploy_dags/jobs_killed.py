"""A deferred Ray task that a user marks failed while it runs: its Ray job must stop."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), params={"marker": "/tmp/marker"})
def jobs_killed():
    @task.ray(ray_conn_id="ray_jobs", deferrable=True)
    def long_work(marker: str) -> str:
        import time

        for second in range(120):
            with open(marker, "a") as out:
                out.write(f"{second}\n")
            time.sleep(1)
        return "finished"

    long_work("{{ params.marker }}")


jobs_killed()
