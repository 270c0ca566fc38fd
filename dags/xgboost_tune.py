"""Tuning XGBoost on HIGGS with Ray Tune: load -> split -> tune -> evaluate the best model.

Ray Tune samples ``samples`` configurations of max_depth, min_child_weight, subsample and eta;
each trial trains with xgboost_ray and an ASHA scheduler stops the poor ones early. The best
model is loaded from its checkpoint and evaluated on the held-out rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Param
from higgs_data import S3_CONNECTION, data_params, load_higgs, split_higgs
from higgs_model import evaluate_model, tune_model

from airflow_ray import RayPythonOperator

if TYPE_CHECKING:
    import pandas as pd
    import xgboost


def evaluate_best(model: xgboost.Booster, config: dict[str, Any], test: pd.DataFrame) -> dict[str, Any]:
    """Evaluate the best model of the search and log its configuration."""
    metrics = evaluate_model(model, test)
    print(f"Best configuration {config}: test accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f}")
    return {"config": config, **metrics}


with DAG(
    dag_id="xgboost_tune",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        **data_params(rows=200_000),
        "rounds": Param(20, type="integer", minimum=1, description="boosting rounds of a complete trial"),
        "samples": Param(8, type="integer", minimum=1, description="configurations Tune tries"),
        "actors": Param(1, type="integer", minimum=1, description="xgboost_ray actors per trial"),
        "cpus_per_actor": Param(1, type="integer", minimum=1),
    },
    render_template_as_native_obj=True,
    tags=["ray", "xgboost", "tune", "example"],
) as dag:
    load = RayPythonOperator(
        task_id="load",
        python_callable=load_higgs,
        op_kwargs={
            "path": "{{ params.path }}",
            "rows": "{{ params.rows }}",
            "aws_conn_id": "{{ params.aws_conn_id }}",
        },
        airflow_conn_ids=[S3_CONNECTION],
    )
    split = RayPythonOperator(
        task_id="split",
        python_callable=split_higgs,
        op_kwargs={"table": load.output, "test_fraction": 0.2, "valid_fraction": 0.1},
        multiple_outputs=True,
    )
    tune = RayPythonOperator(
        task_id="tune",
        python_callable=tune_model,
        op_kwargs={
            "train": split.output["train"],
            "valid": split.output["valid"],
            "rounds": "{{ params.rounds }}",
            "samples": "{{ params.samples }}",
            "num_actors": "{{ params.actors }}",
            "cpus_per_actor": "{{ params.cpus_per_actor }}",
        },
        multiple_outputs=True,
        # The trials and their xgboost_ray actors reserve the CPUs; this task only drives Tune.
        num_cpus=0,
    )
    RayPythonOperator(
        task_id="evaluate",
        python_callable=evaluate_best,
        op_kwargs={
            "model": tune.output["model"],
            "config": tune.output["config"],
            "test": split.output["test"],
        },
    )
