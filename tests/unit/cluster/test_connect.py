"""The fast checks before ``ray.init``, against real servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time

import pytest

from airflow_ray.cluster import connect
from airflow_ray.exceptions import RayConnectionError


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def http1_server():
    """Answers anything with an HTTP/1.1 status line, as aiohttp (Ray's dashboard) does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    thread.join(5)
    server.close()


@pytest.fixture
def silent_server():
    """Accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_an_http_server_is_named_at_once(http_server):
    started = time.monotonic()
    with pytest.raises(RayConnectionError) as info:
        connect.check_speaks_grpc("127.0.0.1", http_server, where="connection 'ray_web'", timeout=120)
    # Named from its answer, not after the timeout a silent server gets.
    assert time.monotonic() - started < 60
    message = str(info.value)
    # Python's http.server answers an HTTP/2 preface with a bare HTML error page (HTTP/0.9 style).
    assert (
        f"127.0.0.1:{http_server} of connection 'ray_web' answers, but not in HTTP/2 (it sent b'<!DOCTYPE"
        in message
    )
    assert f"http://127.0.0.1:{http_server}" in message and "host:6379" in message


def test_an_http1_server_is_named_with_its_status_line(http1_server):
    with pytest.raises(
        RayConnectionError, match=r"answers HTTP \('HTTP/1.1 400 Bad Request'\), not Ray's gRPC"
    ):
        connect.check_speaks_grpc("127.0.0.1", http1_server, where="connection 'ray_web'")


def test_a_silent_server_passes_after_the_timeout(silent_server):
    started = time.monotonic()
    connect.check_speaks_grpc("127.0.0.1", silent_server, where="x", timeout=0.5)
    # It waited for the timeout, and no longer than a loaded machine makes of it.
    assert 0.4 < time.monotonic() - started < 30


def test_ray_logs_go_through_python_logging_at_their_own_level(caplog, monkeypatch):
    import subprocess
    import sys

    import ray  # noqa: F401 - gives the "ray" logger its stderr handler, as in a task

    fresh = subprocess.run(
        [sys.executable, "-c", "import logging, ray; print(bool(logging.getLogger('ray').handlers))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fresh.stdout.strip() == "True", "Ray no longer adds a handler: this test tests nothing"
    caplog.set_level(logging.INFO)
    ray_logger = logging.getLogger("ray")
    if not ray_logger.handlers:  # an earlier test of this process took it off already: as Ray has it
        monkeypatch.setattr(ray_logger, "handlers", [logging.StreamHandler()])
        monkeypatch.setattr(ray_logger, "propagate", False)
    connect.ray_logs_to_python_logging()
    ray_logger = logging.getLogger("ray")
    assert ray_logger.handlers == [] and ray_logger.propagate
    connect.ray_logs_to_python_logging()  # again: one filter, not two
    assert len(logging.getLogger("ray._private.worker").filters) == 1
    worker = logging.getLogger("ray._private.worker")
    worker.info("Connecting to existing Ray cluster at address: %s...", "127.0.0.1:1")
    worker.warning("SIGTERM handler is not set because current thread is not the main thread.")
    ray_records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("ray")]
    assert ray_records == [("INFO", "Connecting to existing Ray cluster at address: 127.0.0.1:1...")]


_DIED = (
    "Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs."
)


@pytest.fixture
def ray_init(monkeypatch):
    """``ray.init`` raising the given errors in turn, then returning; counts ``ray.shutdown``."""
    import ray

    calls = {"init": 0, "shutdown": 0, "errors": []}

    def init(**_kwargs):
        calls["init"] += 1
        if calls["errors"]:
            raise calls["errors"].pop(0)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1))
    return calls


def test_a_client_server_that_died_starting_is_tried_again(ray_init, caplog):
    ray_init["errors"] = [ConnectionAbortedError(_DIED), ConnectionAbortedError(_DIED)]
    with caplog.at_level(logging.WARNING, logger="airflow_ray.cluster.connect"):
        connect.init_bounded({"address": "ray://127.0.0.1:10001"}, where="connection 'rc'", timeout=30)
    assert ray_init == {"init": 3, "shutdown": 2, "errors": []}
    assert [r.getMessage() for r in caplog.records] == [
        "The Ray Client server of connection 'rc' died as it started (ray-project/ray#63202); "
        f"trying again ({n} of 3)"
        for n in (2, 3)
    ]


def test_a_client_server_that_keeps_dying_fails_after_three_tries_with_rays_reason(ray_init):
    ray_init["errors"] = [ConnectionAbortedError(_DIED) for _ in range(4)]
    with pytest.raises(RayConnectionError) as info:
        connect.init_bounded({"address": "ray://127.0.0.1:10001"}, where="connection 'rc'", timeout=30)
    assert ray_init["init"] == 3 and len(ray_init["errors"]) == 1
    assert str(info.value).startswith(
        "Connecting to the Ray cluster of connection 'rc' failed (3 tries): ConnectionAbortedError: "
        "Initialization failure from server:"
    )
    assert "Starting Ray client server failed" in str(info.value)


def test_any_other_failure_is_not_tried_again(ray_init):
    ray_init["errors"] = [ConnectionAbortedError("Initialization failure from server: no"), None]
    with pytest.raises(RayConnectionError, match=r"failed: ConnectionAbortedError: Initialization failure"):
        connect.init_bounded({"address": "ray://127.0.0.1:10001"}, where="connection 'rc'", timeout=30)
    assert ray_init["init"] == 1 and ray_init["shutdown"] == 1


@pytest.fixture
def driver(monkeypatch, ray_init):
    """What Ray says this process is a driver of (``driver["now"]``), and the ``attach`` calls."""
    from airflow_ray import version_compat

    state = {"now": None, "attached": []}
    monkeypatch.setattr(version_compat, "driver_identity", lambda: state["now"])
    monkeypatch.setattr(version_compat, "driver_address", lambda address: address)
    monkeypatch.setattr(
        connect, "attach", lambda address, kind, **kw: state["attached"].append((address, kw))
    )
    state["calls"] = ray_init
    return state


def _ensure(address: str = "10.0.0.2:6379", namespace: str = "airflow", token: str | None = "t") -> bool:
    from airflow_ray.cluster.address import AddressKind

    return connect.ensure_driver(
        address,
        AddressKind.GCS,
        token=token,
        namespace=namespace,
        init_kwargs={"log_to_driver": False},
        where=f"connection 'c' (address {address})",
        timeout=5,
    )


def _identity(
    address: str = "10.0.0.2:6379", namespace: str = "airflow", token: str = "t", references: int = 0
):
    from airflow_ray.version_compat import DriverIdentity

    return DriverIdentity(address, namespace, token, references)


def test_a_driver_connects_when_it_is_none_and_stays_when_it_is_there(driver):
    assert _ensure() is True
    assert driver["attached"] == [
        (
            "10.0.0.2:6379",
            {
                "token": "t",
                "init_kwargs": {"log_to_driver": False, "namespace": "airflow"},
                "where": "connection 'c' (address 10.0.0.2:6379)",
                "timeout": 5,
            },
        )
    ]
    driver["now"] = _identity()
    assert _ensure() is False and _ensure(token=None) is False
    assert len(driver["attached"]) == 1 and driver["calls"]["shutdown"] == 0


@pytest.mark.parametrize(
    "now", [_identity("10.0.0.9:6379"), _identity(namespace="other"), _identity(token="old")], ids=str
)
def test_a_driver_of_another_cluster_holding_nothing_there_is_moved_over(driver, now, caplog):
    driver["now"] = now
    with caplog.at_level(logging.INFO, logger="airflow_ray.cluster.connect"):
        assert _ensure() is True
    assert driver["calls"]["shutdown"] == 1 and len(driver["attached"]) == 1
    assert f"driver of the cluster at {now.address}" in caplog.text


def test_a_driver_holding_references_in_another_cluster_is_not_disconnected(driver):
    driver["now"] = _identity("10.0.0.9:6379", references=2)
    with pytest.raises(RayConnectionError) as info:
        _ensure()
    message = str(info.value)
    assert "cluster at 10.0.0.9:6379" in message and "connection 'c' (address 10.0.0.2:6379)" in message
    assert "holds 2 object reference(s)" in message and "transport 'jobs'" in message
    assert driver["calls"]["shutdown"] == 0 and driver["attached"] == []
