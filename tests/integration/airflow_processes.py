"""Airflow's own processes for the tests that run Airflow as it is deployed: the API server, and
the scheduler, triggerer and DAG processor beside it. One way to start them, to wait for the API
server, and to stop them (each in a session of its own, its output in a log file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from scripts.ports import free_port

STOP_TIMEOUT = 20.0
# How the tests run Airflow: this interpreter's; a test of another environment passes its own.
AIRFLOW = (sys.executable, "-m", "airflow")


@dataclass
class AirflowProcess:
    """``airflow <command>`` running in a session of its own, its output in ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, command: str, env: Mapping[str, str], log_path: Path, *args: str) -> AirflowProcess:
        return cls(_spawn([*AIRFLOW, command, *args], env, log_path), log_path)

    def log(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL for whatever of its process tree is left after ``timeout``."""
        try:
            parent = psutil.Process(self.process.pid)
        except psutil.NoSuchProcess:
            return
        tree = [parent, *parent.children(recursive=True)]
        self.process.terminate()
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=10)

    def kill(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGKILL every process of its session at once, as a host that loses power: no process
        of it gets to clean up, its children included."""
        session = [p for p in psutil.process_iter() if _session_of(p) == self.process.pid]
        for member in session:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(session, timeout=timeout)
        self.process.wait(timeout=10)


def _session_of(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


@dataclass
class AirflowApiServer(AirflowProcess):
    """``airflow api-server`` on ``port`` of 127.0.0.1."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def execution_api_url(self) -> str:
        """The ``[core] execution_api_server_url`` of the task processes that this server serves."""
        return f"{self.url}/execution/"

    @classmethod
    def start_on(
        cls,
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        wait: bool = True,
        airflow: Sequence[str] = AIRFLOW,
        cwd: Path | None = None,
    ) -> AirflowApiServer:
        """Start the API server on ``port`` (a free one by default); with ``wait``, return once it
        answers (see :meth:`wait_until_healthy`). ``airflow`` is the command that runs Airflow."""
        port = port or free_port()
        command = [*airflow, "api-server", "--port", str(port)]
        server = cls(_spawn(command, env, log_path, cwd), log_path, port)
        if wait:
            try:
                server.wait_until_healthy()
            except BaseException:
                server.stop()
                raise
        return server

    def wait_until_healthy(self, timeout: float = 120, beside: Iterable[AirflowProcess] = ()) -> None:
        """Wait until ``/api/v2/monitor/health`` answers; fail at once if this server, or one of the
        processes started ``beside`` it, exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as answer:
                    json.load(answer)
                return
            except OSError:
                for started in (self, *beside):
                    assert started.process.poll() is None, (
                        f"{started.process.args} exited {started.process.returncode}: {started.log()}"
                    )
                assert time.monotonic() < deadline, (
                    f"the API server did not answer within {timeout} s: {self.log()}"
                )
                time.sleep(0.5)


def _spawn(
    command: list[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
