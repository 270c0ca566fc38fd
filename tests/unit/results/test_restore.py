"""Putting a lost result back from its checkpoint: where it is looked for, what is trusted, and
what a bad or unreadable checkpoint gives (moto's S3 in this process, a fake cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
from airflow_ray.cluster.resources import IO_TASK
from airflow_ray.exceptions import RayCheckpointError, RayCheckpointIntegrityError
from airflow_ray.results.restore import candidates, read_here, restore
from tests.unit.results.conftest import OTHER_BUCKET
from tests.unit.results.fakes import FakeTransport, producer

ELSEWHERE = CheckpointLocation("aws_default", OTHER_BUCKET, "elsewhere")


def test_candidates_are_the_producers_own_location_then_the_configured_one(monkeypatch):
    own = {**ELSEWHERE.to_json(), "uri": "s3://ckpt-other/elsewhere/..."}
    reference = FakeTransport().reference(producer(), checkpoint=own)
    monkeypatch.delenv("AIRFLOW__RAY__CHECKPOINT_BUCKET", raising=False)
    assert candidates(reference) == [ELSEWHERE]
    assert candidates(FakeTransport().reference(producer())) == []

    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_BUCKET", "ckpt-configured")
    configured = CheckpointLocation.configured()
    assert candidates(reference) == [ELSEWHERE, configured]
    same = FakeTransport().reference(producer(), checkpoint=configured.to_json())
    assert candidates(same) == [configured]  # not twice


def test_without_a_checkpoint_nothing_runs_and_it_says_so(s3):
    cluster = FakeTransport()
    assert restore(cluster.reference(producer()), cluster) is False
    assert cluster.submitted == []
    assert read_here(cluster.reference(producer())) == (False, None)


def test_the_value_is_pinned_again_under_its_xcom_by_an_io_task(s3):
    made = producer(task_id="train", map_index=2)
    s3.write([(made, {"rows": [1, 2, 3]})])
    cluster = FakeTransport()
    reference = cluster.reference(made)

    assert restore(reference, cluster) is True
    assert cluster.pins == {made.pin_key: {"rows": [1, 2, 3]}}
    (spec,) = cluster.submitted
    assert spec.pin == made
    assert spec.resources == IO_TASK
    assert spec.name == f"restore {s3.location.key_prefix(made)}"
    assert cluster.forgotten  # pinned, so the call itself is let go
    assert read_here(reference) == (True, {"rows": [1, 2, 3]})


def test_the_producers_own_location_is_read_before_the_configured_one(s3):
    made = producer()
    s3.write([(made, "configured copy")])
    elsewhere = CheckpointStore(ELSEWHERE)
    elsewhere.write([(made, np.arange(4))])
    cluster = FakeTransport()

    assert restore(cluster.reference(made, checkpoint=ELSEWHERE.to_json()), cluster)
    assert np.array_equal(cluster.pins[made.pin_key], np.arange(4))
    assert cluster.submitted[0].args[1] == OTHER_BUCKET


def test_a_pickle_outside_the_configured_bucket_is_refused_not_loaded(s3):
    made = producer()
    CheckpointStore(ELSEWHERE).write([(made, {"pickled": True})])
    cluster = FakeTransport()
    reference = cluster.reference(made, checkpoint=ELSEWHERE.to_json())

    with pytest.raises(RayCheckpointIntegrityError, match="Refusing to unpickle s3://ckpt-other/elsewhere/"):
        restore(reference, cluster)
    assert cluster.pins == {}
    with pytest.raises(RayCheckpointIntegrityError, match="configured checkpoint bucket"):
        read_here(reference)


def test_a_checkpoint_that_does_not_match_its_manifest_is_refused(s3):
    made = producer()
    (manifest,) = s3.write([(made, np.arange(1000))])
    prefix = s3.location.key_prefix(made)
    client = s3.hook.get_conn()
    client.put_object(Bucket=s3.location.bucket, Key=prefix + manifest["object"], Body=b"tampered")
    cluster = FakeTransport()

    with pytest.raises(RayCheckpointIntegrityError):
        restore(cluster.reference(made), cluster)
    assert cluster.pins == {}


def test_an_unreadable_checkpoint_names_the_uri_bucket_and_connection(s3):
    made = producer()
    (manifest,) = s3.write([(made, {"a": 1})])
    prefix = s3.location.key_prefix(made)
    s3.hook.get_conn().delete_object(Bucket=s3.location.bucket, Key=prefix + manifest["object"])
    cluster = FakeTransport()

    with pytest.raises(RayCheckpointError) as raised:
        restore(cluster.reference(made), cluster)
    assert not isinstance(raised.value, RayCheckpointIntegrityError)
    message = str(raised.value)
    assert "bucket 'ckpt-configured' of AWS connection 'aws_default'" in message
    assert "bucket does not exist" not in message
    assert f"reading s3://ckpt-configured/{prefix} from" in message
