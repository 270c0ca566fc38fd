"""Checkpoints that Airflow sees: asset events through an ``AssetAlias`` (the manifest as extra),
the ``deploy_higgs_model`` DAG they schedule, run by a real scheduler, and OpenLineage datasets."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, AssetAlias, task

from airflow_ray import RayCheckpointOperator
from scripts.local_s3 import Bucket, S3Server
from tests.integration.conftest import use_checkpoint_bucket
from tests.integration.dagrun import run_dag, task_states, xcom_row
from tests.integration.test_deployment import Deployment, deployment
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
# Small enough for a two-core machine: the point is the checkpoint and what follows it.
TINY = {"rows": 5_000, "rounds": 2, "actors": 1, "cpus_per_actor": 1}

__all__ = ["deployment"]  # the real deployment's fixture, used here with a checkpoint bucket


def asset_events(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The asset events a run's tasks emitted: source task, asset URI, extra, aliases."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        ).all()
        return [
            {
                "task_id": event.source_task_id,
                "uri": event.asset.uri,
                "extra": event.extra,
                "aliases": sorted(alias.name for alias in event.source_aliases),
            }
            for event in events
        ]


def test_each_checkpoint_is_an_asset_event_of_the_alias_with_its_manifest(ray_cluster, checkpoints: Bucket):
    with DAG("x_assets", schedule=None, start_date=START) as dag:

        @task.ray(checkpoint=True, outlets=[AssetAlias("x_assets_model")])
        def model() -> list[int]:
            return list(range(100))

        @task.ray(multiple_outputs=True)
        def parts() -> dict:
            return {"train": list(range(50)), "test": list(range(10))}

        split = parts()
        RayCheckpointOperator(
            task_id="checkpoint",
            outputs=[split["train"], split["test"]],
            outlets=[AssetAlias("x_assets_parts")],
        )
        model()
    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)

    events = {(e["task_id"], e["uri"]): e for e in asset_events("x_assets", dag_run.run_id)}
    base = f"s3://{checkpoints.name}/pipelines/x_assets/{dag_run.run_id}"
    assert sorted(events) == [
        ("checkpoint", f"{base}/parts/-1/test/value.pkl"),
        ("checkpoint", f"{base}/parts/-1/train/value.pkl"),
        ("model", f"{base}/model/-1/return_value/value.pkl"),
    ]
    for (task_id, uri), event in events.items():
        assert event["aliases"] == ["x_assets_model" if task_id == "model" else "x_assets_parts"]
        extra = event["extra"]
        data = checkpoints.read(uri.split(f"{checkpoints.name}/", 1)[1])
        assert extra["format"] == "cloudpickle"
        assert extra["size_bytes"] == len(data)
        assert extra["sha256"] == hashlib.sha256(data).hexdigest()
        assert extra["uri"] == uri
        assert extra["producer"]["task_id"] == uri.split("/")[-4]
        assert extra["producer"]["run_id"] == dag_run.run_id
    # What the operator returns and what its events say agree.
    assert {w["uri"]: w["sha256"] for w in xcom_row(dag_run, "checkpoint")} == {
        uri: event["extra"]["sha256"] for (task_id, uri), event in events.items() if task_id == "checkpoint"
    }


def _higgs_file(folder: Path, rows: int) -> Path:
    """A HIGGS-format file (no header; label, then 28 features) of generated rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
    from higgs_data import generate_higgs
    from pyarrow import csv

    path = folder / "HIGGS.csv"
    csv.write_csv(generate_higgs(rows, seed=42), path, csv.WriteOptions(include_header=False))
    return path


def test_openlineage_sees_the_higgs_file_read_and_the_model_written(
    ray_cluster, airflow_db, checkpoints: Bucket, tmp_path: Path
):
    higgs = _higgs_file(tmp_path, TINY["rows"])
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "airflow_ray_tests",
    }
    conf = {**TINY, "path": str(higgs)}
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "xgboost_higgs", "-c", json.dumps(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert events_file.exists(), (done.stdout + done.stderr)[-5000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    load = complete["xgboost_higgs.load"]
    assert [(d["namespace"], d["name"]) for d in load["inputs"]] == [("file", str(higgs))]
    saved = complete["xgboost_higgs.checkpoint_model"]
    [output] = saved["outputs"]
    assert output["namespace"] == f"s3://{checkpoints.name}"
    assert output["name"].startswith("pipelines/xgboost_higgs/") and output["name"].endswith(
        "/train/-1/return_value/value.pkl"
    )


@pytest.fixture(scope="module")
def model_bucket(rclone_s3: S3Server) -> Iterator[Bucket]:
    """A checkpoint bucket in this process's environment while the module's deployment starts,
    so that its scheduler, workers and DAG processor inherit it."""
    bucket = Bucket(rclone_s3, rclone_s3.create_bucket(f"models-{uuid.uuid4().hex[:12]}"))
    with pytest.MonkeyPatch.context() as patch:
        use_checkpoint_bucket(patch, bucket)
        yield bucket


@pytest.fixture(scope="module")
def deploy_dag_files() -> list[Path]:
    """The deployment parses the repository's DAGs: xgboost_higgs, deploy_higgs_model and their helpers."""
    return sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def checkpointing_deployment(model_bucket: Bucket, deployment: Deployment) -> Deployment:
    """The real deployment (scheduler, DAG processor, API server, triggerer) with that bucket."""
    assert deployment.env["AIRFLOW__RAY__CHECKPOINT_BUCKET"] == model_bucket.name
    return deployment


def test_a_checkpointed_model_is_deployed_by_the_dag_scheduled_on_its_asset(
    checkpointing_deployment: Deployment, model_bucket: Bucket, tmp_path: Path
):
    deployment = checkpointing_deployment
    deployment.wait_for_dag("deploy_higgs_model")
    run_id = deployment.trigger("xgboost_higgs", TINY)
    state = deployment.wait_for_run("xgboost_higgs", run_id, timeout=300)
    tis = deployment.task_instances("xgboost_higgs", run_id)
    assert state == "success", {k: ti["state"] for k, ti in tis.items()}

    # The checkpoint's asset event schedules a run of deploy_higgs_model.
    [run] = wait_until(
        lambda: deployment.call("GET", "/api/v2/dags/deploy_higgs_model/dagRuns")["dag_runs"],
        300,
        lambda: f"deploy_higgs_model was not scheduled: {deployment.logs()}",
        every=1,
    )
    assert run["run_type"] == "asset_triggered"
    state = deployment.wait_for_run("deploy_higgs_model", run["dag_run_id"], timeout=180)
    log = deployment.task_log("deploy_higgs_model", run["dag_run_id"], "deploy")
    assert state == "success", log[-4000:]

    [written] = deployment.call(
        "GET",
        f"/api/v2/dags/xgboost_higgs/dagRuns/{run_id}/taskInstances/checkpoint_model/xcomEntries/return_value",
    )["value"]
    folder = deployment.home / "models" / "higgs"
    deployed = json.loads((folder / "model.json").read_text())
    assert deployed["checkpoint"] == written["uri"]
    assert deployed["checkpoint_sha256"] == written["sha256"]
    assert deployed["sha256"] == hashlib.sha256((folder / "model.ubj").read_bytes()).hexdigest()
    assert deployed["scored"]["rows"] == 10_000 and 0.5 < deployed["scored"]["accuracy"] <= 1
    assert "sha256 verified" in log
    print(f"deployed {deployed}")
