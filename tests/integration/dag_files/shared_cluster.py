"""A producer and a consumer with a gate between them, which the test opens: staging and
production run this DAG with the same run id on one Ray cluster, in the order that once let
staging's consumer read production's result."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="shared_cluster",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"deployment": "?", "gate": "/tmp/gate"},
)
def shared_cluster():
    @task.ray
    def produce(deployment: str) -> list:
        # Large enough to stay in Ray (not inlined into the XCom row) with default settings; a
        # list, not a dict, which would be split into XComs per key and its label inlined.
        return [deployment, "x" * 200_000]

    @task
    def gate(path: str) -> None:
        """A plain Airflow task: waits (at most 300 s) until the test opens the gate."""
        import os
        import time

        open(f"{path}.waiting", "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nobody opened the gate {path}")
            time.sleep(0.2)

    @task.ray
    def consume(made: list) -> str:
        print(f"the consumer read the result made by {made[0]}")
        return made[0]

    made = produce("{{ params.deployment }}")
    made >> gate("{{ params.gate }}") >> consume(made)


shared = shared_cluster()

if __name__ == "__main__":  # as a scheduler runs a day's run: its run id is the same in every deployment
    import json
    import sys

    day = pendulum.parse(sys.argv[1])
    shared.test(run_after=day, logical_date=day, run_conf=json.loads(sys.argv[2]))
