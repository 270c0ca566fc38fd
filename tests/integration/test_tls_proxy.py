"""A dashboard as deployed: behind a TLS reverse proxy under a path (``https://host/ray/``), its
certificate signed by a private CA, the proxy asking for a header of its own.

The proxy (:mod:`tests.integration.tls_proxy`) is a real HTTPS server in its own process before
the embedded cluster's dashboard, with certificates from ``trustme``; tasks go through it with
the Jobs API transport, and it is restarted once while a deferred task is followed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_ray.operators.ray import RayPythonOperator
from tests.integration.dagrun import run_dag, task_states, xcom, xcom_row
from tests.integration.tls_proxy import TlsProxy

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
HEADER, SECRET = "X-Auth-Request-Token", "proxy-secret-7f3a"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA (``ca.pem``) and the proxy's certificate for 127.0.0.1 and localhost."""
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    with open(folder / "server.pem", "wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    return folder


@pytest.fixture(scope="module")
def proxy(ray_cluster, tls: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    head = ray_cluster.status()
    assert head is not None
    log = tmp_path_factory.mktemp("proxy") / "proxy.log"
    running = TlsProxy.start(
        head.dashboard_url, "/ray", tls / "server.pem", tls / "server.key", f"{HEADER}={SECRET}", log
    )
    yield running
    running.stop()


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, ray_cluster, proxy: TlsProxy, **extra) -> str:
    """A ``ray`` connection to the cluster through the proxy, as a team behind an ingress writes it."""
    document = {
        "conn_type": "ray",
        "host": f"https://localhost:{proxy.port}/ray/",
        "password": ray_cluster.token(),
        "extra": extra,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(document))
    return conn_id


@pytest.fixture
def ingress(monkeypatch, ray_cluster, proxy, tls) -> str:
    return connection(
        monkeypatch, "ray_ingress", ray_cluster, proxy, verify=str(tls / "ca.pem"), headers={HEADER: SECRET}
    )


def make_array(mb: int) -> np.ndarray:
    return np.arange(mb * MB // 8, dtype=np.float64)


def test_tasks_run_through_the_proxy_and_hand_over_their_results(ingress: str, proxy: TlsProxy):
    with DAG("x_tls_proxy", schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(
            task_id="produce", python_callable=make_array, op_args=[2], ray_conn_id=ingress
        )

        @task.ray(ray_conn_id=ingress)
        def total(array: np.ndarray) -> float:
            return float(array.sum())

        @task
        def in_airflow(value: float) -> float:
            return value

        in_airflow(total(produced.output))
    dag_run = run_dag(dag)
    assert task_states(dag_run) == dict.fromkeys(["produce", "total", "in_airflow"], "success")
    assert xcom_row(dag_run, "produce")["size_bytes"] == 2 * MB  # kept in the cluster
    assert xcom(dag_run, "in_airflow") == float(make_array(2).sum())
    # The task's "Ray job" link keeps the proxy's path.
    link = xcom(dag_run, "produce", key="ray_dashboard_url")
    assert link.startswith(f"https://localhost:{proxy.port}/ray/#/jobs/airflow-ray-"), link


def test_a_long_output_is_followed_over_the_logs_tail_through_the_proxy(ingress: str, ray_cluster, capfd):
    from tests.integration.dashboard_log import dashboard_lines, dashboard_logs
    from tests.integration.waiting import wait_until

    def chatty() -> int:
        for i in range(200):
            print(f"through the proxy {i} " + "." * 1000, flush=True)
            time.sleep(0.01)
        return 200

    since = dashboard_logs(ray_cluster)
    with DAG("x_tls_tail", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="chatty", python_callable=chatty, ray_conn_id=ingress, poll_interval=0.25)
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"chatty": "success"}
    shown = [int(n) for n in re.findall(r"through the proxy (\d+) \.{1000}", capfd.readouterr().out)]
    assert shown == list(range(200))  # each line once, in order

    def tail_through_the_proxy() -> list[str]:
        return [line for line in dashboard_lines(ray_cluster, since) if "/logs/tail " in line]

    # The proxy carried the websocket of the Jobs API's tail to the dashboard.
    wait_until(tail_through_the_proxy, 60, "the log tail's websocket through the proxy", every=1.0)


def test_a_deferred_task_is_followed_across_a_restart_of_the_proxy(
    ingress: str, proxy: TlsProxy, tmp_path: Path, capfd, caplog
):
    marker = tmp_path / "steps"

    def steps(path: str) -> int:
        for step in range(16):
            with open(path, "a") as out:
                out.write(f"step {step}\n")
            print(f"step {step}", flush=True)
            time.sleep(0.5)
        return 16

    with DAG("x_tls_proxy_restart", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="steps", python_callable=steps, op_args=[str(marker)], ray_conn_id=ingress,
            deferrable=True, poll_interval=0.5,
        )  # fmt: skip

    restarted = threading.Event()

    def restart_when_running() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if marker.exists() and "step 2" in marker.read_text():
                proxy.restart(down_for=3)
                restarted.set()
                return
            time.sleep(0.1)

    restarter = threading.Thread(target=restart_when_running, daemon=True)
    restarter.start()
    dag_run = run_dag(dag)
    restarter.join(timeout=60)
    out = capfd.readouterr()
    assert restarted.is_set(), "the task never reached step 2"
    assert "step 2" in marker.read_text() and "step 15" in marker.read_text()
    assert task_states(dag_run) == {"steps": "success"}, out.out[-3000:]
    assert xcom(dag_run, "steps") == 16
    # The triggerer's client met the outage and tried again, saying so, and the log kept following.
    assert "trying again in" in caplog.text, caplog.text[-3000:]
    assert "step 15" in out.out + caplog.text


def test_a_private_ca_without_verify_fails_at_once_saying_what_to_set(monkeypatch, ray_cluster, proxy):
    from airflow_ray.hooks.ray import RayHook

    conn_id = connection(monkeypatch, "ray_ingress_untrusted", ray_cluster, proxy, headers={HEADER: SECRET})
    started = time.monotonic()
    ok, message = RayHook(conn_id).test_connection()
    took = time.monotonic() - started
    assert not ok
    assert "its certificate is not trusted (unable to get local issuer certificate)" in message, message
    assert "`verify` extra to the path of that CA's PEM bundle" in message
    print(f"an untrusted certificate was refused in {took:.2f} s")


def test_a_proxy_that_wants_its_header_says_so(monkeypatch, ray_cluster, proxy, tls):
    from airflow_ray.hooks.ray import RayHook

    conn_id = connection(monkeypatch, "ray_ingress_noheader", ray_cluster, proxy, verify=str(tls / "ca.pem"))
    ok, message = RayHook(conn_id).test_connection()
    assert not ok
    assert f"proxy: {HEADER} missing or wrong" in message, message
