"""A Ray task whose Airflow task process is killed while it runs, and whose retry does not
reconnect (``durable=False``): the retry starts a second copy. The first copy must never be the
result that downstream tasks read, however late it ends.

Each copy writes its try number to the marker file (``start N``, then ``tick N`` every half
second) and returns ``COPY-N``; two plain tasks read the result, the second after the first copy
would have ended.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="orphan_retry",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"marker": "/tmp/marker", "seconds": 20},
)
def orphan_retry():
    @task.ray(retries=1, retry_delay=timedelta(seconds=1), durable=False)
    def produce(marker: str, seconds: int, try_number: int) -> str:
        import time

        with open(marker, "a") as out:
            out.write(f"start {try_number}\n")
        for _ in range(int(seconds) * 2):
            with open(marker, "a") as out:
                out.write(f"tick {try_number}\n")
            time.sleep(0.5)
        return f"COPY-{try_number}"

    @task
    def read_now(value: str) -> str:
        return value

    @task
    def read_later(value: str, seconds: int) -> str:
        import time

        time.sleep(int(seconds))  # the first copy would have ended by now
        return value

    value = produce("{{ params.marker }}", "{{ params.seconds }}", "{{ ti.try_number }}")
    read_now(value) >> read_later(value, "{{ params.seconds }}")


orphan_retry()
