"""The Jobs API transport against the driver transport, measured in the same run.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/transport.py [--repeat 5] [--sizes 10,1024] [--smoke] [--airflow-db DB] [--embedded-dir DIR]

It creates a temporary AIRFLOW_HOME (SQLite) with the Ray XCom backend and its own embedded
Ray cluster (with its dashboard, which the Jobs API needs), and stops that cluster at the end.
Everything runs in one ``dag.test()`` process. Printed:

1. per-task overhead of a trivial Ray task (median of ``--repeat``, after a warm-up task):
   driver, jobs, and jobs with ``deferrable=True`` (``dag.test()`` runs the trigger in line),
   and each one's ratio to the driver transport;
2. the hand-off of a numpy array from one Ray task to the next through two Airflow tasks
   (producer's last line to consumer's first line, median), per size and transport.

``--smoke`` runs the smallest sizes once (the test suite does, so that the script keeps
working); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import _common

HOME = Path(tempfile.mkdtemp(prefix="afr-bt-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__XCOM_BACKEND": "airflow_ray.xcom.backend.RayXComBackend",
        "AIRFLOW__RAY__EMBEDDED_DIR": str(HOME / "ray"),
        "AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY": str(3 * 1024**3),
        "AIRFLOW_CONN_RAY_JOBS": json.dumps({"conn_type": "ray", "extra": {"transport": "jobs"}}),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
)
(HOME / "dags").mkdir()
MB = 1024 * 1024
MODES = {
    "driver": {"ray_conn_id": "ray_default"},
    "jobs": {"ray_conn_id": "ray_jobs"},
    "jobs + deferrable": {"ray_conn_id": "ray_jobs", "deferrable": True, "poll_interval": 0.2},
}


def trivial() -> int:
    return 1


def produce(mb: int, stamp_file: str):
    import numpy as np

    value = np.ones(mb * MB // 8)
    Path(stamp_file).write_text(repr(time.time()))
    return value


def consume(value, stamp_file: str) -> int:
    Path(stamp_file).write_text(repr(time.time()))
    return int(value.nbytes)


def run(dag):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent")
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test()


def durations(dag_run) -> dict[str, float]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        assert {str(ti.state) for ti in tis} == {"success"}, {ti.task_id: ti.state for ti in tis}
        return {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in tis}


def task_overhead(repeat: int) -> dict[str, float]:
    import pendulum
    from airflow.sdk import DAG, chain

    from airflow_ray import RayPythonOperator

    medians = {}
    for label, arguments in MODES.items():
        dag_id = "overhead_" + label.replace(" + ", "_")
        with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            chain(
                *[
                    RayPythonOperator(task_id=f"t{i}", python_callable=trivial, **arguments)
                    for i in range(repeat + 1)
                ]
            )
        seconds = durations(run(dag))
        medians[label] = statistics.median(seconds[f"t{i}"] for i in range(1, repeat + 1))
        print(f"{label}: {[round(seconds[f't{i}'], 3) for i in range(repeat + 1)]}", flush=True)
    return medians


def handoff(sizes: list[int], repeat: int) -> dict[tuple[str, int], float]:
    import pendulum
    from airflow.sdk import DAG

    from airflow_ray import RayPythonOperator

    out, into = str(HOME / "produced"), str(HOME / "consumed")
    medians = {}
    for label in ("driver", "jobs"):
        arguments = MODES[label]
        for mb in sizes:
            times = []
            for attempt in range(repeat):
                dag_id = f"handoff_{label}_{mb}_{attempt}"
                with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
                    p = RayPythonOperator(
                        task_id="produce",
                        python_callable=produce,
                        op_args=[mb, out],
                        show_return_value_in_logs=False,
                        **arguments,
                    )
                    RayPythonOperator(
                        task_id="consume", python_callable=consume, op_args=[p.output, into], **arguments
                    )
                durations(run(dag))
                times.append(float(Path(into).read_text()) - float(Path(out).read_text()))
            medians[(label, mb)] = statistics.median(times)
            print(f"hand-off {label} {mb} MB: {[round(t, 3) for t in times]}", flush=True)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="10,1024", help="hand-off sizes in MB, comma-separated")
    parser.add_argument("--smoke", action="store_true", help="the smallest run: 1 MB, once")
    _common.add_options(parser)
    args = parser.parse_args()
    _common.use_cluster(args)
    if args.smoke:
        args.repeat, args.sizes = 1, "1"
        os.environ["AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY"] = str(300 * MB)
    _common.make_db(args, HOME)
    from airflow_ray.cluster.local import EmbeddedCluster

    sizes = [int(size) for size in args.sizes.split(",")]
    try:
        overhead = task_overhead(args.repeat)
        moved = handoff(sizes, 1 if args.smoke else max(3, args.repeat // 2))
    finally:
        if _common.owns_cluster(args):
            EmbeddedCluster.from_config().stop()
    print(f"\n== per-task time of a trivial Ray task, one dag.test() process, median of {args.repeat} ==")
    for label, seconds in overhead.items():
        print(f"  {label:20s} {seconds:7.3f} s  {seconds / overhead['driver']:6.2f}x driver")
    print("\n== hand-off between two Ray tasks (producer's end to consumer's start), median ==")
    for mb in sizes:
        driver, jobs = moved[("driver", mb)], moved[("jobs", mb)]
        print(f"  {mb:5d} MB  driver {driver:7.3f} s   jobs {jobs:7.3f} s   {jobs / driver:6.2f}x driver")


if __name__ == "__main__":
    main()
