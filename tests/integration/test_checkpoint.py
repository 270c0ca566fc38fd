"""Checkpoints on a real S3 server over HTTP: formats, restore after the cluster lost a result,
integrity, idempotent keys, retention, and bad settings."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG, task

from airflow_ray import cli
from airflow_ray._remote.checkpoint_io import read_checkpoint, write_checkpoint
from airflow_ray._remote.s3io import S3Access
from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
from airflow_ray.exceptions import RayCheckpointError, RayCheckpointIntegrityError, RayConfigurationError
from airflow_ray.operators.checkpoint import RayCheckpointOperator
from scripts.local_s3 import REGION, Bucket
from scripts.ports import free_port
from tests.integration.dagrun import run_dag, task_states, xcom, xcom_row

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def producer(task_id: str, run_id: str = "run1", dag_id: str = "x_ckpt", key: str = "return_value") -> dict:
    return {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": -1, "key": key}


VALUES = {
    "arrow": lambda: pa.table(
        {"x": np.arange(200_000), "y": np.linspace(0, 1, 200_000), "s": [f"r{i % 7}" for i in range(200_000)]}
    ),
    "pandas": lambda: pd.DataFrame(
        {"a": np.arange(50_000, dtype=np.int32), "b": np.random.default_rng(1).normal(size=50_000)},
        index=pd.RangeIndex(10, 50_010, name="id"),
    ),
    "numpy": lambda: np.random.default_rng(0).random((300, 1000)),
    "numpy_fortran": lambda: np.asfortranarray(np.arange(24, dtype=np.int16).reshape(4, 6)),
    "pickle": lambda: {"counts": Counter("abracadabra"), "params": [1, 2.5, "x"]},
}


def same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, np.ndarray):
        return (
            np.array_equal(expected, actual)
            and expected.dtype == actual.dtype
            and expected.flags.f_contiguous == actual.flags.f_contiguous
        )
    if isinstance(expected, (pa.Table, pd.DataFrame)):
        return bool(expected.equals(actual))
    return bool(expected == actual)


def open_without_airflow_ray(fmt: str, data: bytes) -> Any:
    """What a data scientist does with the downloaded file."""
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    return pickle.loads(data)


@pytest.mark.parametrize("server", ["rclone", "moto"])
def test_each_format_round_trips_and_opens_without_airflow_ray(server: str, request: pytest.FixtureRequest):
    s3 = request.getfixturevalue(f"{server}_s3")
    bucket = Bucket(s3, s3.create_bucket(f"formats-{uuid.uuid4().hex[:8]}"))
    access = S3Access(s3.endpoint, REGION, s3.access_key, s3.secret_key)
    expected_format = {"arrow": "parquet", "pandas": "parquet", "numpy": "npy", "numpy_fortran": "npy"}
    for name, make in VALUES.items():
        value = make()
        prefix = f"p/{name}/"
        manifest = write_checkpoint(value, access, bucket.name, prefix, producer(name))
        assert manifest["format"] == expected_format.get(name, "cloudpickle"), name
        assert bucket.keys(prefix) == [prefix + "manifest.json", prefix + manifest["object"]]
        data = bucket.read(prefix + manifest["object"])
        assert len(data) == manifest["size_bytes"]
        assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
        assert json.loads(bucket.read(prefix + "manifest.json")) == manifest
        assert manifest["producer"] == producer(name)
        opened = open_without_airflow_ray(manifest["format"], data)
        assert same(value, opened.to_pandas() if name == "pandas" else opened), name
        restored = read_checkpoint(access, bucket.name, prefix, allow_pickle=True)
        assert type(restored) is type(value) and same(value, restored), name


def test_large_array_goes_up_in_parts_and_back(rclone_s3):
    bucket = Bucket(rclone_s3, rclone_s3.create_bucket(f"large-{uuid.uuid4().hex[:8]}"))
    access = S3Access(rclone_s3.endpoint, REGION, rclone_s3.access_key, rclone_s3.secret_key)
    value = np.random.default_rng(3).random(7 * 1024 * 1024)  # 56 MB: four parts
    manifest = write_checkpoint(value, access, bucket.name, "big/", producer("big"))
    assert manifest["size_bytes"] > 56 * 1024 * 1024
    assert np.array_equal(read_checkpoint(access, bucket.name, "big/", allow_pickle=False), value)


# -- in Airflow runs -----------------------------------------------------------------------


def make_array(mb: int) -> np.ndarray:
    return np.arange(mb * 1024 * 1024 // 8, dtype=np.float64)


def fingerprint(array: Any) -> list:
    return [float(array[0]), float(array[-1]), int(array.size), float(array.sum())]


def kill_owner() -> None:
    """What losing the owner actor does: every result it held is gone from the cluster."""
    import ray

    from airflow_ray.cluster.owner import find_owner, owner_name
    from airflow_ray.hooks.ray import RayHook

    hook = RayHook()
    hook.get_conn()
    owner = find_owner(owner_name(), hook.settings.namespace)
    assert owner is not None
    ray.kill(owner)


def restart_cluster() -> None:
    """Stop the embedded cluster and start a new one: nothing of the old one survives."""
    import ray

    from airflow_ray.cluster.local import EmbeddedCluster

    cluster = EmbeddedCluster.from_config()
    before = cluster.status()
    ray.shutdown()  # this process is a driver of the old cluster
    cluster.stop()
    after = cluster.ensure_running()
    assert before is not None and after.pid != before.pid


@pytest.mark.parametrize("lose", [kill_owner, restart_cluster], ids=["owner_killed", "cluster_restarted"])
def test_checkpointed_results_are_restored_for_ray_and_plain_consumers(
    ray_cluster, checkpoints: Bucket, capfd, caplog, lose
):
    with DAG(f"x_ckpt_{lose.__name__}", schedule=None, start_date=START) as dag:

        @task.ray(checkpoint=True)
        def produce() -> np.ndarray:
            return make_array(4)

        @task.ray(checkpoint=True, checkpoint_prefix="tables", multiple_outputs=True)
        def produce_many() -> dict:
            return {"table": pa.table({"v": np.arange(1000)}), "settings": {"rounds": 3}}

        @task
        def lose_everything() -> None:
            lose()

        @task.ray
        def in_ray(array: np.ndarray, table: pa.Table, settings: dict) -> list:
            return [*fingerprint(array), table.num_rows, settings["rounds"]]

        @task
        def in_airflow(array: np.ndarray, table: pa.Table, settings: dict) -> list:
            return [*fingerprint(array), table.num_rows, settings["rounds"]]

        array, many = produce(), produce_many()
        gone = lose_everything()
        [array, many] >> gone
        gone >> in_ray(array, many["table"], many["settings"])
        gone >> in_airflow(array, many["table"], many["settings"])
    caplog.set_level("INFO")
    dag_run = run_dag(dag)
    out = capfd.readouterr().out + caplog.text
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    expected = [*fingerprint(make_array(4)), 1000, 3]
    assert xcom(dag_run, "in_ray") == expected
    assert xcom(dag_run, "in_airflow") == expected

    run_folder = f"{dag.dag_id}/{dag_run.run_id}"
    row = xcom_row(dag_run, "produce")
    assert row["checkpoint"]["uri"] == (
        f"s3://{checkpoints.name}/pipelines/{run_folder}/produce/-1/return_value/value.npy"
    )
    assert row["checkpoint"]["conn_id"] == "aws_ckpt"
    assert checkpoints.keys(f"tables/{run_folder}/") == [
        f"tables/{run_folder}/produce_many/-1/{key}/{name}"
        for key, names in (
            ("settings", ("manifest.json", "value.pkl")),
            ("table", ("manifest.json", "value.parquet")),
        )
        for name in names
    ]
    assert "Restoring the XCom 'return_value' of task 'produce'" in out
    assert "sha256 verified" in out
    # Credentials stay out of the task log and the XCom rows.
    assert checkpoints.server.secret_key not in out
    assert checkpoints.server.secret_key not in json.dumps(row)


def test_checkpoint_operator_persists_chosen_outputs_and_a_rerun_restores_them(
    ray_cluster, checkpoints: Bucket
):
    with DAG("x_ckpt_operator", schedule=None, start_date=START) as dag:

        @task.ray
        def features() -> pa.Table:
            return pa.table({"f": np.arange(5000), "g": np.ones(5000)})

        @task.ray(multiple_outputs=True)
        def split() -> dict:
            return {"train": np.arange(10), "test": np.arange(5)}

        @task
        def settings() -> dict:
            return {"rounds": 7}

        @task
        def lose_everything() -> None:
            kill_owner()

        @task.ray
        def use(table: pa.Table, test: np.ndarray) -> list:
            return [table.num_rows, int(test.sum())]

        table, parts, config = features(), split(), settings()
        saved = RayCheckpointOperator(task_id="checkpoint", outputs=[table, parts["test"], "settings"])
        config >> saved
        saved >> lose_everything() >> use(table, parts["test"])
    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    assert xcom(dag_run, "use") == [5000, 10]

    written = xcom_row(dag_run, "checkpoint")
    base = f"s3://{checkpoints.name}/pipelines/x_ckpt_operator/{dag_run.run_id}"
    assert [(w["task_id"], w["key"], w["format"], w["uri"]) for w in written] == [
        ("features", "return_value", "parquet", f"{base}/features/-1/return_value/value.parquet"),
        ("split", "test", "npy", f"{base}/split/-1/test/value.npy"),
        ("settings", "return_value", "cloudpickle", f"{base}/settings/-1/return_value/value.pkl"),
    ]
    assert pickle.loads(checkpoints.read(written[2]["uri"].split(checkpoints.name + "/", 1)[1])) == {
        "rounds": 7
    }


def mapped_instance(i: int) -> Any:
    """Instance ``i`` of a mapped task: a large value, None, small values, a skip and a failure."""
    from airflow.sdk.exceptions import AirflowSkipException

    if i == 0:
        return b"x" * 300_000
    if i == 3:
        raise AirflowSkipException("instance 3 has nothing to do")
    if i == 4:
        raise ValueError("instance 4 fails")
    return None if i == 1 else {"instance": i}


def test_each_mapped_result_is_checkpointed_under_its_own_map_index(ray_cluster, checkpoints: Bucket):
    with DAG("x_ckpt_mapped", schedule=None, start_date=START) as dag:
        mapped = task.ray(mapped_instance).expand(i=list(range(6)))
        RayCheckpointOperator(task_id="checkpoint", outputs=[mapped], trigger_rule="all_done")
    dag_run = run_dag(dag)
    states = task_states(dag_run)
    assert states["checkpoint"] == "success", states
    assert [states[f"mapped_instance[{i}]"] for i in range(6)] == [
        "success",
        "success",
        "success",
        "skipped",
        "failed",
        "success",
    ]
    written = xcom_row(dag_run, "checkpoint")
    assert sorted(w["map_index"] for w in written) == [0, 2, 5], written
    folder = f"pipelines/x_ckpt_mapped/{dag_run.run_id}/mapped_instance"
    assert [k for k in checkpoints.keys(folder) if k.endswith("/value.pkl")] == [
        f"{folder}/{i}/return_value/value.pkl" for i in (0, 2, 5)
    ]
    # Each file holds its own instance's value ...
    for i in (2, 5):
        assert pickle.loads(checkpoints.read(f"{folder}/{i}/return_value/value.pkl")) == {"instance": i}
    # ... and after the cluster lost everything, the one kept in Ray is restored from its own.
    restart_cluster()
    assert xcom(dag_run, "mapped_instance", map_index=0) == b"x" * 300_000
    assert [xcom(dag_run, "mapped_instance", map_index=i) for i in (2, 5)] == [
        {"instance": 2},
        {"instance": 5},
    ]


def test_a_checkpoint_that_does_not_match_its_manifest_is_refused(ray_cluster, checkpoints: Bucket, tmp_path):
    from airflow_ray.cluster.owner import owner_name
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.results.resolve import materialize
    from airflow_ray.xcom.reference import RayXComReference

    location = CheckpointLocation.resolve()
    namespace = RayHook().settings.namespace
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    def reference(task_id: str, checkpoint: CheckpointLocation | None = None) -> RayXComReference:
        where = None if checkpoint is None else checkpoint.to_json()
        return RayXComReference("ray_default", namespace, owner_name(), producer(task_id), {}, where)

    # Same length, one byte changed: the sha256 differs.
    [manifest] = CheckpointStore(location).write([(producer("flipped"), {"weights": list(range(100))})])
    key = location.key_prefix(producer("flipped")) + manifest["object"]
    data = bytearray(checkpoints.read(key))
    data[-5] ^= 0xFF
    checkpoints.put(key, bytes(data))
    with pytest.raises(RayCheckpointIntegrityError, match="sha256") as refused:
        materialize(reference("flipped"))
    assert key in str(refused.value)

    # Replaced by a pickle that would run code: refused on its size, never unpickled.
    CheckpointStore(location).write([(producer("replaced"), {"weights": [1, 2, 3]})])
    checkpoints.put(location.key_prefix(producer("replaced")) + "value.pkl", pickle.dumps(Evil()))
    with pytest.raises(RayCheckpointIntegrityError, match="manifest says"):
        materialize(reference("replaced"))
    assert not marker.exists()

    # Pickles load only from the configured bucket; .npy files load from anywhere.
    elsewhere = CheckpointLocation(
        "aws_ckpt", checkpoints.server.create_bucket(f"other-{uuid.uuid4().hex[:8]}"), "p"
    )
    CheckpointStore(elsewhere).write([(producer("pickled"), {"a": 1}), (producer("array"), np.arange(6))])
    with pytest.raises(RayCheckpointIntegrityError, match="only from the configured checkpoint bucket"):
        materialize(reference("pickled", elsewhere))
    assert np.array_equal(materialize(reference("array", elsewhere)), np.arange(6))


def test_a_rewrite_overwrites_its_own_checkpoint_and_leaves_nothing_behind(ray_cluster, checkpoints: Bucket):
    location = CheckpointLocation.resolve()
    who = producer("retried")
    folder = location.key_prefix(who)
    CheckpointStore(location).write([(who, np.arange(10))])
    CheckpointStore(location).write([(who, {"now": "a dict"})])  # the retry returned something else
    assert checkpoints.keys(folder) == [folder + "manifest.json", folder + "value.pkl"]

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle this")

    # A write that fails half-way (after 16 MB went up) aborts its upload: the old checkpoint stays.
    with pytest.raises(TypeError, match="cannot pickle"):
        CheckpointStore(location).write([(who, [bytes(20 * 1024 * 1024), Unpicklable()])])
    assert checkpoints.keys(folder) == [folder + "manifest.json", folder + "value.pkl"]
    uploads = checkpoints.server.client().list_multipart_uploads(Bucket=checkpoints.name)
    assert not uploads.get("Uploads")
    manifest = json.loads(checkpoints.read(folder + "manifest.json"))
    assert manifest["format"] == "cloudpickle"


def test_checkpoints_outlive_released_pins_until_deleted_or_pruned(ray_cluster, checkpoints: Bucket, capsys):
    with DAG("x_ckpt_retention", schedule=None, start_date=START) as dag:

        @task.ray(checkpoint=True)
        def produce() -> np.ndarray:
            return np.arange(100)

        produce()
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"produce": "success"}
    folder = f"pipelines/x_ckpt_retention/{dag_run.run_id}/"

    assert cli.main(["pins", "release", "--dag", "x_ckpt_retention"]) == 0
    assert len(checkpoints.keys(folder)) == 2  # releasing pins never deletes checkpoints

    assert cli.main(["checkpoints", "list", "--dag", "x_ckpt_retention"]) == 0
    assert f"s3://{checkpoints.name}/{folder}produce/-1/return_value/value.npy" in capsys.readouterr().out
    assert cli.main(["checkpoints", "prune"]) == 2  # no retention configured: nothing is deleted
    assert len(checkpoints.keys(folder)) == 2
    assert cli.main(["checkpoints", "prune", "--older-than", "1"]) == 0
    assert len(checkpoints.keys(folder)) == 2  # younger than a day
    assert cli.main(["checkpoints", "delete", "--dag", "x_ckpt_retention", "--run", dag_run.run_id]) == 0
    assert "Deleted 1 checkpoint(s)" in capsys.readouterr().out
    assert checkpoints.keys(folder) == []


def test_bad_bucket_credentials_and_endpoint_fail_fast_with_clear_errors(
    ray_cluster, checkpoints: Bucket, monkeypatch
):
    server = checkpoints.server
    monkeypatch.setenv("AIRFLOW_CONN_AWS_BADKEY", server.connection(secret_key="not-the-secret-0451"))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DOWN", server.connection(endpoint=f"http://127.0.0.1:{free_port()}"))
    cases = [
        (CheckpointLocation("aws_ckpt", "no-such-bucket", "p"), "does not exist"),
        (CheckpointLocation("aws_badkey", checkpoints.name, "p"), "refused access"),
        (CheckpointLocation("aws_down", checkpoints.name, "p"), "Could not reach"),
    ]
    for location, message in cases:
        started = time.monotonic()
        with pytest.raises(RayCheckpointError, match=message) as failed:
            CheckpointStore(location).preflight()
        # Bounded by the store's own 5 s connect timeout and 2 attempts, not botocore's 60 s and 5.
        assert time.monotonic() - started < 45
        assert repr(location.bucket) in str(failed.value) and repr(location.conn_id) in str(failed.value)
        assert "not-the-secret-0451" not in str(failed.value)
    with pytest.raises(RayConfigurationError, match=r"'aws_nope' .* does not exist"):
        CheckpointStore(CheckpointLocation("aws_nope", checkpoints.name, "p")).preflight()
    with pytest.raises(RayConfigurationError, match="not a bucket name"):
        CheckpointLocation.resolve(bucket="s3://bucket/folder")


def test_a_task_with_a_bad_checkpoint_setting_fails_before_it_computes(
    ray_cluster, checkpoints: Bucket, monkeypatch, tmp_path, capfd, caplog
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_BADKEY", checkpoints.server.connection(secret_key="not-the-secret-0451")
    )
    ran = tmp_path / "ran"

    with DAG("x_ckpt_bad", schedule=None, start_date=START) as dag:

        @task.ray(checkpoint=True, checkpoint_source="aws_badkey")
        def compute() -> int:
            Path(ran).touch()
            return 1

        @task.ray
        def produce() -> np.ndarray:
            return np.arange(1000)

        @task.ray(trigger_rule="all_done")
        def use(array: np.ndarray) -> int:
            return int(array.sum())

        array = produce()
        saved = RayCheckpointOperator(task_id="checkpoint", outputs=[array], aws_conn_id="aws_badkey")
        compute()
        saved >> use(array)
    dag_run = run_dag(dag)
    out = capfd.readouterr().out + caplog.text
    states = task_states(dag_run)
    assert states == {"compute": "failed", "produce": "success", "checkpoint": "failed", "use": "success"}
    assert not ran.exists()  # the callable never ran
    assert xcom(dag_run, "use") == sum(range(1000))  # the result stayed in the cluster
    assert (
        f"S3 refused access (403) while checking bucket {checkpoints.name!r} of AWS connection 'aws_badkey'"
        in out
    )
    assert "not-the-secret-0451" not in out
