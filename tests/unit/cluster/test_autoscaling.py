"""Whether a task no live node can run waits for the autoscaler or fails at once, from what the
cluster's GCS holds (the messages are built here as Ray builds them), and the errors and notices
that say so. The real autoscaler is in tests/integration/test_autoscaling.py."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_ray._remote import autoscaling
from airflow_ray._remote.autoscaling import Autoscaler, NodeType, StartCheck, unreachable
from airflow_ray.cluster import driver
from airflow_ray.cluster.driver import WaitNotice
from airflow_ray.cluster.jobs import outcome
from airflow_ray.cluster.resources import TaskResources, check_feasible, not_started
from airflow_ray.exceptions import RayConfigurationError, RayScheduleTimeoutError

HEAD = {"Alive": True, "Resources": {"CPU": 1.0, "memory": 8e9}}
GPU_1 = {"CPU": 1.0, "GPU": 1.0}


def v2_reply(
    *,
    version: int = 7,
    seen: int = 40,
    current: int = 41,
    infeasible: list[dict[str, float]] | None = None,
    launching: dict[str, int] | None = None,
) -> bytes:
    from ray.core.generated import autoscaler_pb2

    reply = autoscaler_pb2.GetClusterStatusReply()
    state = reply.autoscaling_state
    state.autoscaler_state_version = version
    state.last_seen_cluster_resource_state_version = seen
    reply.cluster_resource_state.cluster_resource_state_version = current
    for bundle in infeasible or []:
        state.infeasible_resource_requests.add().resources_bundle.update(bundle)
    for name, count in (launching or {}).items():
        state.pending_instance_requests.add(ray_node_type_name=name, count=count)
    return reply.SerializeToString()


def cluster_config(groups: dict[str, tuple[dict[str, int], int]]) -> bytes:
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for name, (resources, max_count) in groups.items():
        group = config.node_group_configs.add(name=name, max_count=max_count)
        group.resources.update(resources)
    return config.SerializeToString()


# -- reading what the GCS holds ------------------------------------------------------------


def test_autoscaler_v2_state_gives_the_launches_and_the_refused_requests():
    scaler = autoscaling.from_v2_reply(v2_reply(infeasible=[{"CPU": 1, "GPU": 2}], launching={"gpu": 1}))
    assert scaler is not None
    assert (scaler.version, scaler.current) == (40, 41)
    assert scaler.pending == {"gpu": 1}
    assert scaler.describe_pending() == "gpu (1)"
    assert scaler.infeasible == [{"CPU": 1.0, "GPU": 2.0}]
    assert scaler.node_types is None


def test_no_v2_autoscaler_has_reported():
    assert autoscaling.from_v2_reply(v2_reply(version=0)) is None
    assert autoscaling.from_v2_reply(b"") is None


def test_autoscaler_v1_status_gives_the_launches_and_a_head_without_one_gives_none():
    now = 1000.0
    status = {
        "time": now - 2,
        "autoscaler_report": {
            "pending_launches": {"gpu": 1},
            "pending_nodes": [["10.0.0.5", "cpu", "setting-up"]],
        },
    }
    scaler = autoscaling.from_v1_status(json.dumps(status).encode(), now)
    assert scaler is not None and scaler.pending == {"gpu": 1, "cpu": 1}
    assert scaler.infeasible == [] and scaler.node_types is None
    # The monitor of a head without an autoscaler writes the document without a report.
    assert autoscaling.from_v1_status(json.dumps({"time": now}).encode(), now) is None
    # The read-only stand-in of a head started without an autoscaling config (the embedded one).
    readonly = {
        "time": now,
        "autoscaler_report": {"node_type_mapping": {"ab12": "node_ab12"}, "pending_launches": {}},
    }
    assert autoscaling.from_v1_status(json.dumps(readonly).encode(), now) is None
    # One left by an autoscaler that stopped long ago.
    assert autoscaling.from_v1_status(json.dumps({**status, "time": now - 3600}).encode(), now) is None
    assert autoscaling.from_v1_status(b"not json", now) is None


def test_published_node_types_and_their_limits():
    types = autoscaling.from_cluster_config(
        cluster_config({"gpu": ({"CPU": 8, "GPU": 1}, 4), "tpu": ({"TPU": 4}, 0)})
    )
    assert types == [NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, 4), NodeType("tpu", {"TPU": 4.0}, 0)]
    assert autoscaling.from_cluster_config(None) is None


# -- the decision ----------------------------------------------------------------------------


def test_without_an_autoscaler_only_the_live_nodes_count():
    assert unreachable(GPU_1, [HEAD], None) == {"CPU": 1.0, "GPU": 0.0}
    assert unreachable({"CPU": 1.0}, [HEAD], None) is None


def test_published_node_types_decide_at_once():
    scaler = Autoscaler(
        node_types=[NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, -1), NodeType("tpu", {"TPU": 8.0}, 0)]
    )
    assert unreachable(GPU_1, [HEAD], scaler) is None
    assert unreachable({"CPU": 1.0, "GPU": 2.0}, [HEAD], scaler) == {"CPU": 4.0, "GPU": 1.0}
    # A node type with max_workers 0 launches nothing.
    assert unreachable({"TPU": 1.0}, [HEAD], scaler) == {"TPU": 0.0}


def test_autoscaler_v2_refusal_counts_only_from_a_round_after_the_submit():
    refused = Autoscaler(version=40, infeasible=[{"CPU": 1.0, "GPU": 2.0}])
    demand = {"CPU": 1.0, "GPU": 2.0}
    assert unreachable(demand, [HEAD], refused, since_version=40) is None  # not seen yet: wait
    assert unreachable(demand, [HEAD], refused, since_version=39) == {"CPU": 1.0, "GPU": 0.0}
    # Another shape is not refused; a live node that fits (busy or not) always means wait.
    assert unreachable(GPU_1, [HEAD], refused, since_version=0) is None
    gpu_node = {"Alive": True, "Resources": {"CPU": 1.0, "GPU": 2.0}}
    assert unreachable(demand, [HEAD, gpu_node], refused, since_version=0) is None


def test_autoscaler_v1_never_refuses_a_request_it_may_launch_for():
    assert unreachable({"GPU": 64.0}, [HEAD], Autoscaler(pending={"gpu": 1})) is None


def test_check_feasible_names_the_autoscaler_when_there_is_one():
    resources = TaskResources.from_arguments(num_gpus=2)
    with pytest.raises(RayConfigurationError, match="No node of the Ray cluster of c can run") as plain:
        check_feasible(resources, [HEAD], where="c")
    assert "autoscaler" not in str(plain.value)
    scaler = Autoscaler(node_types=[NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, 2)])
    with pytest.raises(RayConfigurationError, match="no node type its autoscaler can launch") as scaled:
        check_feasible(resources, [HEAD], where="c", scaler=scaler)
    assert "the largest offers CPU=4, GPU=1" in str(scaled.value)
    check_feasible(TaskResources.from_arguments(num_gpus=1), [HEAD], where="c", scaler=scaler)


# -- waiting ---------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_start_check_times_out_and_looks_at_the_cluster_at_most_every_seconds(monkeypatch):
    import ray

    clock = _Clock()
    monkeypatch.setattr(autoscaling, "time", clock)
    reads = []
    monkeypatch.setattr(
        autoscaling, "read", lambda: reads.append(clock.now) or Autoscaler(pending={"gpu": 1})
    )
    monkeypatch.setattr(ray, "nodes", lambda: [HEAD])
    check = StartCheck(GPU_1, timeout=10.0, every=2.0)
    assert check.never() is None and reads == [] and not check.timed_out()
    clock.now += 2
    assert check.never() is None and len(reads) == 1
    assert check.pending() == "gpu (1)"
    clock.now += 1
    assert check.never() is None and len(reads) == 1
    clock.now += 7
    assert check.timed_out()
    assert not StartCheck(GPU_1, timeout=None).timed_out()


def test_the_timeout_error_names_the_setting_and_what_was_launching():
    error = not_started("d.t", GPU_1, 300.0, "gpu (1)", "connection 'ray'")
    assert isinstance(error, RayScheduleTimeoutError)
    message = str(error)
    assert (
        "Ray task d.t asking for CPU=1, GPU=1 did not start within the 300 s of [ray] schedule_timeout"
        in message
    )
    assert "(the autoscaler was launching: gpu (1))" in message
    assert "AIRFLOW__RAY__SCHEDULE_TIMEOUT" in message


def test_jobs_answers_of_a_refused_or_timed_out_task_are_the_same_errors():
    with pytest.raises(RayConfigurationError, match="no node type its autoscaler can launch"):
        outcome(
            {"event": "infeasible", "demand": GPU_1, "largest": {"CPU": 1, "GPU": 0}, "autoscaled": True},
            "t",
            "w",
            None,
        )
    with pytest.raises(RayScheduleTimeoutError, match="within the 5 s of \\[ray\\] schedule_timeout"):
        outcome({"event": "unscheduled", "demand": GPU_1, "timeout": 5, "pending": ""}, "t", "w", None)


def test_the_wait_notice_names_the_node_types_being_launched(monkeypatch, caplog):
    clock = _Clock()
    monkeypatch.setattr(driver, "time", clock)
    caplog.set_level(logging.INFO)
    notice = WaitNotice("t", every=15)
    clock.now += 15
    notice.tick(None, dict, lambda: "gpu_group (1)")
    clock.now += 15
    notice.tick(None, dict, lambda: "")
    first, second = caplog.messages
    assert first.endswith("; the cluster's autoscaler is launching nodes of type: gpu_group (1)")
    assert second.endswith("(free in the cluster now: unknown)")


def test_a_process_without_a_gcs_connection_of_its_own_sees_no_autoscaler(monkeypatch):
    import ray._private.worker

    # A Ray Client connection (ray://): this process is no driver, its worker has no GCS client.
    monkeypatch.setattr(ray._private.worker, "global_worker", object())
    assert autoscaling.read() is None
