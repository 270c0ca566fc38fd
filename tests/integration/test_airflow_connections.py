"""Airflow connections inside Ray tasks (``airflow_conn_ids``), against the local S3 server.

The embedded cluster's workers never see the Airflow worker's ``AIRFLOW_CONN_*`` (its
environment is scrubbed), and a remote cluster never had Airflow's connections: a task names the
ones its callable's hooks use, and only those reach it, only while it runs, in both transports.
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from airflow.sdk import DAG

from airflow_ray.operators.ray import RayPythonOperator
from scripts.local_s3 import Bucket, S3Server
from tests.integration.dagrun import run_dag, task_states, xcom, xcom_row

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1)
ROWS = 20_000
TRANSPORTS = ["driver", "jobs"]


@pytest.fixture(scope="module")
def higgs_on_s3(rclone_s3: S3Server, tmp_path_factory: pytest.TempPathFactory, higgs_dag) -> str:
    """Generated HIGGS rows as the UCI file stores them, in a bucket of the S3 server.

    After ``higgs_dag``: parsing the DAGs folder puts it on ``sys.path``, as for a task, and
    ``higgs_data`` is imported from there."""
    import numpy as np
    from higgs_data import generate_higgs

    table = generate_higgs(ROWS, seed=7)
    path = tmp_path_factory.mktemp("higgs") / "HIGGS.csv.gz"
    np.savetxt(
        path,
        np.column_stack([column.to_numpy() for column in table.columns]),
        delimiter=",",
        fmt="%.18e",
    )
    bucket = Bucket(rclone_s3, rclone_s3.create_bucket("higgs-data"))
    bucket.put("uci/HIGGS.csv.gz", path.read_bytes())
    assert gzip.decompress(bucket.read("uci/HIGGS.csv.gz")).count(b"\n") == ROWS
    return f"s3://{bucket.name}/uci/HIGGS.csv.gz"


@pytest.fixture
def aws_data(rclone_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The AWS connection ``aws_data`` of the S3 server, known to this Airflow worker only; its
    secret key."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DATA", rclone_s3.connection())
    return rclone_s3.secret_key


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, ray_cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """``ray_default`` through the embedded cluster as a driver, or through its Jobs API."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_DEFAULT", json.dumps({"conn_type": "ray", "extra": {"transport": request.param}})
    )
    return str(request.param)


@pytest.fixture(scope="module")
def higgs_dag(airflow_db: Path):
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = airflow_db / "dags"
    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder")
    assert bag.import_errors == {}
    return bag.get_dag("xgboost_higgs")


def all_xcom_rows(dag_run) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return json.dumps([XComModel.deserialize_value(row) for row in rows], default=str)


def jobs_listing() -> str:
    """What ``GET /api/jobs/`` of the embedded cluster's dashboard shows (entrypoints, metadata,
    runtime_envs of every job)."""
    from airflow_ray.cluster.local import EmbeddedCluster

    cluster = EmbeddedCluster.from_config()
    head = cluster.status()
    assert head is not None
    token = cluster.token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{head.dashboard_url}/api/jobs/", headers=headers, timeout=30)
    response.raise_for_status()
    return response.text


def test_read_higgs_reads_s3_through_the_connection_it_is_given(higgs_on_s3: str, aws_data: str):
    """The reader alone, on this worker: the rows the bucket holds, through ``aws_data`` (the
    process has no AWS credentials of its own)."""
    import numpy as np
    from higgs_data import generate_higgs, read_higgs

    read = read_higgs(higgs_on_s3, rows=600, aws_conn_id="aws_data")
    expected = generate_higgs(ROWS, seed=7).slice(0, 600)
    assert np.array_equal(
        np.column_stack([c.to_numpy() for c in read.columns]),
        np.column_stack([c.to_numpy() for c in expected.columns]),
    )


def test_a_missing_s3_object_names_the_path_and_the_connection(higgs_on_s3: str, aws_data: str):
    from higgs_data import read_higgs

    missing = higgs_on_s3.replace("HIGGS.csv.gz", "nope.csv")
    with pytest.raises(FileNotFoundError) as info:
        read_higgs(missing, aws_conn_id="aws_data")
    assert f"{missing} (read through the connection 'aws_data')" in str(info.value)


