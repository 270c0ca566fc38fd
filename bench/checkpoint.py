"""Checkpoint write and restore throughput against raw boto3 on the same S3 server, in one run.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/checkpoint.py [--sizes 100,1000] [--kinds numpy,arrow] [--repeat 3] [--smoke]
        [--embedded-dir DIR]

A real S3 server (``rclone serve s3`` on a temporary folder, on 127.0.0.1) and a private
embedded Ray cluster are started for the run. For each kind and size (MB), a value is made by a
Ray task and pinned by the owner actor, as a task's result is. Then, median of ``--repeat``:

- raw: boto3's managed transfer (``upload_fileobj`` / ``download_fileobj``, default
  TransferConfig: 8 MB parts, 10 threads) of the checkpoint file's exact bytes, from and into
  memory in this process: the baseline;
- (B) cluster, what airflow-ray does: a Ray task writes the value from the object store to S3
  (encode + sha256 + multipart upload), and restores it (ranged GETs + sha256 check + decode)
  into the object store, pinned by the owner, timed from the Airflow side;
- (A) worker: the same encoder and reader run in this process after ``ray.get`` (write), and
  with a ``ray.put`` after the read (restore): the bytes pass through the Airflow worker.

The ratio is raw time / our time: 1.0x is raw boto3's throughput, the goal is at least 0.7x.
``--smoke`` runs the smallest sizes once (the test suite does, so that the script keeps
working); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def make_value(kind: str, mb: int):  # runs in Ray
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "numpy":
        return rng.random(mb * MB // 8)
    import pyarrow as pa

    rows = mb * MB // 8 // 8
    return pa.table({f"c{i}": rng.random(rows) for i in range(8)})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000", help="MB, comma-separated")
    parser.add_argument("--kinds", default="numpy,arrow")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the smallest run: 1 MB, once")
    _common.add_options(parser, db=False)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = "1", 1
    home = Path(tempfile.mkdtemp(prefix="afr-ckb-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__RAY__EMBEDDED_DIR": str(home / "ray"),
            "AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY": str((300 if args.smoke else 6 * 1024) * MB),
            "RAY_USAGE_STATS_ENABLED": "0",
            "AWS_EC2_METADATA_DISABLED": "true",
            # No metadata DB here (it calls airflow_ray directly): the deployment's id, which
            # names the owner actors, is given instead of read from the DB.
            "AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT": "benchcheckpoint",
        }
    )
    _common.use_cluster(args)
    sys.path.insert(0, str(REPO))
    from scripts.local_s3 import start_rclone

    server = start_rclone(home / "s3")
    os.environ["AIRFLOW_CONN_AWS_BENCH"] = server.connection()
    from airflow_ray.cluster.local import EmbeddedCluster

    try:
        rows = run(
            server,
            [k for k in args.kinds.split(",") if k],
            [int(s) for s in args.sizes.split(",")],
            args.repeat,
        )
    finally:
        import ray

        ray.shutdown()  # before its cluster goes: a driver outliving its GCS is killed by Ray
        if _common.owns_cluster(args):
            EmbeddedCluster.from_config().stop()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print()
    print(f"median of {args.repeat}; ratio = raw boto3 time / time (goal >= 0.7x)")
    header = f"{'kind':6} {'size':>7} {'file MB':>8} | {'raw up':>7} {'(B) write':>10} {'(A) write':>10} | {'raw down':>8} {'(B) restore':>11} {'(A) restore':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['kind']:6} {r['mb']:>5}MB {r['file_mb']:>8.0f} | {r['raw_up']:>6.2f}s "
            f"{r['b_write']:>5.2f}s {r['raw_up'] / r['b_write']:>3.2f}x {r['a_write']:>5.2f}s {r['raw_up'] / r['a_write']:>3.2f}x | "
            f"{r['raw_down']:>7.2f}s {r['b_restore']:>6.2f}s {r['raw_down'] / r['b_restore']:>3.2f}x "
            f"{r['a_restore']:>6.2f}s {r['raw_down'] / r['a_restore']:>3.2f}x"
        )


def run(server, kinds: list[str], sizes: list[int], repeat: int) -> list[dict]:
    import ray

    from airflow_ray._remote.checkpoint_io import read_checkpoint, write_checkpoint
    from airflow_ray._remote.protocol import Producer
    from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
    from airflow_ray.cluster.transport import Input, TaskSpec, run_in_cluster
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.results.persist import write_from_cluster
    from airflow_ray.results.restore import restore
    from airflow_ray.xcom.reference import RayXComReference

    bucket = server.create_bucket("bench")
    location = CheckpointLocation("aws_bench", bucket, "bench")
    store = CheckpointStore(location)
    access = store.preflight()
    client = server.client()
    transport = RayHook().get_transport()
    owner = transport.owner
    rows = []
    for kind in kinds:
        for mb in sizes:
            producer = Producer("bench", "r", f"{kind}{mb}")
            run_in_cluster(
                transport,
                TaskSpec(make_value, (kind, mb), {}, name="make", pin=producer),
                lambda text: None,
                logging.getLogger("bench"),
            )
            reference = RayXComReference(
                "ray_default", transport.namespace, transport.owner_name, producer, {}, location.to_json()
            )
            times: dict[str, list[float]] = {
                key: [] for key in ("raw_up", "raw_down", "b_write", "b_restore", "a_write", "a_restore")
            }
            prefix = location.key_prefix(producer)
            file_bytes = 0
            for _ in range(repeat):
                started = time.perf_counter()
                [manifest] = write_from_cluster(
                    store,
                    transport,
                    [(producer, Input(reference.pin, reference.owner))],
                    s3=access,
                    on_output=lambda t: None,
                )
                times["b_write"].append(time.perf_counter() - started)
                data = client.get_object(Bucket=bucket, Key=prefix + manifest["object"])["Body"].read()
                file_bytes = len(data)

                started = time.perf_counter()
                client.upload_fileobj(io.BytesIO(data), bucket, "raw/object")
                times["raw_up"].append(time.perf_counter() - started)
                sink = io.BytesIO()
                started = time.perf_counter()
                client.download_fileobj(bucket, "raw/object", sink)
                times["raw_down"].append(time.perf_counter() - started)
                assert sink.getbuffer().nbytes == file_bytes
                del data, sink

                ray.get(owner.release.remote([reference.pin]))
                started = time.perf_counter()
                assert restore(reference, transport)
                times["b_restore"].append(time.perf_counter() - started)

                started = time.perf_counter()
                value = ray.get(ray.get(owner.get.remote(reference.pin))[0])
                write_checkpoint(value, access, bucket, "worker/" + prefix, producer.to_wire())
                times["a_write"].append(time.perf_counter() - started)
                del value
                started = time.perf_counter()
                put = ray.put(read_checkpoint(access, bucket, "worker/" + prefix, allow_pickle=False))
                times["a_restore"].append(time.perf_counter() - started)
                del put
            row = {
                "kind": kind,
                "mb": mb,
                "file_mb": file_bytes / MB,
                **{k: statistics.median(v) for k, v in times.items()},
            }
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            rows.append(row)
            ray.get(owner.release.remote([reference.pin]))
    return rows


if __name__ == "__main__":
    main()
