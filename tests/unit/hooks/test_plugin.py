"""The provider's API-server plugin: the connection-test middleware (where Airflow needs it) and
the README route."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from airflow_ray.hooks.connection_test import TEST_PATH, ConnectionTestMiddleware, rewrite_test_request
from airflow_ray.hooks.plugin import URL_PREFIX, RayPlugin, readme_app, root_middlewares
from airflow_ray.hooks.ray import connection_under_test
from airflow_ray.version_compat import connection_test_refuses_port_zero

# What the UI's Test button posts for a `ray` connection saved without a port or password
# (airflow/ui: `port: Number(connection.port)`, `password: connection.password ?? ""`).
UI_BODY = {
    "connection_id": "ray_cluster",
    "conn_type": "ray",
    "description": "",
    "extra": "{}",
    "host": "head:6379",
    "login": "",
    "password": "",
    "port": 0,
    "schema": "",
}


def test_a_ray_connections_port_zero_is_dropped():
    body, conn_id = rewrite_test_request(json.dumps(UI_BODY).encode())
    assert conn_id == "ray_cluster"
    assert json.loads(body) == {k: v for k, v in UI_BODY.items() if k != "port"}


@pytest.mark.parametrize(
    "sent",
    [
        {**UI_BODY, "conn_type": "http"},  # another type: untouched
        {**UI_BODY, "port": 6379},  # a real port: untouched
        [1, 2],  # not a connection: Airflow answers it
    ],
)
def test_anything_else_passes_unchanged(sent):
    raw = json.dumps(sent).encode()
    body, _ = rewrite_test_request(raw)
    assert body == raw


def test_invalid_json_passes_unchanged():
    assert rewrite_test_request(b"{nope") == (b"{nope", None)


@pytest.fixture
def client():
    """An app like Airflow's API server: a sync endpoint (run in a worker thread) behind the
    middleware, plus the README route mounted as the plugin mounts it."""
    app = FastAPI()
    seen: list[dict] = []

    @app.post(TEST_PATH)
    def test_connection(body: dict, request: Request) -> dict:
        seen.append(
            {
                "body": body,
                "under_test": connection_under_test.get(),
                "content_length": request.headers["content-length"],
            }
        )
        return {"status": True}

    app.add_middleware(ConnectionTestMiddleware)
    app.mount(URL_PREFIX, readme_app)
    with TestClient(app) as test_client:
        test_client.seen = seen  # type: ignore[attr-defined]
        yield test_client


def test_the_endpoint_sees_the_stored_port_and_the_users_connection_id(client):
    assert client.post(TEST_PATH, json=UI_BODY).json() == {"status": True}
    (seen,) = client.seen
    assert "port" not in seen["body"]
    assert seen["under_test"] == "ray_cluster"
    assert int(seen["content_length"]) == len(json.dumps(seen["body"]).encode())
    assert connection_under_test.get() is None


def test_other_connection_types_reach_the_endpoint_as_sent(client):
    client.post(TEST_PATH, json={**UI_BODY, "conn_type": "http"})
    (seen,) = client.seen
    assert seen["body"]["port"] == 0 and seen["under_test"] is None


def test_the_readme_is_served(client):
    answer = client.get(f"{URL_PREFIX}/readme")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.text.startswith("# airflow-ray")
    assert client.get(f"{URL_PREFIX}/other").status_code == 404


def test_the_plugin_is_valid_and_airflow_loads_it():
    from airflow import plugins_manager

    assert plugins_manager.is_valid_plugin(RayPlugin)
    # Through the airflow.plugins entry point: loaded whatever [core] lazy_discover_providers says.
    apps, middlewares = plugins_manager.get_fastapi_plugins()
    assert [a["app"] for a in apps if a["url_prefix"] == URL_PREFIX] == [readme_app]
    assert ConnectionTestMiddleware in [m["middleware"] for m in middlewares]


@pytest.mark.parametrize(
    ("version", "refuses"),
    [
        ("3.3.0", True),
        ("3.3.1", True),
        ("3.3.2", True),  # the installed one: tests/integration/test_connection_ui.py shows the 400
        ("3.3.5rc1", True),
        ("3.4.0.dev0", False),  # main, with apache/airflow#73298
        ("3.4.0", False),
        ("4.0.0", False),
    ],
)
def test_the_airflow_versions_that_refuse_port_zero(version, refuses):
    assert connection_test_refuses_port_zero(version) is refuses


def test_the_middleware_is_installed_only_where_airflow_refuses_port_zero():
    assert root_middlewares("3.3.2") == [
        {"middleware": ConnectionTestMiddleware, "name": "airflow-ray connection test"}
    ]
    assert root_middlewares("3.4.0") == []
    # The installed Airflow decides what the plugin class carries.
    assert RayPlugin.fastapi_root_middlewares == root_middlewares()
