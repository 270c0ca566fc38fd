"""Where a reference's value is: asked of the cluster, restored when lost, else a clear error."""

from __future__ import annotations

import pytest

from airflow_ray.cluster.transport import Input
from airflow_ray.exceptions import RayObjectLostError, RayResultTooLargeError
from airflow_ray.results.resolve import PulledReference, ensure_in_cluster, input_of, lost, materialize
from tests.unit.results.fakes import FakeTransport, producer


def test_input_of_is_the_pin_key_and_owner():
    reference = FakeTransport(owner="owner_7").reference(producer(task_id="t", map_index=3))
    assert input_of(reference) == Input("dag/manual__2026-12-06/t/3/return_value", "owner_7")


def test_lost_names_the_xcom_the_connection_and_the_fixes():
    message = str(lost(FakeTransport("ray_prod").reference(producer(task_id="train", map_index=4))))
    assert "XCom 'return_value' of task 'train' (map index 4) in run 'manual__2026-12-06'" in message
    assert "connection 'ray_prod'" in message
    assert "checkpoint=True" in message and "Clear that task" in message


def test_only_what_the_cluster_lost_is_restored(checkpoints):
    cluster = FakeTransport()
    here = cluster.reference(producer("here"), value=1)
    gone = cluster.reference(producer("gone"))
    checkpoints.values[here.pin] = "stale copy"
    checkpoints.values[gone.pin] = 2

    ensure_in_cluster([here, gone], cluster)
    assert cluster.asked_missing == [[input_of(here), input_of(gone)]]
    assert checkpoints.restored == [gone.pin]
    assert cluster.pins == {here.pin: 1, gone.pin: 2}


def test_pins_known_gone_are_not_asked_about(checkpoints):
    cluster = FakeTransport()
    gone = cluster.reference(producer("gone"))
    checkpoints.values[gone.pin] = 2
    ensure_in_cluster([gone], cluster, gone=[gone.pin])
    assert cluster.asked_missing == []
    assert checkpoints.restored == [gone.pin]


def test_a_lost_result_without_checkpoint_is_an_error_naming_its_xcom(checkpoints):
    cluster = FakeTransport("ray_x")
    with pytest.raises(RayObjectLostError, match=r"XCom 'return_value' of task 'gone'.*'ray_x'"):
        ensure_in_cluster([cluster.reference(producer("gone"))], cluster)


def test_materialize_fetches_from_the_references_own_cluster(clusters, checkpoints):
    clusters["a"] = a = FakeTransport("a")
    clusters["b"] = b = FakeTransport("b")
    b.pins[producer().pin_key] = "from b"
    a.pins[producer().pin_key] = "from a"
    assert materialize(b.reference(producer())) == "from b"
    assert a.fetched == []


def test_materialize_restores_a_lost_value_first(clusters, checkpoints):
    clusters["c"] = cluster = FakeTransport("c")
    reference = cluster.reference(producer())
    checkpoints.values[reference.pin] = [1, 2]
    assert materialize(reference) == [1, 2]
    assert checkpoints.restored == [reference.pin]
    assert cluster.asked_missing == [] and len(cluster.fetched) == 2  # the fetch said it was gone


def test_materialize_asks_the_cluster_once(clusters, checkpoints):
    clusters["c"] = cluster = FakeTransport("c")
    reference = cluster.reference(producer(), value="v")
    assert materialize(reference) == "v"
    assert cluster.asked_missing == [] and len(cluster.fetched) == 1


class _LosesOnFirstFetch(FakeTransport):
    """Says it holds the value, then has lost it when it is fetched (released in between)."""

    def fetch(self, item: Input) -> object:
        if not self.fetched:
            self.pins.pop(item.pin, None)
        return super().fetch(item)


def test_a_value_lost_between_the_check_and_the_fetch_is_restored(clusters, checkpoints):
    clusters["c"] = cluster = _LosesOnFirstFetch("c")
    reference = cluster.reference(producer(), value="v")
    checkpoints.values[reference.pin] = "v from checkpoint"
    assert materialize(reference) == "v from checkpoint"
    assert len(cluster.fetched) == 2


