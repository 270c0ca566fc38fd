"""Writing results kept in the cluster to S3 with a task that reads them there."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_ray._remote.checkpoint_io import read_checkpoint
from airflow_ray._remote.protocol import ref_slot
from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
from airflow_ray.cluster.resources import IO_TASK
from airflow_ray.cluster.transport import Input
from airflow_ray.exceptions import RayCheckpointError
from airflow_ray.results.persist import write_from_cluster
from tests.unit.results.fakes import FakeTransport, producer


def test_each_result_is_written_by_an_io_task_that_takes_it_as_its_input(s3):
    cluster = FakeTransport("c")
    first, second = producer("a", map_index=0), producer("a", map_index=1)
    cluster.pins[first.pin_key] = np.arange(5)
    cluster.pins[second.pin_key] = {"b": 2}
    items = [(p, Input(p.pin_key, cluster.owner_name)) for p in (first, second)]

    manifests = write_from_cluster(s3, cluster, items)

    location = s3.location
    assert [m["uri"] for m in manifests] == [
        location.uri(location.key_prefix(first) + "value.npy"),
        location.uri(location.key_prefix(second) + "value.pkl"),
    ]
    for spec, (made, item) in zip(cluster.submitted, items, strict=True):
        assert spec.inputs == [item]
        assert spec.args[0] == ref_slot(0)
        assert spec.resources == IO_TASK
        assert spec.name == f"checkpoint {location.key_prefix(made)}"
        assert spec.pin is None
    value = read_checkpoint(s3.access(), location.bucket, location.key_prefix(first), False)
    assert np.array_equal(value, np.arange(5))


def test_a_missing_bucket_is_an_error_naming_it_and_its_connection(s3):
    cluster = FakeTransport("c")
    cluster.pins[producer().pin_key] = 1
    store = CheckpointStore(CheckpointLocation("aws_default", "no-such-bucket", "p"))
    with pytest.raises(RayCheckpointError, match="bucket 'no-such-bucket' of AWS connection 'aws_default'"):
        write_from_cluster(store, cluster, [(producer(), Input(producer().pin_key, "o"))], s3=s3.access())
