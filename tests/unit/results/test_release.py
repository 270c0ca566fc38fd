"""Unpinning references: each in its own connection's cluster, counting what was pinned."""

from __future__ import annotations

from airflow_ray.results.release import release
from airflow_ray.results.resolve import input_of
from tests.unit.results.fakes import FakeTransport, producer


def test_each_reference_is_released_in_its_own_cluster_and_only_pinned_ones_count(clusters):
    clusters["a"] = a = FakeTransport("a")
    clusters["b"] = b = FakeTransport("b")
    a1 = a.reference(producer("one"), value=1)
    a2 = a.reference(producer("two"))  # already gone
    b1 = b.reference(producer("one"), value=1)
    b.pins[producer("kept").pin_key] = "stays"

    assert release([a1, b1, a2]) == 2
    assert a.released == [input_of(a1), input_of(a2)]
    assert b.released == [input_of(b1)]
    assert a.pins == {}
    assert b.pins == {producer("kept").pin_key: "stays"}


def test_nothing_to_release_asks_no_cluster(clusters):
    assert release([]) == 0
