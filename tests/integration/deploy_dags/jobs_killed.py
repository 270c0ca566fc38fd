"""Deferred Ray tasks that do not end on their own: one a user marks failed while it runs, one
whose execution_timeout runs out while it is deferred (their Ray jobs must stop), and one whose
Ray job is stopped from outside (its retry submits a new job, which returns after 8 s)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


def long_dag(dag_id: str, timeout: timedelta | None, retries: int = 0) -> None:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"marker": "/tmp/marker"},
    )
    def long_running():
        @task.ray(
            ray_conn_id="ray_jobs",
            deferrable=True,
            execution_timeout=timeout,
            retries=retries,
            retry_delay=timedelta(seconds=1),
        )
        def long_work(marker: str) -> str:
            import os
            import time

            if os.path.exists(marker):  # a later try
                with open(marker, "a") as out:
                    out.write("restart\n")
                # Not at once: a deferred task whose trigger fires before the scheduler has read
                # the executor's event for the process that deferred it is failed by Airflow 3.3's
                # scheduler ("finished with state success, but the task instance's state
                # attribute is running"). Seen once in CI on a busy machine; not airflow-ray's.
                time.sleep(8)
                return "resubmitted"
            for second in range(120):
                with open(marker, "a") as out:
                    out.write(f"{second}\n")
                time.sleep(1)
            return "finished"

        long_work("{{ params.marker }}")

    long_running()


long_dag("jobs_killed", None)
long_dag("jobs_timeout", timedelta(seconds=15))
long_dag("jobs_stopped", None, retries=1)
