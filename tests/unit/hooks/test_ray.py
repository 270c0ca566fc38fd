from __future__ import annotations

import json
import os

import pytest

from airflow_ray.cluster.address import AddressKind
from airflow_ray.exceptions import RayConfigurationError
from airflow_ray.hooks.ray import RayHook


@pytest.fixture
def conn_env():
    names = []

    def set_conn(conn_id, **fields):
        name = f"AIRFLOW_CONN_{conn_id.upper()}"
        os.environ[name] = json.dumps({"conn_type": "ray", **fields})
        names.append(name)

    yield set_conn
    for name in names:
        os.environ.pop(name, None)


def test_constructor_reads_nothing(conn_env):
    hook = RayHook("ray_never_created")
    assert hook.ray_conn_id == "ray_never_created"
    assert "settings" not in hook.__dict__


def test_missing_default_connection_means_embedded():
    settings = RayHook().settings
    assert settings.address.kind is AddressKind.EMBEDDED
    assert settings.namespace == "airflow"


def test_connection_fields(conn_env):
    conn_env(
        "ray_full",
        host="ray://head",
        port=10001,
        password="s3cret",
        extra={
            "namespace": "ml",
            "runtime_env": '{"pip": ["xgboost"]}',
            "init_kwargs": {"logging_level": "warning"},
        },
    )
    settings = RayHook("ray_full").settings
    assert settings.address.ray_init_address() == "ray://head:10001"
    assert settings.namespace == "ml"
    assert settings.token == "s3cret"
    assert settings.runtime_env == {"pip": ["xgboost"]}
    assert settings.init_kwargs == {"logging_level": "warning"}
    assert "s3cret" not in repr(settings)


def test_bad_runtime_env_json_names_the_connection(conn_env):
    conn_env("ray_badjson", host="head", extra={"runtime_env": "{pip: x}"})
    with pytest.raises(
        RayConfigurationError, match="connection 'ray_badjson' field runtime_env is not valid JSON"
    ):
        _ = RayHook("ray_badjson").settings


def test_missing_named_connection_is_an_error():
    with pytest.raises(RayConfigurationError, match="'ray_nope' does not exist"):
        _ = RayHook("ray_nope").settings


def test_connect_timeout_comes_from_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__RAY__CONNECT_TIMEOUT", "7")
    assert RayHook().connect_timeout == 7.0
    monkeypatch.setenv("AIRFLOW__RAY__CONNECT_TIMEOUT", "-2")
    with pytest.raises(RayConfigurationError, match="connect_timeout = '-2'"):
        _ = RayHook().connect_timeout
    assert RayHook(connect_timeout=3).connect_timeout == 3


@pytest.mark.parametrize(
    ("host", "extra", "jobs"),
    [
        ("http://head:8265", {}, True),
        ("https://head", {}, True),
        ("head:6379", {}, False),
        ("head:6379", {"transport": "jobs", "dashboard_url": "http://head:8265"}, True),
        ("", {"transport": "jobs"}, True),
        ("", {}, False),
    ],
)
def test_the_transport_follows_the_address_or_the_transport_field(conn_env, host, extra, jobs):
    from airflow_ray.cluster.driver import DriverTransport
    from airflow_ray.cluster.jobs import JobsTransport

    conn_env("ray_pick", host=host, extra=extra)
    transport = RayHook("ray_pick").get_transport()
    assert isinstance(transport, JobsTransport if jobs else DriverTransport)


def test_a_dashboard_address_with_transport_driver_is_refused(conn_env):
    conn_env("ray_mixed", host="http://head:8265", extra={"transport": "driver"})
    with pytest.raises(RayConfigurationError, match="GCS address"):
        RayHook("ray_mixed").get_transport()


def test_an_unknown_transport_is_named(conn_env):
    conn_env("ray_bad", host="head", extra={"transport": "grpc"})
    with pytest.raises(RayConfigurationError, match="transport='grpc' is not one of auto, driver, jobs"):
        _ = RayHook("ray_bad").settings


