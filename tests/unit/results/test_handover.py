"""Handing a Ray task its inputs: references become slots, the same result one input; a result of
another cluster is fetched; lost inputs are restored after the submission that found them lost."""

from __future__ import annotations

import pytest

from airflow_ray._remote.protocol import ref_slot
from airflow_ray.cluster.transport import TaskSpec
from airflow_ray.exceptions import RayObjectLostError
from airflow_ray.results.handover import hand_over, submit
from airflow_ray.results.resolve import input_of
from tests.unit.results.fakes import FakeTransport, producer


def test_references_and_their_tokens_become_slots_one_per_result(clusters, checkpoints):
    cluster = FakeTransport("c")
    x = cluster.reference(producer("x"), value=1)
    y = cluster.reference(producer("y"), value=2)
    args = (x, "plain text", [y.token(), {"again": x}])
    kwargs = {"y": (y,), "n": 3, "not a token": "ray-xcom://too/short"}

    new_args, new_kwargs, inputs, found = hand_over(args, kwargs, cluster)

    assert new_args == (ref_slot(0), "plain text", [ref_slot(1), {"again": ref_slot(0)}])
    assert new_kwargs == {"y": (ref_slot(1),), "n": 3, "not a token": "ray-xcom://too/short"}
    assert inputs == [input_of(x), input_of(y)]
    assert [r.pin for r in found] == [x.pin, y.pin]
    assert cluster.fetched == []  # nothing came out of the cluster


def test_a_result_of_another_cluster_is_fetched_not_handed_over(clusters, checkpoints):
    clusters["other"] = other = FakeTransport("other")
    here = FakeTransport("here")
    elsewhere = other.reference(producer("x"), value={"from": "other"})

    args, _, inputs, found = hand_over((elsewhere,), {}, here)
    assert args == ({"from": "other"},)
    assert inputs == [] and found == []


def test_a_result_of_another_connection_to_this_cluster_is_handed_over_not_fetched(clusters, checkpoints):
    # One cluster, two connections: by GCS address (driver transport) and by dashboard (Jobs API).
    clusters["by_gcs"] = by_gcs = FakeTransport("by_gcs")
    by_dashboard = FakeTransport("by_dashboard")
    made = by_gcs.reference(producer("x"), value=b"200 MB")
    by_dashboard.pins[made.pin] = by_gcs.pins[made.pin]

    args, _, inputs, found = hand_over((made, made.token()), {}, by_dashboard)
    assert args == (ref_slot(0), ref_slot(0))
    assert inputs == [input_of(made)] and found == [made]
    assert by_gcs.fetched == [] and by_dashboard.fetched == []
    assert by_dashboard.asked_missing == [[input_of(made)]]  # asked once per call


def test_a_result_of_another_namespace_is_fetched_without_asking(clusters, checkpoints):
    clusters["other"] = other = FakeTransport("other", namespace="team_b")
    here = FakeTransport("here")
    elsewhere = other.reference(producer("x"), value=5)

    args, _, inputs, _ = hand_over((elsewhere,), {}, here)
    assert args == (5,) and inputs == []
    assert here.asked_missing == []


def test_lost_inputs_are_restored_when_the_submission_finds_them_lost(clusters, checkpoints):
    cluster = FakeTransport("c")
    kept = cluster.reference(producer("kept"), value=1)
    lost = cluster.reference(producer("lost"))
    checkpoints.values[lost.pin] = 2

    submit(cluster, _spec(cluster, kept, lost), [kept, lost])
    assert checkpoints.restored == [lost.pin]
    assert cluster.pins[lost.pin] == 2


def test_a_lost_input_without_checkpoint_fails_naming_its_xcom(clusters, checkpoints):
    cluster = FakeTransport("c")
    lost = cluster.reference(producer("features", map_index=1))
    args, kwargs, inputs, found = hand_over((), {"x": lost}, cluster)
    spec = TaskSpec(lambda x: x, args, kwargs, "t", inputs=inputs)
    with pytest.raises(RayObjectLostError, match=r"XCom 'return_value' of task 'features' \(map index 1\)"):
        submit(cluster, spec, found)


def test_the_cluster_is_not_asked_before_the_submission(clusters, checkpoints):
    cluster = FakeTransport("jobs")
    lost = cluster.reference(producer("lost"))
    hand_over((lost,), {}, cluster)
    assert cluster.asked_missing == []
    assert checkpoints.restored == []


def _spec(cluster: FakeTransport, *references, submission_id: str | None = "sub-1") -> TaskSpec:
    args, kwargs, inputs, _ = hand_over(references, {}, cluster)
    return TaskSpec(
        lambda *values: sum(values), args, kwargs, "add", inputs=inputs, submission_id=submission_id
    )


def test_inputs_a_job_finds_gone_are_restored_and_it_is_submitted_again(clusters, checkpoints):
    cluster = FakeTransport("jobs")
    kept = cluster.reference(producer("kept"), value=1)
    lost = cluster.reference(producer("lost"))
    checkpoints.values[kept.pin] = 100  # must not replace what the cluster holds
    checkpoints.values[lost.pin] = 2
    spec = _spec(cluster, kept, lost)

    call = submit(cluster, spec, [kept, lost])
    assert checkpoints.restored == [lost.pin]
    assert spec.submission_id == "sub-1-restored"  # a new job, not the refused one again
    cluster.follow(call, print, None)
    assert cluster.take(call) == 3


def test_a_refused_submission_without_id_is_retried_without_one(clusters, checkpoints):
    cluster = FakeTransport("jobs")
    lost = cluster.reference(producer("lost"))
    checkpoints.values[lost.pin] = 5
    spec = _spec(cluster, lost, submission_id=None)
    submit(cluster, spec, [lost])
    assert spec.submission_id is None
    assert len(cluster.submitted) == 1


def test_a_job_missing_an_input_without_checkpoint_fails_naming_it(clusters, checkpoints):
    cluster = FakeTransport("jobs")
    lost = cluster.reference(producer("lost"))
    with pytest.raises(RayObjectLostError, match="XCom 'return_value' of task 'lost'"):
        submit(cluster, _spec(cluster, lost), [lost])
    assert cluster.submitted == []
