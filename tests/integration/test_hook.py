"""RayHook against a real cluster: every connection mode, and every way of failing fast."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from airflow_ray.exceptions import RayConnectionError
from airflow_ray.hooks.ray import RayHook
from scripts.ports import free_port

pytestmark = pytest.mark.integration

# A failure that is named "at once" comes from the server's first answer; one that is not waits
# for the whole connect timeout. With a long timeout the two stay apart however loaded the machine.
SLOW = 300
FAST = 60


@contextmanager
def connection(conn_id: str, **fields) -> Iterator[None]:
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[name] = json.dumps({"conn_type": "ray", **fields})
    try:
        yield
    finally:
        del os.environ[name]


def node_count(ray) -> int:
    return len([n for n in ray.nodes() if n["Alive"]])


def test_gcs_address_with_token(ray_cluster):
    head = ray_cluster.status()
    with connection("ray_gcs", host=head.gcs_address, password=ray_cluster.token()):
        ok, message = RayHook("ray_gcs").test_connection()
    assert ok, message
    assert f"at {head.gcs_address}: 1 node(s), 4 CPU, 0 GPU" in message


def test_host_and_port_fields(ray_cluster):
    head = ray_cluster.status()
    with connection("ray_fields", host="127.0.0.1", port=head.gcs_port, password=ray_cluster.token()):
        ray = RayHook("ray_fields").get_conn()
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42


def test_ray_client_address(ray_cluster):
    head = ray_cluster.status()
    with connection("ray_client", host=head.client_address, password=ray_cluster.token()):
        ray = RayHook("ray_client", connect_timeout=60).get_conn()
        try:
            assert ray.util.client.ray.is_connected()
            assert ray.get(ray.remote(lambda: "via client").remote()) == "via client"
        finally:
            ray.shutdown()


def test_wrong_token_fails_fast_and_says_so(ray_cluster):
    head = ray_cluster.status()
    with connection("ray_badtoken", host=head.gcs_address, password="not-the-token"):
        started = time.monotonic()
        with pytest.raises(RayConnectionError) as info:
            RayHook("ray_badtoken", connect_timeout=SLOW).get_conn()
    assert time.monotonic() - started < FAST
    message = str(info.value)
    assert "'ray_badtoken'" in message and head.gcs_address in message
    assert "token" in message and "password field" in message


def test_unreachable_address_fails_fast_and_names_the_connection(ray_cluster):
    port = free_port()  # nothing listens there
    with connection("ray_down", host=f"127.0.0.1:{port}"):
        started = time.monotonic()
        with pytest.raises(RayConnectionError) as info:
            RayHook("ray_down", connect_timeout=SLOW).get_conn()
        ok, message = RayHook("ray_down", connect_timeout=SLOW).test_connection()
    assert time.monotonic() - started < FAST
    assert f"connection 'ray_down' (address 127.0.0.1:{port})" in str(info.value)
    assert "nothing answers" in str(info.value) and "running" in str(info.value)
    assert not ok and "nothing answers" in message


def test_silent_service_is_bounded_by_the_connect_timeout(ray_cluster):
    """A port that accepts connections but never speaks Ray (a firewall, another service)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    try:
        with connection("ray_silent", host=f"127.0.0.1:{port}"):
            started = time.monotonic()
            with pytest.raises(RayConnectionError) as info:
                RayHook("ray_silent", connect_timeout=4).get_conn()
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        server.close()
    assert elapsed < 25, elapsed  # bounded by its 4 s, not by the default 30 s
    assert f"127.0.0.1:{port}" in str(info.value) and "'ray_silent'" in str(info.value)


def test_unknown_connection_id_is_an_error_not_the_embedded_cluster(ray_cluster):
    with pytest.raises(Exception, match="'ray_typo' does not exist"):
        RayHook("ray_typo").get_conn()


def test_hook_reconnects_to_the_embedded_cluster_after_another(ray_cluster):
    head = ray_cluster.status()
    with connection(
        "ray_gcs2", host=head.gcs_address, password=ray_cluster.token(), extra={"namespace": "other"}
    ):
        ray = RayHook("ray_gcs2").get_conn()
        assert ray.get_runtime_context().namespace == "other"
    ray = RayHook().get_conn()
    assert ray.get_runtime_context().namespace == "airflow"
    assert node_count(ray) == 1


