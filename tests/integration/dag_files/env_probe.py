"""A Ray task that reports which secrets-bearing environment variables its worker can see."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="env_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def env_probe():
    @task.ray
    def look() -> list[str]:
        import os

        seen = sorted(k for k in os.environ if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AWS_")))
        print(f"secrets visible in the Ray worker: {seen}")
        return seen

    look()


env_probe()
