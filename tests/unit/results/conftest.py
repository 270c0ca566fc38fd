"""Fixtures for the results package: fake clusters reached through RayHook, and S3 in memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
from airflow_ray.hooks.ray import RayHook
from tests.unit.results.fakes import FakeTransport

BUCKET = "ckpt-configured"
OTHER_BUCKET = "ckpt-other"


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeTransport]:
    """``{conn_id: FakeTransport}``: what ``RayHook(conn_id).get_transport()`` returns."""
    found: dict[str, FakeTransport] = {}

    def get_transport(hook: RayHook, namespace: str | None = None) -> FakeTransport:
        return found[hook.ray_conn_id]

    monkeypatch.setattr(RayHook, "get_transport", get_transport)
    return found


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[CheckpointStore]:
    """moto's in-process S3 with two buckets; the configured checkpoint location's store."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_BUCKET", BUCKET)
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_PREFIX", "pipes")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.create_bucket(Bucket=OTHER_BUCKET)
        location = CheckpointLocation.configured()
        assert location is not None
        yield CheckpointStore(location)


class Checkpoints:
    """``values``: ``{pin key: value}`` of the results that have a checkpoint; ``restored``: the
    pin keys put back, in order."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.restored: list[str] = []


@pytest.fixture
def checkpoints(monkeypatch: pytest.MonkeyPatch) -> Checkpoints:
    """Checkpoints for code that calls :mod:`airflow_ray.results.restore` (tested on its own
    against S3 in test_restore.py): a restore puts the value back into the fake cluster."""
    from airflow_ray.results import restore as restore_module

    saved = Checkpoints()

    def restore(reference: Any, transport: Any) -> bool:
        if reference.pin not in saved.values:
            return False
        transport.pins[reference.pin] = saved.values[reference.pin]
        saved.restored.append(reference.pin)
        return True

    def read_here(reference: Any) -> tuple[bool, Any]:
        found = reference.pin in saved.values
        return found, saved.values.get(reference.pin)

    monkeypatch.setattr(restore_module, "restore", restore)
    monkeypatch.setattr(restore_module, "read_here", read_here)
    return saved
