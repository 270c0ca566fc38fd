"""Hand-off of a large value from one Ray task to the next, through Airflow, per XCom backend.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/handoff.py [--sizes 10,100,1000] [--kinds numpy,arrow,pandas] [--smoke]
        [--airflow-db DB] [--embedded-dir DIR]

For each size (MB) and kind of value, a DAG ``produce -> consume`` of two ``RayPythonOperator``
tasks runs in ``dag.test()``; the producer stamps the time just before it returns, the consumer
the time its callable starts. The hand-off is the difference: storing the result, ending the
first Airflow task, pushing and pulling the XCom, starting the second task and handing the
value to its Ray worker. Per backend, in a process of its own (Airflow picks the backend at
import time):

(a) RayXComBackend (this project);
(b) Airflow's default XCom backend (the value goes through the worker into the metadata DB);
(c) the common-io object-storage XCom backend on local disk (threshold 0: always to a file);
(d) the floor: the same two Ray calls from one Ray driver, ``consume.remote(produce.remote())``.

"bytes through the worker" is the growth of the Airflow worker's resident memory (sampled every
20 ms) during the run; "row" is the size of the XCom row in the metadata DB. (b) and (c) cannot
carry numpy arrays or Arrow tables at all (Airflow's serde raises TypeError); pandas DataFrames
they can, so that kind compares all four.

``--smoke`` runs the smallest sizes once, without the warm-up (the test suite does, so that the
script keeps working); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common

MB = 1024 * 1024
BACKENDS = {
    "a: RayXComBackend": "airflow_ray.xcom.backend.RayXComBackend",
    "b: default XCom": "airflow.sdk.bases.xcom.BaseXCom",
    "c: object storage (disk)": "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend",
}


def make_value(kind: str, mb: int):
    import numpy as np

    rows = mb * MB // 8 // 4
    if kind in ("numpy", "warmup"):
        return np.random.default_rng(0).random(mb * MB // 8)
    data = {f"c{i}": np.random.default_rng(i).random(rows) for i in range(4)}
    if kind == "arrow":
        import pyarrow as pa

        return pa.table(data)
    import pandas as pd

    return pd.DataFrame(data)


def stamp(path: str) -> None:
    Path(path).write_text(repr(time.time()))


def produce(kind: str, mb: int, stamp_file: str):
    value = make_value(kind, mb)
    stamp(stamp_file)
    return value


def consume(value, stamp_file: str) -> int:
    stamp(stamp_file)
    return int(getattr(value, "nbytes", 0) or value.memory_usage().sum())


def run_backend(
    label: str, kinds: list[str], sizes: list[int], home: Path, repeat: int, warm_up: bool = True
) -> list[dict]:
    """Runs in a child process whose XCom backend is already configured."""
    import pendulum
    import psutil
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from airflow_ray import RayPythonOperator

    DagBundlesManager().sync_bundles_to_db()
    results = []
    # The first run of the process pays one-off costs (the in-process API, connecting to Ray,
    # imports in the Ray workers); a small warm-up run keeps them out of the figures.
    for kind in ["warmup", *kinds] if warm_up else kinds:
        for mb in [1] if kind == "warmup" else [size for size in sizes for _ in range(repeat)]:
            out, into = str(home / "produced"), str(home / "consumed")
            dag_id = f"handoff_{kind}_{mb}"
            with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
                p = RayPythonOperator(
                    task_id="produce",
                    python_callable=produce,
                    op_args=[kind, mb, out],
                    show_return_value_in_logs=False,
                )
                RayPythonOperator(task_id="consume", python_callable=consume, op_args=[p.output, into])
            bag = DagBag(dag_folder="/nonexistent")
            bag.bag_dag(dag)
            sync_bag_to_db(bag, "dags-folder", None)
            me = psutil.Process()
            baseline = me.memory_info().rss
            peak = [baseline]
            done = threading.Event()

            def sample(me=me, peak=peak, done=done) -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], me.memory_info().rss)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            error = None
            try:
                dag_run = dag.test()
            except Exception as err:  # a backend that cannot carry the value
                error = f"{type(err).__name__}"
            finally:
                done.set()
                sampler.join()
            with create_session() as session:
                states = {
                    ti.task_id: ti.state
                    for ti in session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=dag_run.run_id)
                }
                row = (
                    session.query(XComModel)
                    .filter_by(dag_id=dag_id, run_id=dag_run.run_id, task_id="produce")
                    .first()
                )
                row_bytes = len(json.dumps(row.value)) if row is not None else 0
            ok = error is None and set(states.values()) == {"success"}
            handoff = float(Path(into).read_text()) - float(Path(out).read_text()) if ok else None
            Path(into).unlink(missing_ok=True)
            Path(out).unlink(missing_ok=True)
            if kind == "warmup":
                continue
            results.append(
                {
                    "backend": label,
                    "kind": kind,
                    "mb": mb,
                    "handoff_s": handoff,
                    "worker_mb": (peak[0] - baseline) / MB,
                    "row_bytes": row_bytes,
                    "error": None if ok else (error or f"failed: {states}"),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def run_floor(kinds: list[str], sizes: list[int], home: Path, repeat: int) -> list[dict]:
    import ray

    from airflow_ray.hooks.ray import RayHook

    RayHook().get_conn()
    remote_produce, remote_consume = ray.remote(produce), ray.remote(consume)
    ray.get(remote_consume.remote(remote_produce.remote("numpy", 1, str(home / "p")), str(home / "c")))
    results = []
    for kind in kinds:
        for mb in [size for size in sizes for _ in range(repeat)]:
            out, into = str(home / "produced"), str(home / "consumed")
            ray.get(remote_consume.remote(remote_produce.remote(kind, mb, out), into))
            handoff = float(Path(into).read_text()) - float(Path(out).read_text())
            results.append(
                {
                    "backend": "d: floor (one driver)",
                    "kind": kind,
                    "mb": mb,
                    "handoff_s": handoff,
                    "worker_mb": 0.0,
                    "row_bytes": 0,
                    "error": None,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--kinds", default="numpy,arrow,pandas")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per size for (a) and (d); the median is shown"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="the smallest run: 1 MB of numpy and pandas, once"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    _common.add_options(parser)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.kinds, args.repeat = "1", "numpy,pandas", 1
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    if args.child:
        home = Path(os.environ["AIRFLOW_HOME"])
        # (b) and (c) take tens of seconds per gigabyte: once is enough to see it.
        repeat = args.repeat if args.child in ("floor", "a: RayXComBackend") else 1
        if args.child == "floor":
            run_floor(kinds, sizes, home, repeat)
        else:
            run_backend(args.child, kinds, sizes, home, repeat, warm_up=not args.smoke)
        return

    home = Path(tempfile.mkdtemp(prefix="afr-handoff-"))
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="false",
        AIRFLOW__RAY__EMBEDDED_DIR=str(home / "ray"),
        AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY=str((300 if args.smoke else 6 * 1024) * MB),
        AIRFLOW__RAY__KEEP_RUNS="1",
        AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH=f"file://{home}/xcom",
        AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    _common.use_cluster(args, env)
    (home / "dags").mkdir()
    _common.make_db(args, home, env)
    rows: list[dict] = []
    failed = []
    running: list[tuple[str, subprocess.Popen[str]]] = []
    done: list[tuple[str, subprocess.Popen[str], str, str]] = []
    try:
        for index, (label, backend) in enumerate([*BACKENDS.items(), ("floor", "")]):
            child_env = dict(env, AIRFLOW__CORE__XCOM_BACKEND=backend) if backend else dict(env)
            if args.smoke:
                # A smoke run's figures mean nothing: its children run at once, each in an
                # AIRFLOW_HOME of its own (with a copy of the DB), on the same Ray cluster.
                child_home = home / f"child-{index}"
                (child_home / "dags").mkdir(parents=True)
                shutil.copyfile(home / "airflow.db", child_home / "airflow.db")
                child_env.update(
                    AIRFLOW_HOME=str(child_home), AIRFLOW__CORE__DAGS_FOLDER=str(child_home / "dags")
                )
            command = [
                sys.executable,
                __file__,
                "--child",
                label,
                "--sizes",
                args.sizes,
                "--kinds",
                args.kinds,
                "--repeat",
                str(args.repeat),
                *(["--smoke"] if args.smoke else []),
            ]
            child = subprocess.Popen(
                command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            if args.smoke:
                running.append((label, child))
            else:  # one at a time, so that no backend's figures are disturbed by another's run
                done.append((label, child, *child.communicate()))
        done += [(label, child, *child.communicate()) for label, child in running]
        for label, child, stdout, stderr in done:
            found = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
            if child.returncode or not found:
                print(stdout[-2000:], stderr[-3000:])
                failed.append(label)
            rows += found
    finally:
        for _, child in running:
            if child.poll() is None:  # interrupted: the others need not run on
                child.terminate()
                child.wait()
        if _common.owns_cluster(args):
            subprocess.run(
                [sys.executable, "-m", "airflow_ray.cli", "local", "stop"], env=env, capture_output=True
            )
    rows = _medians(rows)
    floor = {(r["kind"], r["mb"]): r["handoff_s"] for r in rows if r["backend"].startswith("d")}
    ours = {(r["kind"], r["mb"]): r["handoff_s"] for r in rows if r["backend"].startswith("a")}
    print(
        f"\n{'backend':26s} {'kind':7s} {'MB':>5s} {'hand-off s':>10s} {'vs floor':>8s} {'vs (a)':>7s} "
        f"{'worker MB':>9s} {'row bytes':>10s}"
    )
    for r in rows:
        key = (r["kind"], r["mb"])
        if r["error"]:
            print(f"{r['backend']:26s} {r['kind']:7s} {r['mb']:5d} {'cannot carry it: ' + r['error']}")
            continue
        vs_floor = r["handoff_s"] / floor[key] if floor.get(key) else float("nan")
        vs_ours = r["handoff_s"] / ours[key] if ours.get(key) else float("nan")
        print(
            f"{r['backend']:26s} {r['kind']:7s} {r['mb']:5d} {r['handoff_s']:10.3f} {vs_floor:7.2f}x {vs_ours:6.1f}x "
            f"{r['worker_mb']:9.0f} {r['row_bytes']:10d}"
        )
    if failed:
        raise SystemExit(f"The runs of {', '.join(failed)} failed: their output is above.")


def _medians(rows: list[dict]) -> list[dict]:
    """One row per (backend, kind, size): the median hand-off, the largest worker growth."""
    import statistics

    groups: dict[tuple[str, str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["backend"], row["kind"], row["mb"]), []).append(row)
    merged = []
    for group in groups.values():
        ok = [r for r in group if not r["error"]]
        if not ok:
            merged.append(group[0])
            continue
        merged.append(
            {
                **ok[0],
                "handoff_s": statistics.median(r["handoff_s"] for r in ok),
                "worker_mb": max(r["worker_mb"] for r in ok),
                "runs": len(ok),
            }
        )
    return merged


if __name__ == "__main__":
    main()