def test_ray_client_with_a_wrong_token_fails_fast_with_the_servers_reason(ray_cluster):
    head = ray_cluster.status()
    with connection("ray_client_badtoken", host=head.client_address, password="not-the-token"):
        started = time.monotonic()
        with pytest.raises(RayConnectionError) as info:
            RayHook("ray_client_badtoken", connect_timeout=SLOW).get_conn()
        elapsed = time.monotonic() - started
        ok, message = RayHook("ray_client_badtoken", connect_timeout=SLOW).test_connection()
    assert elapsed < FAST, elapsed  # was the whole connect timeout, then "did not finish"
    assert str(info.value) == (
        f"The Ray Client server of connection 'ray_client_badtoken' (address {head.client_address}) "
        f"refused us: Invalid or missing authentication token (put the cluster's token "
        f"(`ray get-auth-token` on the head node) in the connection's password field)."
    )
    assert not ok and message == str(info.value)


def test_a_gcs_address_that_answers_http_fails_fast_and_says_so(ray_cluster):
    """A driver connection pointed at the cluster's dashboard (an HTTP server)."""
    head = ray_cluster.status()
    dashboard = head.dashboard_url.removeprefix("http://")
    with connection("ray_at_dashboard", host=dashboard):
        started = time.monotonic()
        with pytest.raises(RayConnectionError) as info:
            RayHook("ray_at_dashboard", connect_timeout=SLOW).get_conn()
        elapsed = time.monotonic() - started
    assert elapsed < FAST, elapsed  # was the whole connect timeout, then "no answer"
    message = str(info.value)
    assert message.startswith(
        f"{dashboard} of connection 'ray_at_dashboard' (address {dashboard}) answers HTTP ('HTTP/1."
    )
    assert f"make the address {head.dashboard_url}" in message


def test_ray_client_without_a_token_fails_fast_with_the_servers_reason(ray_cluster):
    """In a fresh process: this one has presented the cluster's token to Ray already."""
    head = ray_cluster.status()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env["AIRFLOW_CONN_RAY_CLIENT_NOTOKEN"] = json.dumps({"conn_type": "ray", "host": head.client_address})
    env["HOME"] = str(ray_cluster.state_dir)  # no ~/.ray/auth_token of this machine's user
    script = (
        "import time\n"
        "from airflow_ray.hooks.ray import RayHook\n"
        "started = time.monotonic()\n"
        "try:\n"
        f"    RayHook('ray_client_notoken', connect_timeout={SLOW}).get_conn()\n"
        "except Exception as err:\n"
        "    print('ERROR', round(time.monotonic() - started, 1), err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=SLOW + 60
    )
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    _, elapsed, message = line.split(" ", 2)
    assert float(elapsed) < FAST, line
    assert message.startswith(
        f"The Ray Client server of connection 'ray_client_notoken' (address {head.client_address}) "
        f"refused us: Invalid or missing authentication token"
    )


def test_rays_driver_chatter_is_logged_at_its_level_not_written_to_stderr(ray_cluster):
    """Airflow's task runner logs each stderr line of a task at ERROR; Ray's "Connecting to
    existing Ray cluster ..." used to be three such lines at the top of every Ray task log."""
    head = ray_cluster.status()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env["AIRFLOW_CONN_RAY_CHATTY"] = json.dumps(
        {"conn_type": "ray", "host": head.gcs_address, "password": ray_cluster.token()}
    )
    # Airflow's own logging, as in a task process (it configures itself when airflow is imported).
    script = "from airflow_ray.hooks.ray import RayHook\nRayHook('ray_chatty').get_conn()\n"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=SLOW + 60
    )
    assert done.returncode == 0, done.stderr
    for chatter in ("SIGTERM handler", "Connecting to existing Ray cluster", "Connected to Ray cluster"):
        assert chatter not in done.stderr, done.stderr
    logged = done.stdout.splitlines()
    # Ray names the head by the address it resolved for it, with the GCS port.
    connecting = re.compile(
        rf"\[info +\] Connecting to existing Ray cluster at address: \S+:{head.gcs_port}\.\.\. +\[ray\._private\.worker\]"
    )
    assert [line for line in logged if connecting.search(line)], done.stdout
    assert not [line for line in logged if "SIGTERM handler" in line]
