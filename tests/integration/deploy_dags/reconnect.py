"""A Ray task whose Airflow task process is killed while it runs: the retry must reconnect.

The callable counts its starts in a marker file (the DAG param ``marker``) and then works for a
while; its result says how many starts it saw. One DAG per transport.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


def reconnect_dag(dag_id: str, conn_id: str) -> None:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"marker": "/tmp/marker", "seconds": 15},
    )
    def reconnect():
        @task.ray(ray_conn_id=conn_id, retries=1, retry_delay=timedelta(seconds=1))
        def work(marker: str, seconds: int) -> dict:
            import time
            from pathlib import Path

            with open(marker, "a") as out:
                out.write("start\n")
            for second in range(int(seconds)):
                print(f"working {second}", flush=True)
                time.sleep(1)
            return {"starts": Path(marker).read_text().count("start"), "done": True}

        work("{{ params.marker }}", "{{ params.seconds }}")

    reconnect()


reconnect_dag("reconnect_jobs", "ray_jobs")
reconnect_dag("reconnect_driver", "ray_default")
