"""A remote cluster through its Ray Jobs API: the Airflow worker speaks only HTTP, and the
long step defers, so the worker slot is free while it runs.

It needs a ``ray_jobs`` connection to the cluster's dashboard, with its token::

    export AIRFLOW_CONN_RAY_JOBS='{"conn_type": "ray", "host": "http://head:8265", "password": "<token>"}'

(``{"conn_type": "ray", "extra": {"transport": "jobs"}}`` uses the embedded cluster's.)
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"rows": 100_000, "seconds": 5},
    tags=["ray", "example"],
)
def example_ray_jobs():
    @task.ray(ray_conn_id="ray_jobs", num_cpus=1)
    def generate(rows: int) -> list[float]:
        import random

        values = [random.Random(7).random() for _ in range(int(rows))]
        print(f"generated {len(values)} values in the cluster")
        return values

    @task.ray(ray_conn_id="ray_jobs", deferrable=True)
    def fit(values: list[float], seconds: int) -> dict:
        import time

        for step in range(int(seconds)):  # a long step: the triggerer follows it
            print(f"fitting, step {step}")
            time.sleep(1)
        return {"rows": len(values), "mean": sum(values) / len(values)}

    @task
    def report(model: dict) -> str:
        return f"{model['rows']} rows, mean {model['mean']:.4f}"

    report(fit(generate(rows="{{ params.rows }}"), seconds="{{ params.seconds }}"))


example_ray_jobs()
