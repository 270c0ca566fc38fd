"""XGBoost on HIGGS, trained on Ray: load -> split -> train -> evaluate, with classic operators.

The notebook steps (:mod:`higgs_data`, :mod:`higgs_model`) each run as a Ray task. Results stay
in Ray's object store between tasks when ``RayXComBackend`` is the XCom backend. Without a
``path`` the rows are generated (HIGGS-shaped, with a known signal); with one, the real file is
read: ``airflow dags test xgboost_higgs -c '{"path": "s3://bucket/HIGGS.csv.gz", "rows": 0}'``.
With a checkpoint bucket configured (``[ray] checkpoint_bucket``), the trained model is also
saved to S3, from the cluster, so that a rerun of ``evaluate`` works after the cluster lost it,
and announced as an asset event of the alias ``xgboost_higgs_model``, on which the
``deploy_higgs_model`` DAG is scheduled.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, AssetAlias, Param
from higgs_data import S3_CONNECTION, data_params, load_higgs, split_higgs
from higgs_model import checkpoint_configured, evaluate_model, train_model

from airflow_ray import RayCheckpointOperator, RayPythonOperator

with DAG(
    dag_id="xgboost_higgs",
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
        lineage_inputs="{{ params.path }}",  # the file read, for OpenLineage (none when generated)
    )
    split = RayPythonOperator(
        task_id="split",
        python_callable=split_higgs,
        op_kwargs={"table": load.output, "test_fraction": 0.2, "valid_fraction": 0.1},
        multiple_outputs=True,
    )
    train = RayPythonOperator(
        task_id="train",
        python_callable=train_model,
        op_kwargs={
            "train": split.output["train"],
            "valid": split.output["valid"],
            "rounds": "{{ params.rounds }}",
            "num_actors": "{{ params.actors }}",
            "cpus_per_actor": "{{ params.cpus_per_actor }}",
        },
        # The xgboost_ray actors reserve the CPUs; this task only drives them. Holding a CPU
        # here could leave too few for the actors, and they would wait for it forever.
        num_cpus=0,
    )
    evaluate = RayPythonOperator(
        task_id="evaluate",
        python_callable=evaluate_model,
        op_kwargs={"model": train.output, "test": split.output["test"]},
    )
    # Save the model to S3 too, when a checkpoint bucket is configured (checked at run time).
    configured = ShortCircuitOperator(task_id="checkpoint_configured", python_callable=checkpoint_configured)
    # Each checkpoint of the model is an asset event of this alias: deploy_higgs_model runs on it.
    checkpoint_model = RayCheckpointOperator(
        task_id="checkpoint_model", outputs=[train.output], outlets=[AssetAlias("xgboost_higgs_model")]
    )
    train >> configured >> checkpoint_model
