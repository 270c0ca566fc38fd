"""A Ray task whose Airflow process is killed while it runs, with nothing to reconnect to it
(``durable=False``, no retries): the owner must stop it after ``[ray] orphan_timeout``."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="orphan_alone",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"marker": "/tmp/marker", "seconds": 60},
)
def orphan_alone():
    @task.ray(durable=False)
    def work(marker: str, seconds: int) -> str:
        import time

        for tick in range(int(seconds) * 2):
            with open(marker, "a") as out:
                out.write(f"tick {tick}\n")
            time.sleep(0.5)
        return "ran to its end"

    work("{{ params.marker }}", "{{ params.seconds }}")


orphan_alone()
