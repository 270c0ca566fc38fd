"""Deferred Ray tasks that do not end on their own: one a user marks failed while it runs, one
whose execution_timeout runs out while it is deferred. Their Ray jobs must stop."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


def long_dag(dag_id: str, timeout: timedelta | None) -> None:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"marker": "/tmp/marker"},
    )
    def long_running():
        @task.ray(ray_conn_id="ray_jobs", deferrable=True, execution_timeout=timeout)
        def long_work(marker: str) -> str:
            import time

            for second in range(120):
                with open(marker, "a") as out:
                    out.write(f"{second}\n")
                time.sleep(1)
            return "finished"

        long_work("{{ params.marker }}")

    long_running()


long_dag("jobs_killed", None)
long_dag("jobs_timeout", timedelta(seconds=15))
