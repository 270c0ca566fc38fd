"""The driver transport without a cluster: the notice for a task that has not started, and what
DriverTransport answers from its connection alone (nothing connects; the rest needs Ray and is
covered by the integration suite)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from airflow_ray.cluster import driver
from airflow_ray.cluster.driver import DriverTransport, WaitNotice
from airflow_ray.hooks.ray import RayHook


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(driver, "time", clock)
    return clock


FREE = {"CPU": 1.23456, "GPU": 0.0, "node:10.0.0.1": 1.0, "node:__internal_head__": 1.0}


def test_the_notice_is_silent_until_every_seconds_have_passed(clock, caplog):
    caplog.set_level(logging.INFO)
    asked = []
    notice = WaitNotice("train", every=15)

    def free() -> dict[str, float]:
        asked.append(clock.now)
        return FREE

    clock.now += 14.9
    notice.tick(logging.getLogger("t"), free)
    assert caplog.messages == [] and asked == []  # not even the cluster is asked

    clock.now += 0.1
    notice.tick(logging.getLogger("t"), free)
    (message,) = caplog.messages
    assert message.startswith("Ray task train has not started after 15 s")
    assert "runtime_env" in message
    assert "{'CPU': 1.23, 'GPU': 0.0}" in message  # rounded, without Ray's node: resources


def test_the_notice_speaks_again_every_seconds_after_it_last_spoke(clock, caplog):
    caplog.set_level(logging.INFO)
    notice = WaitNotice("t", every=10)
    clock.now += 25  # a long silent poll: one notice, not two
    notice.tick(None, lambda: {})
    clock.now += 9
    notice.tick(None, lambda: {})
    clock.now += 1
    notice.tick(None, lambda: {})
    assert [m.split(":")[0] for m in caplog.messages] == [
        "Ray task t has not started after 25 s",
        "Ray task t has not started after 35 s",
    ]


def test_with_every_zero_each_tick_speaks(caplog):
    caplog.set_level(logging.INFO)
    notice = WaitNotice("t", every=0)
    notice.tick(None, lambda: {"CPU": 2.0})
    notice.tick(None, lambda: {"CPU": 2.0})
    assert len(caplog.messages) == 2


def test_free_resources_that_cannot_be_read_are_unknown(caplog):
    caplog.set_level(logging.INFO)

    def broken() -> dict[str, float]:
        raise RuntimeError("GCS unreachable")

    WaitNotice("t", every=0).tick(None, broken)
    assert caplog.messages[0].endswith("(free in the cluster now: unknown)")
    WaitNotice("t", every=0).tick(None, dict)
    assert caplog.messages[1].endswith("(free in the cluster now: unknown)")


@pytest.fixture
def remote_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    extra = {"namespace": "team_ns", "dashboard_url": "http://dash:8265/"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_REMOTE_UNIT",
        json.dumps({"conn_type": "ray", "host": "ray://10.1.2.3", "port": 10001, "extra": extra}),
    )
    return "ray_remote_unit"


def test_the_driver_transport_answers_from_its_connection_without_connecting(remote_conn):
    ray_was_imported = "ray" in sys.modules
    transport = DriverTransport(RayHook(remote_conn))
    assert transport.conn_id == remote_conn
    assert transport.namespace == "team_ns"
    assert DriverTransport(RayHook(remote_conn), "other_ns").namespace == "other_ns"
    assert transport.link(driver.Call("t", "id")) == "http://dash:8265"
    assert transport._embedded_gone() is False  # not the embedded cluster: never asked
    assert transport.job_id(driver.Call("t", "id")) is None  # only a Ray driver follows its calls
    assert "owner" not in transport.__dict__  # no owner actor looked up
    if not ray_was_imported:
        assert "ray" not in sys.modules


def test_without_a_dashboard_the_driver_transport_gives_no_link(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RAY_NO_DASH", json.dumps({"conn_type": "ray", "host": "ray://h"}))
    assert DriverTransport(RayHook("ray_no_dash")).link(driver.Call("t", "id")) is None
