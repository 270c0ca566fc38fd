"""The UI's *Test* button for ``ray`` connections, through a real ``airflow api-server``.

Each test posts to ``/api/v2/connections/test`` exactly what the UI's Test button posts for a
stored connection (built from the connection as the REST API returns it, as the UI builds it),
and checks what a user would see: the message, the connection it names, and that the API server
is still what it was afterwards: not a Ray driver, no embedded cluster started. No process of it
has loaded Ray's core, which is what would end a driver's process 60 s after its cluster stops.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_ray.cluster.local import EmbeddedCluster
from scripts.ports import free_port
from tests.integration.airflow_processes import AirflowApiServer

pytestmark = pytest.mark.integration


class ApiServer(AirflowApiServer):
    """The API server, called as the UI calls it."""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def store(self, conn_id: str, **fields: Any) -> None:
        """Save a connection as the UI's Add form does (empty fields are left out)."""
        status, answer = self.call(
            "POST", "/api/v2/connections", {"connection_id": conn_id, "conn_type": "ray", **fields}
        )
        assert status == 201, answer

    def test_from_ui(self, conn_id: str) -> tuple[int, Any]:
        """Press Test on a stored connection: the body is built as the UI builds it."""
        status, stored = self.call("GET", f"/api/v2/connections/{conn_id}")
        assert status == 200, stored
        return self.call("POST", "/api/v2/connections/test", ui_test_body(stored))

    def ray_loaded(self) -> list[int]:
        """The processes of the API server that have loaded Ray's core (it would make them drivers)."""
        tree = psutil.Process(self.process.pid)
        loaded = []
        for proc in [tree, *tree.children(recursive=True)]:
            try:
                if any("_raylet" in m.path for m in proc.memory_maps()):
                    loaded.append(proc.pid)
            except psutil.NoSuchProcess:
                continue
        return loaded


def ui_test_body(stored: dict[str, Any]) -> dict[str, Any]:
    """What the Test button of Airflow 3.3.2's connection list posts (airflow/ui, minified):

    ``{conn_type: n.conn_type, connection_id: n.connection_id, description: n.description ?? "",
    extra: n.extra === "" || n.extra === null ? "{}" : n.extra, host: n.host ?? "",
    login: n.login ?? "", password: n.password ?? "", port: Number(n.port), schema: n.schema ?? ""}``

    ``Number(null)`` is 0: a connection saved without a port is tested with port 0.
    """
    return {
        "conn_type": stored["conn_type"],
        "connection_id": stored["connection_id"],
        "description": stored.get("description") or "",
        "extra": "{}" if stored.get("extra") in ("", None) else stored["extra"],
        "host": stored.get("host") or "",
        "login": stored.get("login") or "",
        "password": stored.get("password") or "",
        "port": int(stored["port"] or 0),
        "schema": stored.get("schema") or "",
    }


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The API server's own embedded-cluster state directory (no cluster runs there at first)."""
    return tmp_path_factory.mktemp("uiray") / "ray"


