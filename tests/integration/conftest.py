"""Fixtures of the integration tests: the metadata DB and the embedded Ray cluster, both real."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.local_s3 import Bucket, S3Server, start_moto, start_rclone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def ray_cluster(airflow_db: Path):
    """The embedded cluster of the test AIRFLOW_HOME, started the way a first task starts it."""
    from airflow_ray.cluster.local import EmbeddedCluster
    from airflow_ray.hooks.ray import RayHook

    RayHook().get_conn()
    cluster = EmbeddedCluster.from_config()
    head = cluster.status()
    assert head is not None
    return cluster


@pytest.fixture(scope="session")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (``rclone serve s3``) on 127.0.0.1 for this test session."""
    server = start_rclone(tmp_path_factory.mktemp("rclone"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone S3 server on 127.0.0.1 for this test session."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def checkpoints(rclone_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket on the rclone server, configured as the ``[ray]`` checkpoint location
    through the AWS connection ``aws_ckpt``."""
    bucket = Bucket(rclone_s3, rclone_s3.create_bucket(f"ckpt-{uuid.uuid4().hex[:12]}"))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CKPT", rclone_s3.connection())
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_CONN_ID", bucket.conn_id)
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_BUCKET", bucket.name)
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_PREFIX", bucket.prefix)
    return bucket