def test_a_value_lost_between_the_check_and_the_fetch_without_checkpoint_is_lost(clusters, checkpoints):
    clusters["c"] = cluster = _LosesOnFirstFetch("c")
    with pytest.raises(RayObjectLostError, match="no checkpoint"):
        materialize(cluster.reference(producer(), value="v"))
    assert len(cluster.fetched) == 1  # not fetched again without a restore


class _TooLarge(FakeTransport):
    def fetch(self, item: Input) -> object:
        raise RayResultTooLargeError(f"{item.pin} is too large")


def test_a_result_too_large_to_fetch_is_read_from_its_checkpoint(clusters, checkpoints):
    clusters["c"] = cluster = _TooLarge("c")
    reference = cluster.reference(producer(), value="big")
    checkpoints.values[reference.pin] = "big, from S3"
    assert materialize(reference) == "big, from S3"
    del checkpoints.values[reference.pin]
    with pytest.raises(RayResultTooLargeError, match="too large"):
        materialize(reference)


def test_a_pulled_reference_reads_the_value_when_a_template_indexes_it(clusters, checkpoints):
    clusters["c"] = cluster = FakeTransport("c")
    plain = cluster.reference(producer(), value={"rows": [1, 2, 3]})
    pulled = PulledReference(plain.conn_id, plain.namespace, plain.owner, plain.producer)
    assert pulled["rows"] == [1, 2, 3]
    assert list(pulled) == ["rows"]
    assert len(pulled) == 1
    assert str(pulled) == plain.token()  # rendered whole, it stays a reference


def _made_on(cluster: FakeTransport, task_id: str, holder: str):
    from dataclasses import replace

    return replace(cluster.reference(producer(task_id)), cluster=holder)


def test_a_result_held_by_another_hosts_embedded_cluster_is_restored_without_asking(checkpoints):
    here = FakeTransport("ray_default")
    here.holder = "host-b:/home/b/ray@1796600000.5"
    elsewhere = _made_on(here, "made_on_a", "host-a:/home/a/ray@1796599000.0")
    here.pins.pop(elsewhere.pin, None)
    checkpoints.values[elsewhere.pin] = "from S3"
    ensure_in_cluster([elsewhere], here)
    assert here.asked_missing == []  # not looked for where it cannot be
    assert checkpoints.restored == [elsewhere.pin] and here.pins[elsewhere.pin] == "from S3"


def test_without_a_checkpoint_the_error_names_the_host_and_what_to_configure(checkpoints):
    here = FakeTransport("ray_default")
    here.holder = "host-b:/home/b/ray@1796600000.5"
    with pytest.raises(RayObjectLostError) as raised:
        ensure_in_cluster([_made_on(here, "made_on_a", "host-a:/home/a/ray@1796599000.0")], here)
    message = str(raised.value)
    assert "embedded Ray cluster of host host-a (state /home/a/ray)" in message
    assert "this worker, on host host-b, does not reach" in message
    assert "connection 'ray_default' the address of one Ray cluster" in message
    assert "[ray] checkpoint_bucket" in message and here.asked_missing == []


def test_a_result_of_this_hosts_earlier_cluster_says_that_cluster_stopped(checkpoints):
    here = FakeTransport("ray_default")
    here.holder = "host-b:/home/b/ray@none"
    with pytest.raises(
        RayObjectLostError, match=r"host host-b started at 2026-12-06T.*which has stopped since"
    ):
        ensure_in_cluster([_made_on(here, "earlier", "host-b:/home/b/ray@1796599000.0")], here)


def test_a_result_of_this_very_cluster_is_asked_for_as_before(checkpoints):
    here = FakeTransport("ray_default")
    here.holder = "host-b:/home/b/ray@1796600000.5"
    same = _made_on(here, "same", here.holder)
    here.pins[same.pin] = 3
    ensure_in_cluster([same], here)
    assert here.asked_missing == [[input_of(same)]]
