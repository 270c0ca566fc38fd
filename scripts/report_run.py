"""Print how the latest run of an XGBoost example DAG went: task times, accuracy, the model's place.

``make example`` runs it after ``airflow dags test xgboost_higgs``::

    python scripts/report_run.py xgboost_higgs

It reads the run from Airflow's metadata DB (so it needs the same ``AIRFLOW_HOME``) and the
evaluate task's metrics from the Ray cluster that keeps them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id", nargs="?", default="xgboost_higgs")
    parser.add_argument("--model-task", default="train", help="the task whose result is the model")
    parser.add_argument("--metrics-task", default="evaluate", help="the task that returns accuracy and AUC")
    parser.add_argument(
        "--checkpoint-task", default="checkpoint_model", help="the task that saves the model to S3"
    )
    parser.add_argument("--s3-files", help="the folder a local S3 server keeps its buckets in")
    args = parser.parse_args(argv)

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == args.dag_id)
            .order_by(DagRun.start_date.desc())
            .first()
        )
        if run is None:
            print(f"No run of DAG {args.dag_id!r} in this AIRFLOW_HOME's metadata DB.", file=sys.stderr)
            return 1
        print(f"DAG {run.dag_id}, run {run.run_id}: {run.state}")
        for ti in sorted(
            run.get_task_instances(session=session), key=lambda ti: ti.start_date or run.start_date
        ):
            seconds = (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else None
            print(f"  {ti.task_id:<22} {ti.state!s:<8} {'' if seconds is None else f'{seconds:6.1f} s'}")
        if run.start_date and run.end_date:
            print(f"  {'whole run':<22} {'':<8} {(run.end_date - run.start_date).total_seconds():6.1f} s")
        metrics = _stored_xcom(session, run, args.metrics_task)
        model = _stored_xcom(session, run, args.model_task)
        saved = _stored_xcom(session, run, args.checkpoint_task)

    from airflow_ray.results.resolve import materialize
    from airflow_ray.xcom.reference import RayXComReference, is_reference_json

    if is_reference_json(metrics):
        metrics = materialize(RayXComReference.from_json(metrics))

    if isinstance(metrics, dict) and "accuracy" in metrics:
        print(
            f"Accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f} "
            f"on {metrics['test_rows']:,} held-out rows"
        )
    if is_reference_json(model):
        reference = RayXComReference.from_json(model)
        print(
            f"The model ({model.get('type')}, {model.get('size')}) is kept in the Ray cluster as the "
            f"{reference.producer.describe()}:\n  {reference.token()}\n"
            f"  list it with: airflow-ray pins list --dag {run.dag_id}"
        )
    elif model is not None:
        print(f"The model is the XCom of task {args.model_task!r}: {model!r}")
    for checkpoint in saved or []:
        print(
            f"The model is saved on S3: {checkpoint['uri']} ({checkpoint['size_bytes']:,} bytes, sha256 {checkpoint['sha256'][:16]}...)"
        )
        if args.s3_files:
            bucket, _, key = checkpoint["uri"].removeprefix("s3://").partition("/")
            print(f"  the local S3 server keeps it in {Path(args.s3_files) / bucket / key}")
    return 0 if str(run.state) == "success" else 1


def _stored_xcom(session: Any, run: Any, task_id: str) -> Any:
    """A task's return value as the metadata DB holds it: for a value kept in Ray, its reference."""
    from airflow.models.xcom import XComModel

    row = (
        session.query(XComModel)
        .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, map_index=-1, key="return_value")
        .one_or_none()
    )
    if row is None:
        return None
    return XComModel.deserialize_value(row)


if __name__ == "__main__":
    sys.exit(main())
