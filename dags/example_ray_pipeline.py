"""A small pipeline of Ray tasks: generate -> summarize (TaskFlow) -> report (classic operator).

Each step is a plain Python function run on Ray with the resources it asks for. DAG params are
templated into the tasks: try ``airflow dags test example_ray_pipeline -c '{"rows": 5000}'``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_ray import RayPythonOperator


def report(summary: dict, label: str) -> str:
    """Runs on Ray as a classic RayPythonOperator."""
    line = f"{label}: {summary['rows']} rows, mean {summary['mean']:.4f}, max {summary['max']:.4f}"
    print(line)
    return line


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"rows": 1000, "seed": 7, "cpus": 1},
    tags=["ray", "example"],
)
def example_ray_pipeline():
    @task.ray(num_cpus="{{ params.cpus }}", show_return_value_in_logs=False)
    def generate(rows: int, seed: int) -> list[float]:
        import random

        rng = random.Random(int(seed))
        values = [rng.random() for _ in range(int(rows))]
        print(f"generated {len(values)} values with seed {seed}")
        return values

    @task.ray
    def summarize(values: list[float]) -> dict:
        summary = {"rows": len(values), "mean": sum(values) / len(values), "max": max(values)}
        print(f"summary: {summary}")
        return summary

    summary = summarize(generate(rows="{{ params.rows }}", seed="{{ params.seed }}"))
    RayPythonOperator(
        task_id="report",
        python_callable=report,
        op_kwargs={"summary": summary, "label": "run {{ run_id }}"},
    )


example_ray_pipeline()
