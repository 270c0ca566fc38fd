"""A private PostgreSQL server for the tests that run a real scheduler, as Airflow is deployed.

The server comes from Debian's packages (``apt-get install postgresql``): ``initdb`` makes a
cluster in a fresh temporary directory, ``postgres`` serves it on 127.0.0.1 (and a unix socket in
that directory), and :meth:`PostgresServer.stop` ends that process only and removes the directory.
PostgreSQL refuses to run as root, so under root both run as the ``postgres`` user that Debian's
package creates, and the directory belongs to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL = "apt-get install postgresql"
# Debian keeps the server's programs out of PATH, in one folder per major version.
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
USER = "airflow"


class PostgresNotInstalled(RuntimeError):
    """PostgreSQL's server programs are not on this machine."""


def find_bin_dir() -> Path:
    """The folder of ``initdb`` and ``postgres``: PATH first, then Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).resolve().parent / "postgres").exists():
        return Path(on_path).resolve().parent
    versions = sorted(
        (Path(p) for p in glob.glob(DEBIAN_BIN_DIRS) if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise PostgresNotInstalled(
            f"PostgreSQL's server programs (initdb, postgres) are neither on PATH nor in "
            f"{DEBIAN_BIN_DIRS}: the tests that run a real scheduler need them. Install "
            f"Debian's package: `{INSTALL}` (as root; run `apt-get update` first on a fresh machine)."
        )
    return versions[-1]


@dataclass(frozen=True)
class _RunAs:
    """Whom the server runs as: ``postgres`` when we are root (PostgreSQL refuses root), else us."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def _run_as() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs()
    try:
        user = pwd.getpwnam("postgres")
        return _RunAs(user.pw_uid, user.pw_gid, [])
    except KeyError as err:
        raise PostgresNotInstalled(
            f"PostgreSQL refuses to run as root and there is no `postgres` user to run it as; "
            f"Debian's package creates it: `{INSTALL}`."
        ) from err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running ``postgres`` process of a cluster in ``root`` (a temporary directory)."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` (psycopg2 driver), as ``sql_alchemy_conn`` takes it."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str = "template1") -> str:
        """Create database ``name`` as a copy of ``template`` (by default an empty one); its URL.

        Copying a migrated database takes a fraction of a second, a migration many seconds.
        """
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            connection.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop this server (fast shutdown: clients are disconnected) and remove its directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Immediate shutdown, then the process itself: never leave it behind.
                self.process.send_signal(signal.SIGQUIT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def start_postgres(timeout: float = 60) -> PostgresServer:
    """Start a private PostgreSQL server on a free port of 127.0.0.1; wait until it answers.

    :raises PostgresNotInstalled: PostgreSQL's programs or its ``postgres`` user are missing.
    """
    bin_dir = find_bin_dir()
    run_as = _run_as()
    # Not under pytest's tmp_path: its folders are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="afr-pg-"))
    if run_as.user is not None and run_as.group is not None:
        os.chown(root, run_as.user, run_as.group)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    try:
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(root / "data"),
                "--username",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=root,
            env=env,
            timeout=120,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(
            f"initdb failed ({err.returncode}): {err.stderr.decode(errors='replace')}"
        ) from err
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    # Another process may take the free port before the server binds it: then try another.
    for _ in range(3):
        server = _start_server(bin_dir, root, env, run_as, timeout)
        if server is not None:
            return server
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL could not bind a free port of 127.0.0.1 in three tries (see {root})")


def _start_server(
    bin_dir: Path, root: Path, env: dict[str, str], run_as: _RunAs, timeout: float
) -> PostgresServer | None:
    """The server on a free port once it answers; ``None`` if another process took that port."""
    import psycopg2

    port = _free_port()
    settings = {
        "port": port,
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": root,
        # A throwaway database: durability is not needed, speed on two busy cores is.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": 200,
    }
    command = [str(bin_dir / "postgres"), "-D", str(root / "data")]
    for name, value in settings.items():
        command += ["-c", f"{name}={value}"]
    with open(root / "postgres.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
        )
    server = PostgresServer(root, port, process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            if "Address already in use" in server._log_tail():
                return None
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"postgres exited with {process.returncode}: {server._log_tail()}")
        try:
            psycopg2.connect(
                host="127.0.0.1", port=port, user=USER, dbname="postgres", connect_timeout=2
            ).close()
            return server
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"PostgreSQL did not answer within {timeout} s: {server._log_tail()}"
                ) from None
            time.sleep(0.2)
