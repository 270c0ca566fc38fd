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
