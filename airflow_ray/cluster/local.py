"""The embedded local Ray head: one persistent cluster per state directory, started on demand.

Airflow runs each task in a process of its own, and a Ray cluster started by ``ray.init()``
dies with the process that started it. The embedded head is a ``ray start --head --block``
process in a session of its own, so it outlives the task that started it; later tasks (and the
XCom backend) find it through ``cluster.json`` in the state directory and reuse it.

The state directory holds:

- ``cluster.json``: the head's process id, session id and ports (written once it answers);
- ``auth_token``: the cluster's token (mode 0600), which Ray's token authentication requires;
- ``lock``: an ``flock`` that serializes concurrent starts from several Airflow workers;
- ``head.log``: what ``ray start`` printed.

Stopping signals only the processes of the head's own session, never other Ray clusters.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from airflow_ray.exceptions import EmbeddedClusterError, RayConnectionError
from airflow_ray.version_compat import RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_ENV, RAY_AUTH_TOKEN_PATH_ENV

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 90.0
# `ray start --block` stops its processes on SIGTERM, but waits up to 30 s for workers to drain
# (a detached owner actor always holds one): after this grace every process of the session is
# signalled directly, then killed. The cluster's state is not kept across a stop anyway.
STOP_GRACE = 2.0
STOP_TIMEOUT = 5.0
KEEP_SESSIONS = 2  # Ray's session directories (logs, spilled objects) kept in the temp dir
# The environment the embedded cluster (and so every Ray worker, every user's callable) gets
# from the process that starts it: names, and prefixes ending in "_". Everything else, Airflow's
# AIRFLOW_CONN_* and AIRFLOW_VAR_* secrets and cloud credentials above all, stays out.
ENV_ALLOWED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "LC_", "RAY_", "NVIDIA_",
)  # fmt: skip
# Ray's unix sockets live under <temp dir>/session_<timestamp>_<pid>/sockets/; AF_UNIX paths
# are limited to 107 bytes, so a long state directory gets a short temp dir under /tmp.
_MAX_TEMP_DIR_LEN = 40


@dataclass(frozen=True)
class EmbeddedHead:
    """A running embedded head, as recorded in ``cluster.json``."""

    pid: int
    gcs_port: int
    client_port: int
    dashboard_port: int
    temp_dir: str
    ray_version: str
    started_at: float

    @property
    def gcs_address(self) -> str:
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        return f"ray://{LOOPBACK}:{self.client_port}"

    @property
    def dashboard_url(self) -> str:
        """Its dashboard and Jobs API."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"


