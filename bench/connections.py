"""What shipping Airflow connections to a Ray task (``airflow_conn_ids``) costs per task.

The connections are read on the Airflow worker through Airflow's own layers (here the
environment backend, as ``AIRFLOW_CONN_*``), travel inside the task's request, and are set in
the Ray worker's environment only while the callable runs, their secrets masked in its output.
This measures each of those steps against the same task without connections, in one process:
the Ray hop itself is the same with and without them (a few hundred more bytes in the request).

    .venv/bin/python bench/connections.py [--connections 3] [--repeat 200] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def trivial() -> int:
    print("a line of output")
    return 1


class DroppingOwner:
    """Stands for the owner actor that a task body sends its output to (``output.remote``), and
    drops it: the body runs here, with no cluster."""

    def __init__(self) -> None:
        self.output = self

    def remote(self, call_id: str, text: str) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=3, help="connections the task names")
    parser.add_argument("--repeat", type=int, default=200, help="runs of each step (the median is shown)")
    parser.add_argument(
        "--smoke", action="store_true", help="one connection, few runs: checks the script runs"
    )
    options = parser.parse_args()
    if options.smoke:
        options.connections, options.repeat = 1, 5

    # Connections from the environment only: no Airflow home or metadata DB of the user's.
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-connections-")
    ids = [f"bench_conn_{index}" for index in range(options.connections)]
    for conn_id in ids:
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIAEXAMPLEKEYID",
                "password": "a-secret-access-key-of-forty-characters!",
                "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "us-east-1"},
            }
        )

    from airflow_ray._remote.task import run_streaming
    from airflow_ray.operators.connections import shipped_connections

    started = time.perf_counter()
    shipped_connections(ids[:1], "bench.task")
    cold = (time.perf_counter() - started) * 1000
    # A task reads its ray connection first (RayHook): Airflow's secrets backends are loaded.
    started = time.perf_counter()
    environ = shipped_connections(ids, "bench.task")
    first = (time.perf_counter() - started) * 1000
    resolve = median_ms(lambda: shipped_connections(ids, "bench.task"), options.repeat)
    report = (DroppingOwner(), "bench")
    with contextlib.redirect_stdout(io.StringIO()):  # the task body also echoes what it captures
        bare = median_ms(lambda: list(run_streaming(trivial, (), {}, report=report)), options.repeat)
        named = median_ms(
            lambda: list(run_streaming(trivial, (), {}, environ=environ, report=report)), options.repeat
        )
    added = len(pickle.dumps(environ))

    print(f"{options.connections} connection(s), median of {options.repeat} runs")
    # The first read in a process loads Airflow's secrets backends; a task's RayHook has done so.
    print(f"  first read in a fresh process        {cold:8.2f} ms  (1 connection)")
    print(f"  read on the worker, first time       {first:8.2f} ms")
    print(f"  read on the worker                   {resolve:8.2f} ms")
    print(f"  task body without connections        {bare:8.2f} ms")
    print(f"  task body with them                  {named:8.2f} ms  {named / bare:5.2f}x")
    print(f"  request grows by                     {added:8d} bytes")
    per_task = resolve + max(named - bare, 0.0)
    print(f"  overhead per task                    {per_task:8.2f} ms")


if __name__ == "__main__":
    try:
        main()
    finally:
        if "bench-connections-" in os.environ.get("AIRFLOW_HOME", ""):
            shutil.rmtree(os.environ["AIRFLOW_HOME"], ignore_errors=True)
