"""The real topology: an Airflow API server, LocalExecutor, one process per task instance, and a
PostgreSQL metadata DB."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from scripts.ports import free_port
from tests.integration.airflow_processes import AirflowApiServer
from tests.integration.dagrun import xcom, xcom_row

pytestmark = pytest.mark.integration

DAG_FILES = Path(__file__).parent / "dag_files"


@pytest.fixture(scope="module")
def executor_env(ray_cluster, airflow_home, postgres_metadata_db, tmp_path_factory):
    """An `airflow api-server` for the task processes, and the environment of a LocalExecutor run."""
    dags = tmp_path_factory.mktemp("handoff-dags")  # this module's own DAGs folder
    for dag_file in DAG_FILES.glob("*.py"):
        shutil.copy(dag_file, dags / dag_file.name)
    port = free_port()
    env = os.environ.copy()
    env.update(
        {
            # A migrated PostgreSQL metadata DB of this module's own, as Airflow is deployed; this
            # process's sessions (which judge the run) read it too.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_metadata_db,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # On two busy cores an execution API call can exceed the 5 s default and fail a task
            # that did nothing wrong.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        }
    )
    server = AirflowApiServer.start_on(env, airflow_home / "api-server.log", port=port)
    try:
        yield env
    finally:
        server.stop()


def _latest_run_state(dag_id: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id).order_by(DagRun.id.desc()).first()
        return None if run is None else str(run.state)


# How long `airflow dags test --use-executor` may take to exit once the run has ended: it ends
# its LocalExecutor's workers, each after its task processes. Generous, for a loaded machine.
EXIT_WAIT_S = 120


def _wait_for_run(process: subprocess.Popen[str], deadline: float) -> str | None:
    """The handoff run's final state, once the CLI has exited or ``EXIT_WAIT_S`` after the run
    ended; ``None`` if the run has not ended by ``deadline``."""
    ended_at = None
    while time.monotonic() < deadline:
        state = _latest_run_state("handoff")
        if state in ("success", "failed"):
            ended_at = ended_at or time.monotonic()
            if process.poll() is not None or time.monotonic() - ended_at > EXIT_WAIT_S:
                return state
        elif process.poll() is not None:
            return _latest_run_state("handoff")
        time.sleep(1)
    return None


def _stacks_of_a_hang(process: subprocess.Popen[str], output: list[str]) -> str | None:
    """``None`` if the CLI exited; else every thread's stack in each of its processes.

    The CLI runs with ``PYTHONFAULTHANDLER=1``: SIGABRT makes each Python process of the tree
    (the CLI, its executor's workers, their task processes) write its threads' tracebacks to the
    collected output before it dies. Then the whole session is ended.
    """
    if process.poll() is not None:
        return None
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    names = [f"{p.pid}: {' '.join(p.cmdline()[:6])}" for p in tree if p.is_running()]
    before = len(output)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGABRT)
    time.sleep(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return "\n".join(names) + "\n" + "".join(output[before:])[-12000:]


def test_twenty_handoffs_across_task_processes(executor_env):
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "dags", "test", "handoff", "--use-executor"],
        env={**executor_env, "PYTHONFAULTHANDLER": "1"},  # stacks on SIGABRT (_stacks_of_a_hang)
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    collected: list[str] = []
    reader = threading.Thread(target=lambda: collected.extend(process.stdout), daemon=True)
    reader.start()
    state = _wait_for_run(process, deadline=started + 420)
    elapsed = time.monotonic() - started
    # A CLI that does not exit after its run (once seen here: "Shutting down LocalExecutor;
    # waiting for running tasks to finish", never done) fails the test with every process's
    # stacks, whatever the run's state: a process we leave behind would hang a real worker too.
    hang = _stacks_of_a_hang(process, collected)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # what the CLI's workers may have left behind
    process.wait()
    reader.join(timeout=10)
    if state != "success":
        output = "".join(collected)
        logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
        failed = [
            p.read_text()[-3000:]
            for p in logs.glob("dag_id=handoff/*/*/*.log")
            if '"level":"error","event":"Task failed' in p.read_text()
        ]
        pytest.fail(f"the handoff run ended {state!r} after {elapsed:.0f} s:\n{output[-4000:]}\n{failed[:2]}")
    assert hang is None, (
        f"the run succeeded, but `airflow dags test --use-executor` had not exited {EXIT_WAIT_S} s "
        f"later; its processes and their stacks:\n{hang}"
    )

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id="handoff").order_by(DagRun.id.desc()).first()
        tis = {
            ti.task_id: ti
            for ti in session.query(TaskInstance).filter_by(dag_id="handoff", run_id=dag_run.run_id)
        }
        assert {ti.state for ti in tis.values()} == {"success"}, {k: ti.state for k, ti in tis.items()}
        pids = {task_id: ti.pid for task_id, ti in tis.items()}
        windows = {task_id: (ti.start_date, ti.end_date) for task_id, ti in tis.items()}
        session.expunge_all()

    # Every task instance ran in a process of its own, and those processes are gone.
    assert len(set(pids.values())) == len(pids) and None not in pids.values()
    assert not any(psutil.pid_exists(pid) for pid in pids.values())
    for i in range(20):
        assert windows[f"produce_{i}"][1] <= windows[f"consume_{i}"][0]
        row = xcom_row(dag_run, f"produce_{i}")
        assert row["type"] == "numpy.ndarray" and row["size_bytes"] == 4 * 1024 * 1024
        # Each consumer got its own producer's array, read-only from the object store.
        assert xcom(dag_run, f"consume_{i}") == {"i": i, "ok": True, "size": 512 * 1024, "writeable": False}
    assert xcom(dag_run, "plain") == 3 * 512 * 1024
    bash_log = next(
        (Path(os.environ["AIRFLOW_HOME"]) / "logs").glob(
            f"dag_id=handoff/run_id={dag_run.run_id}/task_id=bash/*.log"
        )
    )
    assert "first=5" in bash_log.read_text()
    overlapping = sum(
        1 for a in windows.values() for b in windows.values() if a is not b and a[0] < b[1] and b[0] < a[1]
    )
    assert overlapping > 0, "no two task instances ran at the same time"
    print(f"handoff DAG: {len(tis)} task processes in {elapsed:.1f} s")