class EmbeddedCluster:
    """The embedded head whose state lives in ``state_dir``.

    :param state_dir: directory of the cluster's state (``[ray] embedded_dir``).
    :param num_cpus: CPUs the head offers; ``None`` lets Ray count the machine's.
    :param object_store_memory: bytes of object store; ``None`` keeps Ray's default.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        num_cpus: int | None = None,
        object_store_memory: int | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().absolute()
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory

    @classmethod
    def from_config(cls) -> EmbeddedCluster:
        """The embedded cluster configured in the ``[ray]`` section."""
        from airflow_ray import config

        return cls(
            config.embedded_dir(),
            num_cpus=config.embedded_num_cpus(),
            object_store_memory=config.embedded_object_store_memory(),
        )

    @property
    def _info_path(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def token_path(self) -> Path:
        return self.state_dir / "auth_token"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "head.log"

    def token(self) -> str:
        """The cluster's token, created on first use."""
        try:
            return self.token_path.read_text().strip()
        except FileNotFoundError:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            return self.token_path.read_text().strip()

    def status(self) -> EmbeddedHead | None:
        """The running head, or ``None`` when none runs for this state directory."""
        try:
            head = EmbeddedHead(**json.loads(self._info_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None
        if not _alive_in_own_session(head.pid) or not _port_open(LOOPBACK, head.gcs_port):
            return None
        return head

    def stopped(self, settle: float = STOP_TIMEOUT + 2 * STOP_GRACE) -> bool:
        """Whether no head runs for this state directory, once a stop in progress has ended.

        A stop holds the state directory's lock from before it signals the head until the head's
        processes are gone; a task whose worker died with the cluster asks while the stop still
        runs, so this waits up to ``settle`` seconds for that lock before looking.
        """
        lock = self.state_dir / "lock"
        if not lock.exists():
            return self.status() is None
        deadline = time.monotonic() + settle
        with open(lock, "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        return self.status() is None
                    time.sleep(0.1)
            try:
                return self.status() is None
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure_running(self) -> EmbeddedHead:
        """Return the running head, starting one first when none runs.

        Safe to call from many Airflow workers at once: starts are serialized by a lock on the
        state directory and the second caller reuses the head the first one started.
        """
        head = self.status()
        if head is not None:
            return head
        with self._lock():
            head = self.status()
            if head is not None:
                return head
            return self._start()

    def wait_for_dashboard(self, head: EmbeddedHead, timeout: float = START_TIMEOUT) -> None:
        """Wait until the head's dashboard (the Jobs API) answers; it starts after the GCS."""
        deadline = time.monotonic() + timeout
        while not _port_open(LOOPBACK, head.dashboard_port):
            if time.monotonic() > deadline:
                raise EmbeddedClusterError(
                    f"The embedded Ray cluster's dashboard did not open {head.dashboard_url} within "
                    f"{timeout:.0f} s. Its output ({self.log_path}) ends with:\n{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop this state directory's head and every process of its session.

        :return: whether a running head was stopped.
        """
        with self._lock():
            try:
                head = EmbeddedHead(**json.loads(self._info_path.read_text()))
            except (FileNotFoundError, json.JSONDecodeError, TypeError):
                return False
            stopped = False
            if _alive_in_own_session(head.pid):
                # SIGTERM to `ray start --block` makes it stop the processes it started.
                os.kill(head.pid, signal.SIGTERM)
                stopped = True
            _terminate_session(head.pid, timeout, grace=min(STOP_GRACE, timeout / 3))
            self._info_path.unlink(missing_ok=True)
            if not head.temp_dir.startswith(str(self.state_dir)):
                shutil.rmtree(head.temp_dir, ignore_errors=True)
            return stopped

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _temp_dir(self) -> Path:
        default = self.state_dir / "tmp"
        if len(str(default)) <= _MAX_TEMP_DIR_LEN:
            return default
        digest = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"airflow-ray-{digest}"

    def _start(self) -> EmbeddedHead:
        ray_cli = Path(sys.executable).with_name("ray")
        if not ray_cli.exists():
            raise EmbeddedClusterError(
                f"Cannot start the embedded Ray cluster: {ray_cli} does not exist. Install Ray into "
                f"this environment: pip install 'ray[default]'"
            )
        gcs_port, client_port, dashboard_port, agent_port, metrics_port = _free_ports(5)
        temp_dir = self._temp_dir()
        temp_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            f"--node-ip-address={LOOPBACK}",
            f"--port={gcs_port}",
            f"--ray-client-server-port={client_port}",
            f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--metrics-export-port={metrics_port}",
            # The dashboard serves the Jobs API, so that the jobs transport works with no setup.
            "--include-dashboard=true",
            f"--dashboard-host={LOOPBACK}",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ]
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        if self.object_store_memory is not None:
            command.append(f"--object-store-memory={self.object_store_memory}")
        _prune_sessions(temp_dir, KEEP_SESSIONS)
        env = scrubbed_environment(os.environ)
        env.pop(RAY_AUTH_TOKEN_ENV, None)
        env.update(
            {
                # Jobs run `python ...` through a shell: this environment's Python, as Ray's own.
                "PATH": os.pathsep.join([str(ray_cli.parent), env.get("PATH", "")]),
                RAY_AUTH_MODE_ENV: "token",
                RAY_AUTH_TOKEN_PATH_ENV: str(self.token_path),
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        self.token()  # created before the head starts, which reads it from RAY_AUTH_TOKEN_PATH
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        head = EmbeddedHead(
            pid=process.pid,
            gcs_port=gcs_port,
            client_port=client_port,
            dashboard_port=dashboard_port,
            temp_dir=str(temp_dir),
            ray_version=_installed_ray_version(),
            started_at=time.time(),
        )
        self._wait_until_ready(process, head)
        self._info_path.write_text(json.dumps(asdict(head), indent=2))
        return head

    def _wait_until_ready(self, process: subprocess.Popen[bytes], head: EmbeddedHead) -> None:
        from airflow_ray.cluster.connect import check_speaks_grpc

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedClusterError(
                    f"The embedded Ray head exited with code {process.returncode} while starting. "
                    f"Its output ({self.log_path}) ends with:\n{_tail(self.log_path)}"
                )
            if _port_open(LOOPBACK, head.gcs_port):
                break
            time.sleep(0.1)
        else:
            self._kill_failed_start(process)
            raise EmbeddedClusterError(
                f"The embedded Ray head did not open its port {head.gcs_port} within {START_TIMEOUT:.0f} s. "
                f"Its output ({self.log_path}) ends with:\n{_tail(self.log_path)}"
            )
        while True:
            # Looked at without a token: presenting one would change this process's, which a
            # driver of another cluster (dag.test() runs every task in one) goes on using.
            # `ray start` prints this line once the GCS answers and the node has registered.
            try:
                check_speaks_grpc(LOOPBACK, head.gcs_port, where="the embedded local cluster")
                if b"Ray runtime started" in self.log_path.read_bytes()[-20000:]:
                    return
            except RayConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                self._kill_failed_start(process)
                raise EmbeddedClusterError(
                    f"The embedded Ray head did not become ready within {START_TIMEOUT:.0f} s. "
                    f"Its output ({self.log_path}) ends with:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    @staticmethod
    def _kill_failed_start(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
        _terminate_session(process.pid, STOP_TIMEOUT)


def _installed_ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _alive_in_own_session(pid: int) -> bool:
    """Whether ``pid`` runs and leads its own session (as the head we started does)."""
    try:
        return os.getsid(pid) == pid and _running(pid)
    except (ProcessLookupError, PermissionError):
        return False


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) == sid and _running(pid):
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def _terminate_session(sid: int, timeout: float, grace: float | None = None) -> None:
    """Wait for the processes of session ``sid`` to exit: SIGTERM to each after ``grace``
    seconds (default half the timeout), then SIGKILL at the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    grace = timeout / 2 if grace is None else grace
    signalled = False
    while members := _session_members(sid):
        if time.monotonic() > deadline:
            for pid in members:
                _signal(pid, signal.SIGKILL)
            return
        if not signalled and time.monotonic() > started + grace:
            for pid in members:
                _signal(pid, signal.SIGTERM)
            signalled = True
        time.sleep(0.1)


def scrubbed_environment(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """The part of ``environ`` that the embedded cluster may see (:data:`ENV_ALLOWED`)."""
    names = {name for name in ENV_ALLOWED if not name.endswith("_")}
    prefixes = tuple(name for name in ENV_ALLOWED if name.endswith("_"))
    return {key: value for key, value in environ.items() if key in names or key.startswith(prefixes)}


def _prune_sessions(temp_dir: Path, keep: int) -> None:
    """Remove Ray's session directories of earlier starts but the newest ``keep``: their logs and
    spilled objects would pile up in the state directory with each start."""
    # session_<date>_<time>_<microseconds>_<pid>: the names sort by start time.
    sessions = sorted(path for path in temp_dir.glob("session_2*") if path.is_dir() and not path.is_symlink())
    for path in sessions[: max(len(sessions) - keep, 0)]:
        shutil.rmtree(path, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"
