"""XGBoost on HIGGS, trained on Ray: the ``xgboost_higgs`` pipeline written with ``@task.ray``.

Same steps, same params, the same model quality; each decorated function is a Ray task. Its
checkpoint is not an asset event (no ``AssetAlias`` outlet), so it does not trigger
``deploy_higgs_model``: only ``xgboost_higgs`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import Param, dag, task
from higgs_data import S3_CONNECTION, data_params, load_higgs, split_higgs
from higgs_model import checkpoint_configured, evaluate_model, train_model

from airflow_ray import RayCheckpointOperator

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import xgboost


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        **data_params(rows=1_000_000),
        "rounds": Param(50, type="integer", minimum=1),
        # 0: chosen from the cluster's CPUs when training starts (higgs_model.share_cpus)
        "actors": Param(0, type="integer", minimum=0),
        "cpus_per_actor": Param(0, type="integer", minimum=0),
    },
    render_template_as_native_obj=True,
    tags=["ray", "xgboost", "example"],
)
def xgboost_higgs_taskflow():
    @task.ray(airflow_conn_ids=[S3_CONNECTION])
    def load(path: str, rows: int, aws_conn_id: str) -> pa.Table:
        return load_higgs(path, rows, aws_conn_id=aws_conn_id)

    @task.ray(multiple_outputs=True)
    def split(table: pa.Table) -> dict[str, pd.DataFrame]:
        return split_higgs(table, test_fraction=0.2, valid_fraction=0.1)

    # num_cpus=0: the xgboost_ray actors reserve the CPUs; this task only drives them.
    @task.ray(num_cpus=0)
    def train(
        train_rows: pd.DataFrame, valid_rows: pd.DataFrame, rounds: int, actors: int, cpus_per_actor: int
    ) -> xgboost.Booster:
        return train_model(train_rows, valid_rows, rounds, num_actors=actors, cpus_per_actor=cpus_per_actor)

    @task.ray
    def evaluate(model: xgboost.Booster, test: pd.DataFrame) -> dict[str, Any]:
        return evaluate_model(model, test)

    parts = split(load("{{ params.path }}", "{{ params.rows }}", "{{ params.aws_conn_id }}"))
    model = train(
        parts["train"],
        parts["valid"],
        "{{ params.rounds }}",
        "{{ params.actors }}",
        "{{ params.cpus_per_actor }}",
    )
    evaluate(model, parts["test"])
    # Save the model to S3 too, when a checkpoint bucket is configured (checked at run time).
    configured = task.short_circuit(checkpoint_configured)()
    model >> configured >> RayCheckpointOperator(task_id="checkpoint_model", outputs=[model])


xgboost_higgs_taskflow()
