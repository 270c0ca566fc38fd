"""The reference an XCom row holds for a value kept in the Ray cluster: plain data, no cluster."""

from __future__ import annotations

import json

import pytest

from airflow_ray._remote.protocol import Producer
from airflow_ray.xcom.reference import MAX_REFERENCE_BYTES, RayXComReference, stored_references

PRODUCER = Producer("higgs", "manual__2026-11-24T10:00:00+00:00", "train")
CHECKPOINT = {"conn_id": "aws_ckpt", "bucket": "b", "prefix": "pipelines", "uri": "s3://b/pipelines/higgs/"}
COLUMNS = [f"feature_{i:03d}_measured_at_the_detector_in_giga_electron_volts" for i in range(200)]
TABLE = {"type": "DataFrame", "size_bytes": 5 * 1024**3, "rows": 10**7, "shape": [10**7, 200]}


def reference(producer: Producer = PRODUCER, meta: dict | None = None, checkpoint=None) -> RayXComReference:
    return RayXComReference("ray_cluster", "pipelines", "airflow_ray_owner", producer, meta or {}, checkpoint)


def test_many_long_column_names_are_cut_to_ten():
    document = reference(meta={**TABLE, "dtype": "float64", "columns": COLUMNS}).to_json()
    assert len(json.dumps(document)) <= MAX_REFERENCE_BYTES
    assert document["columns_total"] == 200
    assert document["columns"] == [name[:40] for name in COLUMNS[:10]]
    assert document["shape"] == [10**7, 200] and document["dtype"] == "float64"


def test_detail_is_dropped_when_cut_columns_are_still_too_long():
    producer = Producer("higgs", "manual__2026-11-24T10:00:00+00:00__" + "r" * 200, "train")
    document = reference(producer, {**TABLE, "dtype": "float64", "columns": COLUMNS}, CHECKPOINT).to_json()
    assert len(json.dumps(document)) <= MAX_REFERENCE_BYTES
    assert not {"columns", "shape", "dtype"} & set(document)
    assert document["columns_total"] == 200
    assert RayXComReference.from_json(document).producer == producer
    assert document["checkpoint"] == CHECKPOINT


def test_long_ids_still_fit_by_dropping_the_checkpoint_uri():
    # Ids at Airflow's limits (250 characters each) alone would fill the 1 KB.
    producer = Producer("d" * 200, "r" * 150, "t" * 150)
    checkpoint = {**CHECKPOINT, "uri": "s3://b/pipelines/" + "/".join(producer.folder_parts())}
    document = reference(producer, {**TABLE, "columns": COLUMNS}, checkpoint).to_json()
    assert len(json.dumps(document)) <= MAX_REFERENCE_BYTES
    assert document["checkpoint"] == {k: v for k, v in checkpoint.items() if k != "uri"}
    assert RayXComReference.from_json(document).producer == producer


def test_a_small_reference_is_kept_whole_and_readable():
    document = reference(meta={"type": "ndarray", "size_bytes": 1536, "shape": [3, 4]}).to_json()
    assert document["airflow_ray"] == "ray-object"
    assert (document["type"], document["size"], document["shape"]) == ("ndarray", "1.5 KB", [3, 4])
    assert "columns_total" not in document


def test_json_round_trip():
    original = reference(Producer("d", "r", "t", 3, "model"), {**TABLE, "columns": ["a", "b"]}, CHECKPOINT)
    restored = RayXComReference.from_json(json.loads(json.dumps(original.to_json())))
    assert (restored.conn_id, restored.namespace, restored.owner) == (
        "ray_cluster",
        "pipelines",
        "airflow_ray_owner",
    )
    assert restored.producer == original.producer
    assert restored.pin == "d/r/t/3/model"
    assert restored.checkpoint == CHECKPOINT
    assert {key: restored.meta[key] for key in original.meta} == original.meta


@pytest.mark.parametrize(
    "producer",
    [
        PRODUCER,
        Producer("team/dag", "manual__2026-11-24T10:00:00+00:00", "group.task", 7, "split key"),
        Producer("d:1", "backfill run/a+b c%20", "t/x:y", 0, "k/ey+1"),
        Producer("d", "r", "t", try_number=3),
    ],
)
def test_token_round_trip(producer):
    original = reference(producer, {"type": "int"})
    token = original.token()
    assert str(original) == token and token.startswith("ray-xcom://")
    restored = RayXComReference.from_token(token)
    assert restored == RayXComReference(original.conn_id, original.namespace, original.owner, producer)


@pytest.mark.parametrize(
    "text",
    [
        "s3://bucket/key",
        "ray-xcom:/c/n/o/d/r/t/-1/k",
        "ray-xcom://c/n/o/d/r/t/-1",
        "ray-xcom://c/n/o/d/r/t/-1/k/extra",
        "ray-xcom://c/n/o/d/r/t/first/k",
        "ray-xcom://c/n/o/d/r/t/1.5/k",
    ],
)
def test_from_token_is_none_for_what_is_not_a_token(text):
    assert RayXComReference.from_token(text) is None


def test_stored_references_are_found_where_they_are_nested():
    first, second, third = (reference(Producer("d", "r", task)) for task in ("a", "b", "c"))
    value = {
        "plain": {"airflow_ray": "something else", "n": 1},
        "list": [first.to_json(), 2, {"deeper": [second.to_json()]}],
        "tuple": ("x", third.to_json()),
    }
    assert [found.producer.task_id for found in stored_references(value)] == ["a", "b", "c"]
    assert stored_references(first.to_json())[0].producer == first.producer
    assert stored_references({"a": [1, "ray-xcom://c/n/o/d/r/t/-1/k"]}) == []


@pytest.mark.parametrize(
    ("meta", "described"),
    [
        ({"type": "ndarray", "size_bytes": 1536, "shape": [3, 4]}, "ndarray, 1.5 KB, shape (3, 4)"),
        ({"type": "DataFrame", "size_bytes": 5 * 1024**3}, "DataFrame, 5.0 GB"),
        ({"type": "int", "size_bytes": 28}, "int, 28 B"),
        ({}, "?, unknown size"),
    ],
)
def test_repr_shows_type_size_shape_and_producer(meta, described):
    producer = Producer("higgs", "r1", "train", 2)
    assert repr(reference(producer, meta)) == (
        f"<Ray object {described}: XCom 'return_value' of task 'train' (map index 2) in run 'r1' of DAG 'higgs'>"
    )


def test_the_embedded_cluster_that_holds_it_travels_with_the_reference():
    from dataclasses import replace

    held = replace(reference(meta=dict(TABLE)), cluster="worker-a:/opt/airflow/ray@1796599000.25")
    document = held.to_json()
    assert document["cluster"] == "worker-a:/opt/airflow/ray@1796599000.25"
    assert len(json.dumps(document)) <= MAX_REFERENCE_BYTES
    assert RayXComReference.from_json(document) == held
    assert "cluster" not in reference().to_json()  # a cluster by address: every host reaches it
