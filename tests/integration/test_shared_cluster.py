"""Two Airflow deployments (staging and production: their own metadata DBs, default settings)
on one Ray cluster, reached by address, in both transports.

Both schedulers name a day's run alike, so the same DAG gives the same pin keys in both. Each
deployment's owner actors carry its identity (kept in its metadata DB), so staging's consumer
reads staging's result although production's producer ran between, and releasing every pin in
one leaves the other's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.postgres import PostgresServer
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.integration

RUN_DATE = "2026-01-02T00:00:00+00:00"  # the same run id in both deployments
TIMEOUT = 300


def connection(ray_cluster, transport: str) -> dict:
    """The cluster by address, as a remote one is reached: its GCS, or its dashboard's Jobs API."""
    head = ray_cluster.status()
    assert head is not None
    host = head.gcs_address if transport == "driver" else head.dashboard_url
    return {"conn_type": "ray", "host": host, "password": ray_cluster.token()}


class Deployment:
    def __init__(self, name: str, url: str, dags: Path, conn: dict, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.dags = dags
        self.env = {
            **os.environ,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW_CONN_RAY_DEFAULT": json.dumps(conn),
        }

    def start_run(self, gate: Path) -> tuple[subprocess.Popen[bytes], Path]:
        conf = json.dumps({"deployment": self.name, "gate": str(gate)})
        log = self.workdir / f"{self.name}-run.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(self.dags / "shared_cluster.py"), RUN_DATE, conf],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return process, log

    def pins(self, *arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "airflow_ray.cli", "pins", *arguments],
            capture_output=True, text=True, timeout=TIMEOUT, env=self.env,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        return result.stdout


def finished(process: subprocess.Popen[bytes], log: Path) -> str:
    try:
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
    output = log.read_text(errors="replace")
    assert process.returncode == 0, output[-4000:]
    return output


def pinned_count(listing: str) -> int:
    return int(listing.strip().splitlines()[-1].split()[0])  # "N pinned object(s), M MB"


@pytest.mark.parametrize("transport", ["driver", "jobs"])
def test_staging_reads_its_own_result_and_releasing_everything_in_production_leaves_it(
    transport: str, ray_cluster, postgres: PostgresServer, postgres_migrated: str, tmp_path: Path
):
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).parent / "dag_files" / "shared_cluster.py", dags)
    conn = connection(ray_cluster, transport)
    staging, production = (
        Deployment(name, postgres.create_database(f"{name}_{transport}", template=postgres_migrated), dags, conn, tmp_path)
        for name in ("staging", "production")
    )  # fmt: skip

    gate = tmp_path / "staging-gate"
    running, staging_log = staging.start_run(gate)
    try:

        def held_at_the_gate() -> bool:
            assert running.poll() is None, staging_log.read_text(errors="replace")[-4000:]
            return Path(f"{gate}.waiting").exists()

        wait_until(held_at_the_gate, TIMEOUT, lambda: staging_log.read_text(errors="replace")[-3000:])
        # Production runs the same DAG, with the same run id, start to end: its producer pins its
        # result under the key staging's producer used.
        open_gate = tmp_path / "production-gate"
        open_gate.touch()
        process, log = production.start_run(open_gate)
        assert "the consumer read the result made by production" in finished(process, log)
        gate.touch()
    finally:
        if running.poll() is None and not gate.exists():
            os.killpg(running.pid, 9)
    output = finished(running, staging_log)
    assert "the consumer read the result made by staging" in output, output[-4000:]
    assert "made by production" not in output
    run_id = f"manual__{RUN_DATE}"
    assert f"run_id={run_id}" in output and f"run_id={run_id}" in log.read_text()  # alike in both

    # Each lists its own pins only; releasing all of production's leaves staging's.
    staging_pins = pinned_count(staging.pins("list", "--dag", "shared_cluster"))
    production_pins = pinned_count(production.pins("list", "--dag", "shared_cluster"))
    assert staging_pins >= 1 and production_pins >= 1
    released = production.pins("release", "--all")
    assert f"Released {production_pins} pinned object(s)" in released, released
    assert pinned_count(production.pins("list")) == 0
    assert pinned_count(staging.pins("list", "--dag", "shared_cluster")) == staging_pins
