"""Object store use over 30 DAG runs that each pin 100 MB with RayXComBackend.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/retention.py [--runs 30] [--mb 100] [--keep-runs 3] [--smoke] [--airflow-db DB] [--embedded-dir DIR]

Prints the object store's bytes in use (the embedded cluster's own count) before the first run
(the baseline), after every run, and after ``airflow-ray pins release --all``; figures are in
units of one run's pin. With retention working, use never exceeds ``keep_runs`` pins above the
baseline, and returns to the baseline after the release.

``--smoke`` runs the smallest sizes (the test suite does, so that the script keeps working); its
figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

MB = 1024 * 1024


def pin(mb: int):
    import numpy as np

    return np.ones(mb * MB // 8)


def object_store_bytes_used(gcs_address: str) -> int:
    """Bytes the object store of the cluster reached through ``gcs_address`` holds right now."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    reply = get_memory_info_reply(get_state_from_address(gcs_address))
    return int(reply.store_stats.object_store_bytes_used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--keep-runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the smallest run: 3 runs of 1 MB, keeping 1")
    # With --embedded-dir, the figures are still the whole object store's use: pins that others
    # hold stay, and are counted in the baseline; the release at the end releases only this
    # run's deployment's pins (each run's fresh metadata DB makes a deployment of its own).
    _common.add_options(parser)
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.mb, args.keep_runs = 3, 1, 1
    home = Path(tempfile.mkdtemp(prefix="afr-retention-"))
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="false",
        AIRFLOW__CORE__XCOM_BACKEND="airflow_ray.xcom.backend.RayXComBackend",
        AIRFLOW__RAY__EMBEDDED_DIR=str(home / "ray"),
        AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY=str((300 if args.smoke else 2 * 1024) * MB),
        AIRFLOW__RAY__KEEP_RUNS=str(args.keep_runs),
        RAY_USAGE_STATS_ENABLED="0",
    )
    _common.use_cluster(args)
    (home / "dags").mkdir()
    _common.make_db(args, home)

    import pendulum
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.sdk import DAG

    from airflow_ray import RayPythonOperator
    from airflow_ray.cluster.local import EmbeddedCluster
    from airflow_ray.hooks.ray import RayHook

    with DAG("retention", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
        RayPythonOperator(
            task_id="pin", python_callable=pin, op_args=[args.mb], show_return_value_in_logs=False
        )
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent")
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    try:
        _owner = RayHook().get_transport().owner  # started first, so the baseline counts it
        address = EmbeddedCluster.from_config().status().gcs_address
        unit = args.mb * MB

        def used() -> float:
            time.sleep(0.5)  # frees are asynchronous
            return object_store_bytes_used(address)

        baseline = used()
        print(f"baseline: {baseline / MB:.1f} MB in use")
        peak = 0.0
        for run in range(1, args.runs + 1):
            dag.test()
            now = used()
            peak = max(peak, now)
            print(f"after run {run:2d}: {(now - baseline) / unit:5.2f} pins above baseline")
        release = subprocess.run(
            [sys.executable, "-m", "airflow_ray.cli", "pins", "release", "--all"],
            capture_output=True,
            text=True,
        )
        print(release.stdout.strip())
        final = used()
        print(f"\nruns: {args.runs} x {args.mb} MB, keep_runs={args.keep_runs}")
        print(f"peak above baseline:  {(peak - baseline) / unit:.2f} pins ({(peak - baseline) / MB:.0f} MB)")
        print(
            f"final above baseline: {(final - baseline) / unit:.2f} pins ({(final - baseline) / MB:.1f} MB)"
        )
    finally:
        import ray

        # Before its cluster goes: a driver that outlives its GCS is killed by Ray after 60 s,
        # with what it had to say (a traceback) still unwritten.
        ray.shutdown()
        if _common.owns_cluster(args):
            EmbeddedCluster.from_config().stop()


if __name__ == "__main__":
    main()
