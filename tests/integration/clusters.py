"""Ray clusters that tests start on this machine and stop by their own processes: a head node and
worker nodes (each a ``ray start --block`` in a session of its own), with token authentication.

    cluster = NodeCluster.start(tmp_path, workers=[{"num_cpus": 2, "resources": {"worker": 4}}])
    cluster.connection()   # the extra of an Airflow ``ray`` connection to it (GCS address)
    cluster.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.ports import free_ports
from scripts.ray_only_cluster import _short_temp_dir, stop_session

START_TIMEOUT = 120.0


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 30.0) -> None:
        """Stop this node's processes (its own session), and only them: SIGTERM, then SIGKILL."""
        stop_session(self.process, timeout)


@dataclass
class NodeCluster:
    head: Node
    gcs_address: str
    token: str
    workdir: Path
    env: dict[str, str]
    workers: list[Node] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        head_cpus: int = 1,
        head_store_mb: int = 200,
        workers: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        python: Path | None = None,
    ) -> NodeCluster:
        """A head node and one worker node per entry of ``workers`` (``num_cpus``, ``resources``,
        ``store_mb``), all on 127.0.0.1, with the Python of ``python`` (default: ours)."""
        workdir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        token_file = workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        bin_dir = (python or Path(sys.executable)).parent
        node_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "RAY_", "VIRTUAL_ENV"))
        }
        node_env.update(
            PATH=f"{bin_dir}{os.pathsep}{node_env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token_file),
            RAY_USAGE_STATS_ENABLED="0",
            **(env or {}),
        )
        gcs, client, agent, metrics, dashboard = free_ports(5)
        temp_dir = _short_temp_dir()
        head = _start_node(
            bin_dir,
            workdir / "head.log",
            node_env,
            [
                "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
                "--include-dashboard=false", f"--dashboard-port={dashboard}",
                f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
                f"--num-cpus={head_cpus}", f"--object-store-memory={head_store_mb * 1024 * 1024}",
                f"--temp-dir={temp_dir}",
            ],
        )  # fmt: skip
        cluster = cls(head, f"127.0.0.1:{gcs}", token, workdir, node_env)
        try:
            _wait_for(head, b"Ray runtime started")
            for index, spec in enumerate(workers or []):
                cluster.add_worker(index, **spec)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_worker(
        self, index: int, num_cpus: int = 1, resources: dict[str, float] | None = None, store_mb: int = 200
    ) -> Node:
        agent, metrics, manager, objects = free_ports(4)
        bin_dir = Path(self.env["PATH"].split(os.pathsep)[0])
        node = _start_node(
            bin_dir,
            self.workdir / f"worker-{index}.log",
            self.env,
            [
                f"--address={self.gcs_address}", f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources or {})}",
                f"--object-store-memory={store_mb * 1024 * 1024}",
                f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
                f"--node-manager-port={manager}", f"--object-manager-port={objects}",
            ],
        )  # fmt: skip
        self.workers.append(node)
        _wait_for(node, b"Ray runtime started")
        return node

    def connection(self) -> dict[str, Any]:
        """An Airflow ``ray`` connection (as ``AIRFLOW_CONN_*`` JSON) to this cluster's GCS."""
        return {"conn_type": "ray", "host": self.gcs_address, "password": self.token}

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop()


def _start_node(bin_dir: Path, log: Path, env: dict[str, str], arguments: list[str]) -> Node:
    command = [
        str(bin_dir / "ray"),
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command + arguments,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Node(process, log)


def _wait_for(node: Node, text: bytes) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while text not in node.log.read_bytes():
        if node.process.poll() is not None:
            raise RuntimeError(f"ray start exited: {node.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not finish: {node.log.read_text()[-3000:]}")
        time.sleep(0.3)
