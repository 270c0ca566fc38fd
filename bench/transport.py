"""The Jobs API transport against the driver transport, measured in the same run.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/transport.py [--repeat 5] [--sizes 10,1024] [--smoke] [--airflow-db DB] [--embedded-dir DIR]

It creates a temporary AIRFLOW_HOME (SQLite) with the Ray XCom backend and its own embedded
Ray cluster (with its dashboard, which the Jobs API needs), and stops that cluster at the end.
Everything runs in one ``dag.test()`` process. Printed:

1. per-task overhead of a trivial Ray task (median of ``--repeat``, after a warm-up task):
   driver, jobs, and jobs with ``deferrable=True`` (``dag.test()`` runs the trigger in line),
   and each one's ratio to the driver transport;
2. the floor of the Jobs API design, one Ray job per task, measured over the same HTTP client
   (our ``JobsClient``) and followed as our transport follows a job (its status and log every
   ``POLL_INTERVAL``), from submit to the end seen: a job whose entrypoint does nothing, then
   the steps a task's job adds one at a time (``import ray``, ``ray.init()`` as the job's
   driver, our runtime_env packages), so that what our jobs cost beyond them shows;
3. the hand-off of a numpy array from one Ray task to the next through two Airflow tasks
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


# The steps of a task's Ray job, one added at a time: (label, entrypoint, with our runtime_env).
# The python is the one our transport runs (the cluster's, here this one).
FLOOR_STEPS = [
    ("one Ray job: entrypoint `true`", "true", False),
    ("+ python -c 'import ray'", "{python} -c 'import ray'", False),
    ("+ ray.init() as the job's driver", "{python} -c 'import ray; ray.init(log_to_driver=False)'", False),
    ("+ our runtime_env packages", "{python} -c 'import ray; ray.init(log_to_driver=False)'", True),
]


def job_floor(repeat: int) -> list[tuple[str, float]]:
    """Median seconds from submit to the end seen, per step of :data:`FLOOR_STEPS`."""
    import shlex
    import uuid

    from ray.job_submission import JobStatus

    from airflow_ray.cluster.jobs import POLL_INTERVAL, _remote_package, _zip
    from airflow_ray.cluster.jobs_api import JobsClient
    from airflow_ray.hooks.ray import RayHook

    hook = RayHook("ray_jobs")
    client = JobsClient(hook.jobs_endpoint())
    python = shlex.quote(hook.settings.python)
    rows = []
    try:
        for label, command, packages in FLOOR_STEPS:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                request: dict[str, object] = {
                    "entrypoint": command.format(python=python),
                    "entrypoint_num_cpus": 0,
                }
                if packages:
                    # As a task's job: the package of airflow_ray._remote (uploaded once, then found),
                    # and a payload of its own (uploaded every time).
                    remote_uri, remote_zip = _remote_package()
                    payload_uri, payload_zip = _zip({"payload": uuid.uuid4().bytes})
                    for uri, data in ((remote_uri, remote_zip), (payload_uri, payload_zip)):
                        if not client.package_exists(uri):
                            client.upload_package(uri, data)
                    request["runtime_env"] = {"py_modules": [remote_uri], "working_dir": payload_uri}
                submission_id = client.submit(request)
                while True:
                    info = client.info(submission_id) or {}
                    client.logs(submission_id)
                    if JobStatus(info["status"]).is_terminal():
                        break
                    time.sleep(POLL_INTERVAL)
                assert info["status"] == JobStatus.SUCCEEDED, info
                times.append(time.perf_counter() - started)
            rows.append((label, statistics.median(times)))
            print(f"{label}: {[round(t, 3) for t in times]}", flush=True)
    finally:
        client.close()
    return rows


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
        floor = job_floor(args.repeat)
        moved = handoff(sizes, 1 if args.smoke else max(3, args.repeat // 2))
    finally:
        import ray

        # Before its cluster goes: a driver that outlives its GCS is killed by Ray after 60 s,
        # with what it had to say (a traceback) still unwritten.
        ray.shutdown()
        if _common.owns_cluster(args):
            EmbeddedCluster.from_config().stop()
    print(f"\n== per-task time of a trivial Ray task, one dag.test() process, median of {args.repeat} ==")
    for label, seconds in overhead.items():
        print(f"  {label:20s} {seconds:7.3f} s  {seconds / overhead['driver']:6.2f}x driver")
    base = floor[0][1]
    print("\n== the floor of the Jobs API: one Ray job per task, followed as our transport does, median ==")
    for label, seconds in floor:
        print(f"  {label:36s} {seconds:7.3f} s  {seconds / base:6.2f}x floor")
    for label in ("jobs", "jobs + deferrable"):
        print(f"  {'our task, ' + label:36s} {overhead[label]:7.3f} s  {overhead[label] / base:6.2f}x floor")
    print("\n== hand-off between two Ray tasks (producer's end to consumer's start), median ==")
    for mb in sizes:
        driver, jobs = moved[("driver", mb)], moved[("jobs", mb)]
        print(f"  {mb:5d} MB  driver {driver:7.3f} s   jobs {jobs:7.3f} s   {jobs / driver:6.2f}x driver")


if __name__ == "__main__":
    main()
