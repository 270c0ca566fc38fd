"""The embedded local cluster: started once, shared by processes, stopped alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from airflow_ray.cluster.local import EmbeddedCluster, _session_members
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_concurrent_starts_share_one_head_and_stop_touches_only_it(ray_cluster):
    state_dir = Path(tempfile.mkdtemp(prefix="afr-emb-"))
    script = (
        "import sys, json; from airflow_ray.cluster.local import EmbeddedCluster; "
        "head = EmbeddedCluster(sys.argv[1], num_cpus=1).ensure_running(); print(json.dumps(head.pid))"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", script, str(state_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    pids = [json.loads(p.communicate(timeout=120)[0]) for p in starters]
    assert all(p.returncode == 0 for p in starters)
    assert pids[0] == pids[1], "two concurrent starts made two clusters"

    cluster = EmbeddedCluster(state_dir)
    head = cluster.status()
    assert head is not None and head.pid == pids[0]
    assert oct(os.stat(cluster.token_path).st_mode & 0o777) == "0o600"
    members = _session_members(head.pid)
    assert len(members) > 3  # gcs_server, raylet, agents ...

    other_head = ray_cluster.status()
    assert cluster.stop() is True
    assert _session_members(head.pid) == []
    assert cluster.status() is None
    # The other cluster (the one the test session uses) is untouched.
    assert ray_cluster.status() == other_head
    assert cluster.stop() is False


def test_cli_start_status_stop(ray_cluster):
    state_dir = tempfile.mkdtemp(prefix="afr-cli-")
    cli = [sys.executable, "-m", "airflow_ray.cli", "local"]

    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, action, "--dir", state_dir], capture_output=True, text=True, timeout=120)

    assert run("status").returncode == 3
    started = run("start")
    assert started.returncode == 0, started.stderr
    assert "Embedded Ray cluster started: 127.0.0.1:" in started.stdout
    again = run("start")
    assert "already running" in again.stdout
    status = run("status")
    assert status.returncode == 0 and "running" in status.stdout
    head = EmbeddedCluster(Path(state_dir)).status()
    assert head is not None
    token_path = Path(state_dir) / "auth_token"
    assert f"Dashboard: {head.dashboard_url} (its token is in {token_path})" in status.stdout
    assert token_path.read_text().strip() not in status.stdout
    stopped = run("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run("status").returncode == 3


def test_airflow_dags_test_processes_reuse_the_running_cluster(ray_cluster, airflow_home):
    """Two `airflow dags test` processes: each exits, the cluster stays and is reused."""
    head = ray_cluster.status()
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", "example_ray_pipeline"],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ.copy(),
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "rows, mean" in result.stdout
        assert f"address 127.0.0.1:{head.gcs_port}" in result.stdout
        assert ray_cluster.status() == head


def test_the_cluster_sees_no_secrets_stops_promptly_and_fails_a_running_task_at_once(ray_cluster, tmp_path):
    import shutil
    import time

    dag_files = Path(__file__).parent / "dag_files"
    dags = tmp_path / "dags"  # this test's own DAGs folder: nothing else parses it
    dags.mkdir()
    for name in ("env_probe.py", "orphan.py"):
        shutil.copy(dag_files / name, dags / name)
    state_dir = tempfile.mkdtemp(prefix="afr-stop-")
    session_dir = Path(state_dir) / "tmp"
    session_dir.mkdir()
    for day in range(5):  # sessions of earlier starts
        (session_dir / f"session_2026-01-0{day + 1}_00-00-00_000000_1").mkdir()
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__RAY__EMBEDDED_DIR": state_dir,
        "AIRFLOW__RAY__EMBEDDED_NUM_CPUS": "2",
        "AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY": str(200 * 1024 * 1024),
        # Secrets of the process that starts the cluster: no Ray task may see them.
        "AIRFLOW_CONN_SECRET_PROBE": "aws://AKIAPROBE:probe-secret@",
        "AIRFLOW_VAR_SECRET_PROBE": "probe-secret",
        "AWS_SECRET_ACCESS_KEY": "probe-secret",
    }
    probe = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "env_probe"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
    assert "secrets visible in the Ray worker: []" in probe.stdout, probe.stdout[-3000:]
    sessions = sorted(path.name for path in session_dir.glob("session_2*"))
    assert len(sessions) <= 3 and "session_2026-01-05_00-00-00_000000_1" in sessions, sessions

    marker = tmp_path / "ticks"
    log = tmp_path / "task.log"
    with open(log, "wb") as out:
        task = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", "orphan_alone", "--conf",
             json.dumps({"marker": str(marker), "seconds": 120})],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def ticking() -> bool:
            assert task.poll() is None, log.read_text()[-3000:]
            return marker.exists() and "tick 2" in marker.read_text()

        wait_until(ticking, 180, lambda: log.read_text()[-3000:], every=0.2)
        started = time.monotonic()
        stop = subprocess.run(
            [sys.executable, "-m", "airflow_ray.cli", "local", "stop", "--dir", state_dir],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        stopped_in = time.monotonic() - started
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
        task.wait(timeout=120)
        failed_in = time.monotonic() - started
    finally:
        if task.poll() is None:
            os.killpg(task.pid, 9)
    print(
        f"embedded cluster stopped in {stopped_in:.1f} s; the running task's process ended {failed_in:.1f} s after"
    )
    # The task's process ended because the cluster stopped, not because its callable (120 s) ended.
    assert "tick 200" not in marker.read_text()
    output = log.read_text()
    assert (
        "RayTaskFailedError" in output and "The embedded Ray cluster stopped while the task ran" in output
    ), output[-3000:]
    # Ray's SIGTERM to the worker is not the callable's failure (it was reported as one: seen).
    assert "The callable failed" not in output, output[-3000:]
