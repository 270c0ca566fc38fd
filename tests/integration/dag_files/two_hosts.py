"""Results made on one host's embedded cluster, consumed on another host: one with a checkpoint
(restored there), one without (an error that says where it is and what to configure)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="two_hosts", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def two_hosts():
    @task.ray(checkpoint=True)
    def produce_checkpointed() -> list:
        return ["made on host a", "x" * 200_000]  # kept in the cluster, not inlined

    @task.ray
    def produce_plain() -> list:
        return ["made on host a", "y" * 200_000]

    @task.ray
    def consume_checkpointed(made: list) -> str:
        print(f"the consumer read: {made[0]}, {len(made[1])} characters")
        return made[0]

    @task.ray
    def consume_plain(made: list) -> str:
        print(f"the consumer read: {made[0]}")
        return made[0]

    consume_checkpointed(produce_checkpointed())
    consume_plain(produce_plain())


hosts = two_hosts()

if __name__ == "__main__":  # host a: the producers only; host b runs each consumer with `airflow tasks test`
    import sys

    day = pendulum.parse(sys.argv[1])
    hosts.test(run_after=day, logical_date=day, mark_success_pattern="consume_.*")