@pytest.fixture(scope="module")
def api_server(
    airflow_db: Path, embedded_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    env = os.environ.copy()
    env.update(
        {
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__RAY__EMBEDDED_DIR": str(embedded_dir),
            # Long, so that a failure named from the first answer is told apart from a timeout.
            "AIRFLOW__RAY__CONNECT_TIMEOUT": "90",
        }
    )
    server = ApiServer.start_on(env, tmp_path_factory.mktemp("uiapi") / "api-server.log")
    try:
        yield server
    finally:
        server.stop()


def test_the_plugin_serves_the_readme(api_server: ApiServer):
    # The Providers page links the package's absolute Documentation URL (checked on the installed
    # wheel by test_installed_wheel.py); the plugin serves the installed version's README beside it.
    with urllib.request.urlopen(f"{api_server.url}/airflow-ray/readme", timeout=30) as answer:
        assert answer.read().decode().startswith("# airflow-ray")


@pytest.fixture(scope="module")
def local_ui(api_server: ApiServer) -> str:
    """The README's connection: an empty Address (and so no port)."""
    api_server.store("ray_local_ui")
    return "ray_local_ui"


def test_the_embedded_connection_is_looked_at_not_started(
    api_server: ApiServer, embedded_dir: Path, local_ui: str
):
    status, answer = api_server.test_from_ui(local_ui)
    assert status == 200, answer
    assert answer["status"] is True, answer
    message = answer["message"]
    assert message.startswith(
        f"Connection 'ray_local_ui' uses the embedded Ray cluster of this machine, which does not run now "
        f"(state {embedded_dir})."
    )
    assert "`airflow-ray local start`" in message
    assert EmbeddedCluster(embedded_dir).status() is None
    assert not (embedded_dir / "cluster.json").exists()
    assert api_server.ray_loaded() == []


def test_a_failure_names_the_users_connection(api_server: ApiServer):
    closed = free_port()  # nothing listens there
    api_server.store("ray_down_ui", host=f"127.0.0.1:{closed}")
    started = time.monotonic()
    status, answer = api_server.test_from_ui("ray_down_ui")
    assert status == 200, answer
    assert answer["status"] is False
    assert f"connection 'ray_down_ui' (address 127.0.0.1:{closed})" in answer["message"]
    assert "nothing answers" in answer["message"]
    assert time.monotonic() - started < 45  # named at once, not after the 90 s connect timeout
    assert api_server.ray_loaded() == []


def test_a_running_cluster_then_stopped_leaves_the_api_server_up(
    api_server: ApiServer, embedded_dir: Path, local_ui: str
):
    cluster = EmbeddedCluster(embedded_dir, num_cpus=1, object_store_memory=100 * 1024**2)
    head = cluster.ensure_running()
    try:
        # host:6379 form, the port inside the Address, the token in the password field.
        api_server.store("ray_gcs_ui", host=head.gcs_address, password=cluster.token())
        status, answer = api_server.test_from_ui("ray_gcs_ui")
        assert status == 200, answer
        assert answer["status"] is True, answer
        assert answer["message"] == (
            f"Connection 'ray_gcs_ui': connected to Ray {head.ray_version} at {head.gcs_address}: 1 node(s), 1 CPU, 0 GPU."
        )
        status, answer = api_server.test_from_ui(local_ui)
        assert answer["status"] is True, answer
        assert answer["message"].startswith(
            f"Connection 'ray_local_ui': connected to Ray {head.ray_version} at the embedded Ray cluster at "
            f"{head.gcs_address} (pid {head.pid}): 1 node(s), 1 CPU, 0 GPU."
        )
        assert api_server.ray_loaded() == []
    finally:
        assert cluster.stop()
    # Ray's core ends a driver's process 60 s after its cluster stops: no process of the API server
    # has loaded it, so none has that end coming.
    assert api_server.ray_loaded() == []
    assert api_server.process.poll() is None, api_server.log()
    status, _ = api_server.call("GET", "/api/v2/monitor/health")
    assert status == 200
    status, answer = api_server.test_from_ui("ray_gcs_ui")
    assert status == 200 and answer["status"] is False
    assert f"connection 'ray_gcs_ui' (address {head.gcs_address})" in answer["message"]
    assert api_server.ray_loaded() == []


def test_without_the_plugin_airflow_refuses_the_uis_port_zero(api_server: ApiServer):
    """The Airflow 3.3.2 bug the plugin works around for ``ray`` connections (apache/airflow#73298):
    a connection of another type saved without a port is refused as "a different endpoint"."""
    status, answer = api_server.call(
        "POST", "/api/v2/connections", {"connection_id": "generic_ui", "conn_type": "generic", "host": "h"}
    )
    assert status == 201, answer
    status, answer = api_server.test_from_ui("generic_ui")
    assert status == 400
    assert "The host or port to test differs from the stored connection" in answer["detail"]
