"""A Ray cluster started from a virtual environment that has only ``ray[default]`` installed.

It stands for a production cluster that knows nothing of Airflow or airflow-ray: the Jobs API
transport must run there with what each job carries. Two environments, built by
``make ray-only-venv`` (which ``make test`` runs) so that the tests never download them:
``.ray-only-venv`` with the lock's Ray (the newest of the supported window) and
``.ray-oldest-venv`` with :data:`OLDEST_RAY`, the oldest (``airflow_ray.cluster.versions``).

    cluster = RayOnlyCluster.start(workdir)                  # or ray=OLDEST_RAY
    ... connection: {"conn_type": "ray", "host": cluster.dashboard_url, "password": cluster.token}
    cluster.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.ports import free_ports

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".ray-only-venv"
OLDEST_VENV = REPO / ".ray-oldest-venv"
# The oldest Ray of the window that airflow_ray.cluster.versions promises (a test checks they agree).
OLDEST_RAY = "2.46.0"
START_TIMEOUT = 120.0


def ray_version() -> str:
    """The lock's Ray: the newest of the window."""
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if line.lower().startswith("ray=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError("requirements/lock.txt pins no ray version")


def _venv_of(ray: str) -> Path:
    return VENV if ray == ray_version() else OLDEST_VENV


def build_venv(ray: str | None = None) -> Path:
    """Build the virtual environment with only ``ray[default]`` of version ``ray`` (default: the
    lock's) and what it depends on, pinned by the lock file where the lock pins them; ``make
    ray-only-venv`` runs this (``python -m scripts.ray_only_cluster``), so tests never download it."""
    ray = ray or ray_version()
    venv = _venv_of(ray)
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    # The lock's pins, but its own Ray's for the other version.
    lock = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(line for line in lock if not line.lower().startswith("ray==")) + "\n")
    try:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-c", constraints.name, f"ray[default]=={ray}"],
            check=True,
        )
    finally:
        os.unlink(constraints.name)
    marker.write_text(ray)
    return python


def venv_python(ray: str | None = None) -> Path:
    """The interpreter of the environment that ``make ray-only-venv`` built for ``ray`` (default:
    the lock's Ray).

    :raises RuntimeError: it is missing, or was built for another Ray.
    """
    ray = ray or ray_version()
    venv = _venv_of(ray)
    marker = venv / ".installed"
    built = marker.read_text().strip() if marker.exists() else None
    if built != ray:
        state = "is not built" if built is None else f"was built for ray {built}"
        raise RuntimeError(
            f"{venv} (the ray[default]-only cluster's environment) {state}; the tests want ray "
            f"{ray} there. Build it with `make ray-only-venv` (`make test` does)."
        )
    return venv / "bin" / "python"


@dataclass
class RayOnlyCluster:
    process: subprocess.Popen[bytes]
    dashboard_url: str
    gcs_address: str
    token: str
    log: Path

    @classmethod
    def start(
        cls, workdir: Path, num_cpus: int = 2, object_store_mb: int = 300, ray: str | None = None
    ) -> RayOnlyCluster:
        python = venv_python(ray)
        workdir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        token_file = workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        gcs, dashboard, client, agent, metrics = free_ports(5)
        log = workdir / "head.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "RAY_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(
            PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token_file),
            RAY_USAGE_STATS_ENABLED="0",
        )
        command = [
            str(python.parent / "ray"), "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dashboard}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
            f"--metrics-export-port={metrics}", f"--num-cpus={num_cpus}",
            f"--object-store-memory={object_store_mb * 1024 * 1024}", "--disable-usage-stats",
            f"--temp-dir={_short_temp_dir()}",
        ]  # fmt: skip
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=workdir,
            )  # fmt: skip
        cluster = cls(process, f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", token, log)
        try:
            cluster._wait_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {self.token}"}
        )
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    json.load(answer)
                if b"Ray runtime started" in self.log.read_bytes():
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the ray-only cluster did not start: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop this cluster's processes (its own session), and only them."""
        stop_session(self.process, timeout)


def stop_session(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop every process of the session that ``process`` leads (a ``ray start --block`` started
    with ``start_new_session``), and only them: SIGTERM, then SIGKILL after half the timeout."""
    end_processes(lambda: _session_members(process.pid), timeout)
    process.wait(timeout=5)


def end_processes(members: Callable[[], list[int]], timeout: float) -> None:
    """End the processes that ``members`` lists, asked again after each signal: SIGTERM, then
    SIGKILL after half the timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + timeout / 2
        while (pids := members()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)


def _short_temp_dir() -> str:
    # Ray's unix socket paths must stay short.
    path = Path("/tmp") / f"rayonly-{secrets.token_hex(4)}"
    path.mkdir()
    return str(path)


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    stat = (entry / "stat").read_text()
                    if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
                        members.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                continue
    return members


if __name__ == "__main__":
    build_venv(OLDEST_RAY if sys.argv[1:] == ["--oldest"] else None)
