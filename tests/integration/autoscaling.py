"""A Ray head with a real autoscaler on this machine: Ray's fake multi-node provider launches each
node it decides to add as local processes (``RAY_FAKE_CLUSTER=1``, provider ``fake_multinode``).

Started with ``ray start --head --block`` in a session of its own and stopped by its processes:
those of that session, and the nodes the autoscaler launched (processes of its monitor that name
the head's temp dir). Never ``ray stop``, nor Ray's ``AutoscalingCluster`` (it runs ``ray stop
--force``, which stops every Ray of the machine).

    head = AutoscalingHead.start(tmp_path, {"gpu_node": {"resources": {"CPU": 1, "GPU": 1},
                                                         "min_workers": 0, "max_workers": 1}})
    head.connection()   # the extra of an Airflow ``ray`` connection to it (GCS address)
    head.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.ports import free_ports
from scripts.ray_only_cluster import _short_temp_dir, end_processes, stop_session

START_TIMEOUT = 120.0
# The head's node id the fake provider expects (ray.autoscaler._private.fake_multi_node).
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"


def autoscaling_config(gcs_address: str, node_types: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An autoscaler config for the fake multi-node provider: a 1-CPU head and ``node_types``."""
    return {
        "cluster_name": "fake-multinode",
        "max_workers": 8,
        "idle_timeout_minutes": 5,
        "upscaling_speed": 1.0,
        "provider": {
            # Ray's fake_multinode provider, as "external": the wheel lacks the defaults file
            # (fake_multi_node/example.yaml) that the type "fake_multinode" reads in autoscaler v2.
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            **{name: {"node_config": {}, **spec} for name, spec in node_types.items()},
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class AutoscalingHead:
    process: subprocess.Popen[bytes]
    log: Path
    gcs_address: str
    dashboard_url: str
    token: str
    temp_dir: str

    @classmethod
    def start(
        cls, workdir: Path, node_types: dict[str, dict[str, Any]], *, dashboard: bool = False, v2: bool = True
    ) -> AutoscalingHead:
        """Start the head; ``v2``: Ray's autoscaler v2 (KubeRay's default), else v1."""
        workdir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        token_file = workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        bin_dir = Path(sys.executable).parent
        gcs, client, agent, metrics, dashboard_port = free_ports(5)
        gcs_address = f"127.0.0.1:{gcs}"
        config = workdir / "autoscaling.json"
        settings = autoscaling_config(gcs_address, node_types)
        if v2:
            settings["provider"].update(launch_multiple=True, head_node_id=FAKE_HEAD_NODE_ID)
        config.write_text(json.dumps(settings))
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "RAY_", "VIRTUAL_ENV"))
        }
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token_file),
            RAY_USAGE_STATS_ENABLED="0",
            RAY_FAKE_CLUSTER="1",
            AUTOSCALER_UPDATE_INTERVAL_S="1",
        )
        if v2:
            env.update(
                RAY_enable_autoscaler_v2="1",
                RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_NODE_ID,
                RAY_OVERRIDE_NODE_ID_FOR_TESTING=FAKE_HEAD_NODE_ID,
            )
        temp_dir = _short_temp_dir()
        log = workdir / "head.log"
        command = [
            str(bin_dir / "ray"), "start", "--block", "--head", "--node-ip-address=127.0.0.1",
            "--disable-usage-stats", f"--autoscaling-config={config}", f"--port={gcs}",
            f"--ray-client-server-port={client}", f"--include-dashboard={str(dashboard).lower()}",
            f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
            "--num-cpus=1", f"--object-store-memory={100 * 1024 * 1024}", f"--temp-dir={temp_dir}",
        ]  # fmt: skip
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        head = cls(process, log, gcs_address, f"http://127.0.0.1:{dashboard_port}", token, temp_dir)
        deadline = time.monotonic() + START_TIMEOUT
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                head.stop()
                raise RuntimeError(f"ray start did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        return head

    def connection(self, jobs: bool = False) -> dict[str, Any]:
        """An Airflow ``ray`` connection (as ``AIRFLOW_CONN_*`` JSON): to the GCS address (the
        driver transport), or to the dashboard (the Jobs API transport)."""
        host = self.dashboard_url if jobs else self.gcs_address
        return {"conn_type": "ray", "host": host, "password": self.token}

    def launched(self) -> list[int]:
        """The pids of the nodes' processes outside the head's session that name its temp dir (the
        autoscaler's nodes, whose raylets may leave the session)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if self.temp_dir.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
        return found

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the head's session, then any process left that names its temp dir."""
        stop_session(self.process, timeout)
        end_processes(self.launched, timeout)