@pytest.fixture
def no_embedded_cluster(monkeypatch, tmp_path):
    """A state directory where no embedded cluster runs; starting one fails the test."""
    from airflow_ray.cluster.local import EmbeddedCluster

    def refuse(*args, **kwargs):
        raise AssertionError("test_connection started the embedded cluster")

    monkeypatch.setenv("AIRFLOW__RAY__EMBEDDED_DIR", str(tmp_path / "ray"))
    monkeypatch.setattr(EmbeddedCluster, "ensure_running", refuse)
    return tmp_path / "ray"


@pytest.mark.parametrize("extra", [{}, {"transport": "jobs"}])
def test_testing_the_embedded_cluster_says_it_does_not_run_and_starts_nothing(
    conn_env, no_embedded_cluster, extra
):
    conn_env("ray_local", extra=extra)
    ok, message = RayHook("ray_local").test_connection()
    assert ok, message
    assert message.startswith(
        f"Connection 'ray_local' uses the embedded Ray cluster of this machine, which does not run now "
        f"(state {no_embedded_cluster})."
    )
    assert "`airflow-ray local start`" in message and "first Ray task starts it" in message
    assert not (no_embedded_cluster / "cluster.json").exists()


def test_under_test_the_message_names_the_users_connection_not_the_temporary_id(
    conn_env, no_embedded_cluster
):
    from airflow_ray.hooks.ray import connection_under_test

    # Airflow's API server tests a copy of the connection under a random id (AIRFLOW_CONN_<id>).
    conn_env("Xq3vB9aT", port=0)
    token = connection_under_test.set("ray_cluster")
    try:
        ok, message = RayHook("Xq3vB9aT").test_connection()
    finally:
        connection_under_test.reset(token)
    assert ok and message.startswith("Connection 'ray_cluster' uses the embedded Ray cluster")
    assert "Xq3vB9aT" not in message


def test_a_bad_field_under_test_names_the_users_connection(conn_env):
    from airflow_ray.hooks.ray import connection_under_test

    conn_env("Xq3vB9aT", host="head:6379", extra={"runtime_env": "{pip: x}"})
    token = connection_under_test.set("ray_cluster")
    try:
        ok, message = RayHook("Xq3vB9aT").test_connection()
    finally:
        connection_under_test.reset(token)
    assert not ok and "connection 'ray_cluster' field runtime_env is not valid JSON" in message


def test_a_driver_connection_to_a_dashboard_fails_its_test_without_connecting(conn_env):
    conn_env("ray_dash_driver", host="http://head:8265", extra={"transport": "driver"})
    ok, message = RayHook("ray_dash_driver").test_connection()
    assert (
        not ok and "asks for transport 'driver' but its address http://head:8265 is a dashboard's" in message
    )


def test_a_dashboard_behind_an_ingress_gets_its_path_ca_bundle_and_proxy_headers(conn_env, tmp_path):
    conn_env(
        "ray_ingress",
        host="https://ray.example.com/ray/",
        password="tok",
        extra={"verify": str(tmp_path / "ca.pem"), "headers": {"X-Auth-Request-Token": "proxy-secret"}},
    )
    settings = RayHook("ray_ingress").settings
    assert settings.address.dashboard_url == "https://ray.example.com:443/ray"
    assert settings.verify == str(tmp_path / "ca.pem")
    assert settings.headers == {"X-Auth-Request-Token": "proxy-secret"}
    assert "proxy-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "verify"), [(None, True), ("", True), (False, False), ("false", False), ("true", True)]
)
def test_verify_is_true_false_or_a_path(conn_env, value, verify):
    conn_env("ray_verify", host="https://ray.example.com", extra={"verify": value})
    assert RayHook("ray_verify").settings.verify is verify


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"verify": 3}, "field verify=3 is neither true, false nor the path of a CA bundle"),
        ({"headers": ["X-Token: a"]}, "field headers must be a dict"),
        ({"headers": {"X-Token": 5}}, "these are not: 'X-Token'"),
    ],
)
def test_bad_verify_or_headers_are_named(conn_env, extra, message):
    conn_env("ray_bad_tls", host="https://ray.example.com", extra=extra)
    with pytest.raises(RayConfigurationError, match=message.replace("(", r"\(")):
        _ = RayHook("ray_bad_tls").settings