def test_the_main_job_reads_higgs_from_s3_through_the_connection_it_names(
    higgs_dag, higgs_on_s3: str, aws_data: str, transport: str, capfd
):
    conf = {"path": higgs_on_s3, "rows": 0, "aws_conn_id": "aws_data", "rounds": 3}
    conf |= {"actors": 1, "cpus_per_actor": 1}
    dag_run = run_dag(higgs_dag, conf=conf)

    out = capfd.readouterr()
    assert task_states(dag_run) == {
        **dict.fromkeys(["load", "split", "train", "evaluate", "checkpoint_configured"], "success"),
        "checkpoint_model": "skipped",
    }, out.out[-3000:]
    assert xcom_row(dag_run, "load")["rows"] == ROWS
    assert xcom(dag_run, "evaluate")["test_rows"] == ROWS // 5  # test_fraction 0.2
    # The secret reached the callable's hook, and nothing a user or an operator of the cluster
    # reads: the task logs, the XCom rows, the Jobs API's listing.
    assert aws_data not in out.out + out.err
    assert aws_data not in all_xcom_rows(dag_run)
    if transport == "jobs":
        listing = jobs_listing()
        assert "airflow-ray-xgboost_higgs-" in listing  # this run's jobs are in it
        assert aws_data not in listing


def connections_seen() -> dict:
    """What a callable finds: the AIRFLOW_CONN_ variables, and the aws_data connection's login."""
    from airflow.sdk import BaseHook

    seen: dict = {"variables": sorted(name for name in os.environ if name.startswith("AIRFLOW_CONN_"))}
    try:
        seen["aws_data"] = BaseHook.get_connection("aws_data").login
    except Exception as err:
        seen["aws_data"] = type(err).__name__
    return seen


def print_the_secret() -> None:
    from airflow.sdk import BaseHook

    print("the secret is", BaseHook.get_connection("aws_data").password)


def test_a_task_sees_only_the_connections_it_names_and_only_while_it_runs(
    aws_data: str, rclone_s3: S3Server, transport: str, capfd, caplog
):
    caplog.set_level("INFO")
    with DAG(f"x_conns_{transport}", schedule=None, start_date=START) as dag:
        named = RayPythonOperator(
            task_id="named", python_callable=connections_seen, airflow_conn_ids="{{ 'aws_data' }}, "
        )
        # After it, on the same one-CPU-at-a-time workers: a task that names nothing.
        unnamed = RayPythonOperator(task_id="unnamed", python_callable=connections_seen)
        printed = RayPythonOperator(
            task_id="printed", python_callable=print_the_secret, airflow_conn_ids=["aws_data"]
        )
        named >> unnamed >> printed
    dag_run = run_dag(dag)

    captured = capfd.readouterr()
    out = captured.out + captured.err + caplog.text
    assert task_states(dag_run) == dict.fromkeys(["named", "unnamed", "printed"], "success"), out[-3000:]
    assert xcom(dag_run, "named") == {
        "variables": ["AIRFLOW_CONN_AWS_DATA"],
        "aws_data": rclone_s3.access_key,
    }
    assert xcom(dag_run, "unnamed") == {"variables": [], "aws_data": "AirflowNotFoundException"}
    # A secret the callable prints is masked in the task log, as Airflow masks its own tasks'.
    assert "the secret is" in out, out[-3000:]
    assert aws_data not in out, [line for line in out.splitlines() if aws_data in line]
    assert "the secret is ***" in out


def test_a_connection_that_is_not_defined_fails_the_task_before_it_reaches_ray(ray_cluster, capfd):
    with DAG("x_conns_missing", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="named", python_callable=connections_seen, airflow_conn_ids=["aws_nowhere"])
    dag_run = run_dag(dag)

    out = capfd.readouterr().out
    assert task_states(dag_run) == {"named": "failed"}
    assert "names the Airflow connection 'aws_nowhere' in airflow_conn_ids, and it is not defined" in out
    assert "Submitted Ray task" not in out
