"""Per-task overhead and connection times of airflow-ray, against baselines measured in the same run.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/overhead.py [--repeat 7] [--smoke] [--airflow-db DB] [--embedded-dir DIR]

It creates a temporary AIRFLOW_HOME (SQLite) and its own embedded Ray cluster, and stops that
cluster at the end. Printed:

1. per-task overhead: one ``dag.test()`` process runs a DAG of trivial ``PythonOperator`` tasks
   and trivial ``RayPythonOperator`` tasks; task durations come from the metadata DB (start to
   end of each task instance). The first Ray task, which connects, is reported on its own.
2. connect plus first task, from a fresh process, for each connection mode, against the floor:
   a bare ``ray.init(address)`` plus one ``ray.get(f.remote())`` in a fresh process.

``--smoke`` runs the smallest sizes once (the test suite does, so that the script keeps
working); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

HOME = Path(tempfile.mkdtemp(prefix="afr-bench-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__RAY__EMBEDDED_DIR": str(HOME / "ray"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
)
(HOME / "dags").mkdir()

CONNECT_PROBE = """
import json, os, sys, time
started = time.perf_counter()
mode = sys.argv[1]
if mode == "raw":
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=sys.argv[3])
    import ray
    ray.init(address=sys.argv[2], log_to_driver=False)
    connected = time.perf_counter()
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
else:
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.cluster.transport import TaskSpec, run_in_cluster
    hook = RayHook(mode)
    hook.get_conn()
    connected = time.perf_counter()
    assert run_in_cluster(hook.get_transport(), TaskSpec(lambda: 1, (), {}, name="bench"), print) == 1
print(json.dumps({"connect": connected - started, "total": time.perf_counter() - started}))
"""


def trivial() -> int:
    return 1


def task_overhead(repeat: int) -> dict[str, object]:
    import pendulum
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.taskinstance import TaskInstance
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, chain
    from airflow.utils.session import create_session

    from airflow_ray import RayPythonOperator

    with DAG("bench_overhead", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
        plain = [PythonOperator(task_id=f"python_{i}", python_callable=trivial) for i in range(repeat)]
        ray_tasks = [
            RayPythonOperator(task_id=f"ray_{i}", python_callable=trivial) for i in range(repeat + 1)
        ]
        chain(*plain, *ray_tasks)
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent")
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    dag_run = dag.test()
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, run_id=dag_run.run_id).all()
        seconds = {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in tis}
        states = {ti.state for ti in tis}
    assert states == {"success"}, states
    python_median = statistics.median(seconds[f"python_{i}"] for i in range(repeat))
    ray_median = statistics.median(seconds[f"ray_{i}"] for i in range(1, repeat + 1))
    return {
        "python_median_s": python_median,
        "ray_median_s": ray_median,
        "ray_first_s (connects)": seconds["ray_0"],
        "ray_overhead_s": ray_median - python_median,
        "ratio": ray_median / python_median,
    }


def connect_times(repeat: int) -> list[tuple[str, float, float]]:
    from airflow_ray.cluster.local import EmbeddedCluster

    cluster = EmbeddedCluster.from_config()
    head = cluster.ensure_running()
    token = cluster.token()
    env = os.environ.copy()
    # A bound, not a figure: on a loaded machine Ray Client's connect can take longer than the
    # default 30 s, and the probe would fail instead of reporting it.
    env.setdefault("AIRFLOW__RAY__CONNECT_TIMEOUT", "120")
    env["AIRFLOW_CONN_RAY_GCS"] = json.dumps(
        {"conn_type": "ray", "host": head.gcs_address, "password": token}
    )
    env["AIRFLOW_CONN_RAY_CLIENT"] = json.dumps(
        {"conn_type": "ray", "host": head.client_address, "password": token}
    )
    modes = [
        ("floor: bare ray.init + task", ["raw", head.gcs_address, token]),
        ("embedded (ray_default, running)", ["ray_default"]),
        ("GCS address + token", ["ray_gcs"]),
        ("Ray Client ray://", ["ray_client"]),
    ]
    rows = []
    for label, args in modes:
        totals, connects = [], []
        for _ in range(repeat):
            out = subprocess.run(
                [sys.executable, "-c", CONNECT_PROBE, *args],
                env=env,
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(f"The probe of {label!r} exited {out.returncode}:\n{out.stderr[-4000:]}")
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            totals.append(figures["total"])
            connects.append(figures["connect"])
        rows.append((label, statistics.median(connects), statistics.median(totals)))
    return rows


def cold_start() -> float:
    """The embedded cluster's start, measured from a fresh state directory."""
    from airflow_ray.cluster.local import EmbeddedCluster

    cluster = EmbeddedCluster(HOME / "ray-cold")
    started = time.perf_counter()
    cluster.ensure_running()
    elapsed = time.perf_counter() - started
    cluster.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="the smallest run: each figure once")
    _common.add_options(parser)
    args = parser.parse_args()
    _common.use_cluster(args)
    if args.smoke:
        args.repeat = 1
        os.environ["AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY"] = str(300 * 1024 * 1024)
    _common.make_db(args, HOME)
    from airflow_ray.cluster.local import EmbeddedCluster

    try:
        cold = cold_start()
        overhead = task_overhead(args.repeat)
        rows = connect_times(1 if args.smoke else max(3, args.repeat // 2))
    finally:
        import ray

        # Before its cluster goes: a driver that outlives its GCS is killed by Ray after 60 s,
        # with what it had to say (a traceback) still unwritten.
        ray.shutdown()
        if _common.owns_cluster(args):
            EmbeddedCluster.from_config().stop()
    print(f"\n== per-task overhead, one dag.test() process, median of {args.repeat} ==")
    for name, value in overhead.items():
        print(f"  {name:28s} {value:8.3f}")
    print("\n== connect + first task from a fresh process (median, seconds) ==")
    floor = rows[0][2]
    print(f"  {'mode':34s} {'connect':>8s} {'+ task':>8s} {'vs floor':>9s}")
    for label, connect, total in rows:
        print(f"  {label:34s} {connect:8.2f} {total:8.2f} {total / floor:8.2f}x")
    print(f"\n  embedded cluster cold start (ray start --head until ready): {cold:.2f} s")


if __name__ == "__main__":
    main()
