"""Fixtures of the integration tests: the metadata DB and the embedded Ray cluster, both real."""

from __future__ import annotations

from pathlib import Path

import pytest

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
