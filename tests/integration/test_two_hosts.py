"""The embedded default across hosts: two Airflow homes on this machine stand for two worker hosts
of one deployment (one metadata DB), each with no Ray address, so each runs its own embedded
cluster. A result made on host a and consumed on host b is restored from its checkpoint when it
has one; without one the consumer fails at once, naming the host and cluster that hold it and
what to configure, without starting a cluster of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.local_s3 import Bucket
from tests.integration.postgres import PostgresServer

pytestmark = pytest.mark.integration

RUN_DATE = "2026-01-03T00:00:00+00:00"
RUN_ID = f"manual__{RUN_DATE}"
TIMEOUT = 300


def home(root: Path, name: str, url: str, dags: Path) -> dict[str, str]:
    folder = root / name
    folder.mkdir()
    return {
        **os.environ,
        "AIRFLOW_HOME": str(folder),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__RAY__EMBEDDED_DIR": str(folder / "ray"),
        "AIRFLOW__RAY__EMBEDDED_NUM_CPUS": "1",
        "AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY": str(100 * 1024 * 1024),
    }


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def stop_embedded(env: dict[str, str]) -> None:
    run(
        [
            sys.executable,
            "-m",
            "airflow_ray.cli",
            "local",
            "stop",
            "--dir",
            env["AIRFLOW__RAY__EMBEDDED_DIR"],
        ],
        env,
    )


def test_a_result_made_on_another_hosts_embedded_cluster(
    postgres: PostgresServer, postgres_migrated: str, checkpoints: Bucket, tmp_path: Path
):
    from airflow_ray.cluster.local import EmbeddedCluster

    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).parent / "dag_files" / "two_hosts.py", dags)
    url = postgres.create_database("two_hosts", template=postgres_migrated)
    host_a, host_b = home(tmp_path, "a", url, dags), home(tmp_path, "b", url, dags)
    cluster_b = EmbeddedCluster(Path(host_b["AIRFLOW__RAY__EMBEDDED_DIR"]))
    try:
        made = run([sys.executable, str(dags / "two_hosts.py"), RUN_DATE], host_a)
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]

        def consume(task_id: str) -> tuple[subprocess.CompletedProcess[str], float]:
            started = time.monotonic()
            done = run(
                [sys.executable, "-m", "airflow", "tasks", "test", "two_hosts", task_id, RUN_ID], host_b
            )
            return done, time.monotonic() - started

        # Without a checkpoint: at once, and without starting host b's own cluster.
        failed, took = consume("consume_plain")
        output = failed.stdout + failed.stderr
        # (`airflow tasks test` exits 0 whatever the task did: the output says.)
        assert "RayObjectLostError" in output, output[-3000:]
        assert (
            f"embedded Ray cluster of host {os.uname().nodename} (state {host_a['AIRFLOW__RAY__EMBEDDED_DIR']})"
            in output
        ), output[-3000:]
        assert "the address of one Ray cluster that every worker reaches" in output
        assert "[ray] checkpoint_bucket" in output and "the consumer read" not in output
        assert cluster_b.status() is None
        print(f"the consumer without a checkpoint failed in {took:.1f} s (the whole `airflow tasks test`)")

        # With a checkpoint: restored into host b's cluster, and consumed there.
        restored, took = consume("consume_checkpointed")
        output = restored.stdout + restored.stderr
        assert "Error" not in output, output[-3000:]
        assert "the consumer read: made on host a, 200000 characters" in output, output[-3000:]
        assert cluster_b.status() is not None
        print(f"the consumer with a checkpoint restored it and ran in {took:.1f} s")
    finally:
        stop_embedded(host_a)
        stop_embedded(host_b)
