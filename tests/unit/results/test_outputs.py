"""What one Ray task returned, pinned under its XCom(s): references or inline values, which small
values are fetched, what is released, and checkpoints written from the cluster."""

from __future__ import annotations

import pytest

from airflow_ray._remote.checkpoint_io import read_checkpoint
from airflow_ray._remote.protocol import Returned
from airflow_ray.cluster.transport import Call, Input
from airflow_ray.results.outputs import PinnedOutputs
from airflow_ray.xcom.reference import RayXComReference
from tests.unit.results.fakes import FakeTransport, producer

CALL = Call("t", "call-1")


def _split(cluster: FakeTransport) -> PinnedOutputs:
    made = producer("split")
    cluster.pins[made.with_key("small").pin_key] = {"a": 1}
    cluster.pins[made.with_key("big").pin_key] = "x" * 5000
    parts = {"small": {"type": "dict", "size_bytes": 20}, "big": {"type": "str", "size_bytes": 5000}}
    return PinnedOutputs(cluster, made, Returned({"type": "dict"}, parts))


def test_one_value_is_one_reference_under_return_value():
    cluster = FakeTransport("c", namespace="ns", owner="own")
    meta = {"type": "int", "size_bytes": 28}
    outputs = PinnedOutputs(cluster, producer("one"), Returned(meta))
    reference = outputs.references("c", checkpoints={"return_value": {"bucket": "b"}})
    assert reference == RayXComReference("c", "ns", "own", producer("one"), meta, {"bucket": "b"})


def test_a_split_dict_is_one_reference_per_key_but_inline_values_are_themselves():
    cluster = FakeTransport("c")
    outputs = _split(cluster)
    values = outputs.references("c", inline={"small": {"a": 1}})
    assert values["small"] == {"a": 1}
    big = values["big"]
    assert isinstance(big, RayXComReference)
    assert big.producer == producer("split").with_key("big")
    assert big.meta == {"type": "str", "size_bytes": 5000}
    assert big.checkpoint is None


def test_only_values_small_enough_by_their_description_are_fetched():
    cluster = FakeTransport("c")
    outputs = _split(cluster)
    assert outputs.small_values(CALL, 1000) == {"small": {"a": 1}}
    ((asked, max_bytes),) = cluster.small_asked
    assert list(asked) == ["small"] and max_bytes == 1000
    assert outputs.small_values(CALL, 0) == {}
    assert len(cluster.small_asked) == 1  # 0 asks nothing


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "why"),
    [(_Opaque(), "Airflow's serializer does not know it"), ("é" * 40, "its JSON is larger than max_bytes")],
)
def test_a_small_value_the_xcom_row_cannot_hold_as_itself_stays_a_reference(value, why):
    cluster = FakeTransport("c")
    made = producer()
    cluster.pins[made.pin_key] = value
    outputs = PinnedOutputs(cluster, made, Returned({"size_bytes": 80}))
    assert outputs.small_values(CALL, 100) == {}, why


def test_a_description_without_a_size_is_never_fetched():
    cluster = FakeTransport("c")
    cluster.pins[producer().pin_key] = 1
    assert PinnedOutputs(cluster, producer(), Returned({"type": "int"})).small_values(CALL, 100) == {}
    assert cluster.small_asked == []


def test_what_the_row_holds_is_unpinned_only_where_release_is_cheap():
    cheap = FakeTransport("c")
    _split(cheap).release_small({"small": {"a": 1}})
    assert cheap.released == [Input(producer("split").with_key("small").pin_key, cheap.owner_name)]
    assert list(cheap.pins) == [producer("split").with_key("big").pin_key]

    costly = FakeTransport("j", releases_copied=False)
    _split(costly).release_small({"small": {"a": 1}})
    assert costly.released == []
    _split(cheap).release_small({})
    assert len(cheap.released) == 1


def test_fetch_and_release_releases_even_when_the_fetch_fails():
    cluster = FakeTransport("c")
    outputs = _split(cluster)
    assert outputs.fetch_and_release() == {"small": {"a": 1}, "big": "x" * 5000}
    assert cluster.pins == {}

    gone = FakeTransport("c")
    outputs = PinnedOutputs(gone, producer(), Returned({}))
    with pytest.raises(LookupError):
        outputs.fetch_and_release()
    assert gone.released == [Input(producer().pin_key, gone.owner_name)]
    assert outputs.fetch_and_release(fetch=False) is None
    assert len(gone.released) == 2


def test_each_key_is_checkpointed_from_the_cluster_and_documented(s3):
    cluster = FakeTransport("c")
    outputs = _split(cluster)
    documents = outputs.checkpoint(s3, None)
    location = s3.location
    for key in ("small", "big"):
        prefix = location.key_prefix(producer("split").with_key(key))
        assert documents[key]["uri"].startswith(location.uri(prefix))
        assert {k: documents[key][k] for k in ("conn_id", "bucket", "prefix")} == location.to_json()
    prefix = location.key_prefix(producer("split").with_key("big"))
    assert read_checkpoint(s3.access(), location.bucket, prefix, True) == "x" * 5000
