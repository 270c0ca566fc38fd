"""Our checkpoint logic without S3: locations, keys, trust, and how S3 failures are explained."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
from airflow_ray.exceptions import RayConfigurationError

PRODUCER = {
    "dag_id": "higgs",
    "run_id": "manual__2026-11-24T10:00:00+00:00",
    "task_id": "train",
    "map_index": -1,
    "key": "return_value",
}


def test_location_from_arguments_and_from_the_ray_section(monkeypatch):
    assert CheckpointLocation.resolve("aws_x", "bucket", "/some/prefix/") == CheckpointLocation(
        "aws_x", "bucket", "some/prefix"
    )
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_BUCKET", "configured")
    assert CheckpointLocation.resolve() == CheckpointLocation("aws_default", "configured", "airflow-ray")
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_CONN_ID", "aws_ckpt")
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_PREFIX", "/team/pipes/")
    assert CheckpointLocation.configured() == CheckpointLocation("aws_ckpt", "configured", "team/pipes")
    assert CheckpointLocation.resolve(prefix="p", bucket="other").bucket == "other"


def test_a_missing_or_malformed_bucket_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW__RAY__CHECKPOINT_BUCKET", raising=False)
    with pytest.raises(RayConfigurationError, match="AIRFLOW__RAY__CHECKPOINT_BUCKET"):
        CheckpointLocation.resolve()
    assert CheckpointLocation.configured() is None
    with pytest.raises(RayConfigurationError, match="'s3://b/x' is not a bucket name"):
        CheckpointLocation.resolve(bucket="s3://b/x")


def test_one_xcom_of_one_task_instance_has_one_folder():
    location = CheckpointLocation("aws", "b", "pipelines")
    assert location.key_prefix(PRODUCER) == (
        "pipelines/higgs/manual__2026-11-24T10:00:00+00:00/train/-1/return_value/"
    )
    odd = {**PRODUCER, "run_id": "a/b c", "map_index": 3, "key": "test"}
    assert CheckpointLocation("aws", "b", "").key_prefix(odd) == "higgs/a%2Fb%20c/train/3/test/"
    assert location.run_prefix("higgs", "a/b") == "pipelines/higgs/a%2Fb/"
    assert location.run_prefix() == "pipelines/"
    with pytest.raises(RayConfigurationError, match="without its DAG"):
        location.run_prefix(None, "r")


def test_pickles_are_trusted_only_in_the_configured_bucket():
    configured = CheckpointLocation("aws_ckpt", "b", "pipelines")
    assert CheckpointLocation("aws_ckpt", "b", "tables").trusted(configured)
    assert not CheckpointLocation("aws_ckpt", "other", "pipelines").trusted(configured)
    assert not CheckpointLocation("aws_other", "b", "pipelines").trusted(configured)
    assert not configured.trusted(None)


def error(code: str, status: int, operation: str = "HeadBucket") -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (error("404", 404), "The S3 bucket does not exist: bucket 'b' of AWS connection 'aws_x'"),
        (error("NoSuchBucket", 404, "PutObject"), "The S3 bucket does not exist"),
        (error("404", 404, "HeadObject"), "An object is missing (HeadObject answered 404) while checking"),
        (error("NoSuchKey", 404, "GetObject"), "Clear the producing task"),
        (error("403", 403), "S3 refused access (403) while checking bucket 'b' of AWS connection 'aws_x'"),
        (error("SignatureDoesNotMatch", 403, "PutObject"), "check the connection's access key id"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "Could not reach the S3 endpoint"),
        (NoCredentialsError(), "No AWS credentials found"),
        (error("SlowDown", 503, "PutObject"), "S3 call PutObject failed"),
    ],
)
def test_s3_failures_name_the_connection_bucket_and_fix(monkeypatch, failure, message):
    monkeypatch.setattr(CheckpointStore, "endpoint", lambda self: "http://127.0.0.1:9000")
    explained = str(CheckpointStore(CheckpointLocation("aws_x", "b", "p")).error(failure, "checking"))
    assert message in explained
    assert "(endpoint http://127.0.0.1:9000)" in explained
