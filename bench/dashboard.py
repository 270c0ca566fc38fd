"""What a Ray head's dashboard costs: start time, processes and memory, with and without it.

The embedded cluster always runs its dashboard (the Jobs API transport needs it). This starts a
head like it (``ray start --head --block``, 2 CPUs, 300 MB object store, in a session of its own)
with ``--include-dashboard=false`` and with ``true``, alternately, and reports for each:

- start: from ``ray start`` to the head being usable (with the dashboard: to its Jobs API
  answering, which is what the Jobs API transport waits for);
- processes of its session, and their proportional memory (PSS) once settled.

    .venv/bin/python bench/dashboard.py [--repeat 3] [--smoke]

``--smoke`` starts each kind once (the test suite does, so that the script keeps working).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.ports import free_ports
from scripts.ray_only_cluster import _session_members, stop_session

MB = 1024 * 1024
# How long a started head settles before its processes and memory are counted (a smoke run's
# figures mean nothing, so it counts at once).
SETTLE_S = 3.0
SMOKE_SETTLE_S = 0.0
TIMEOUT_S = 120.0


def _pss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total_kb / 1024


def start_head(dashboard: bool, workdir: Path, settle_s: float = SETTLE_S) -> tuple[float, int, float]:
    """Start a head; its start time (s), process count and PSS (MB); stopped before returning."""
    gcs, client, agent, metrics, port = free_ports(5)
    temp_dir = tempfile.mkdtemp(prefix="rdash-", dir="/tmp")  # Ray's socket paths must stay short
    # With a token of its own, as the embedded cluster: without RAY_AUTH_MODE, `ray start` turns
    # token auth on whenever ~/.ray/auth_token exists (any earlier local Ray may have made it),
    # and the readiness check would then wait for an answer that never comes.
    token = secrets.token_hex(32)
    token_file = Path(temp_dir) / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAY_"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    log = workdir / f"head-{'dash' if dashboard else 'plain'}-{time.time_ns()}.log"
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--ray-client-server-port={client}",
        f"--include-dashboard={'true' if dashboard else 'false'}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={port}", f"--dashboard-agent-listen-port={agent}",
        f"--metrics-export-port={metrics}", "--num-cpus=2", f"--object-store-memory={300 * MB}",
        "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        while not _ready(log, dashboard, port, token):
            if process.poll() is not None or time.monotonic() - started > TIMEOUT_S:
                raise RuntimeError(f"the head did not start: {log.read_text()[-3000:]}")
            time.sleep(0.05)
        took = time.monotonic() - started
        time.sleep(settle_s)
        members = _session_members(process.pid)
        return took, len(members), _pss_mb(members)
    finally:
        stop_session(process, 30)


def _ready(log: Path, dashboard: bool, port: int, token: str) -> bool:
    if b"Ray runtime started" not in log.read_bytes():
        return False
    if not dashboard:
        return True
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/version", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="starts of each kind (alternating)")
    parser.add_argument("--smoke", action="store_true", help="one start of each kind")
    args = parser.parse_args()
    repeat = 1 if args.smoke else args.repeat
    results: dict[bool, list[tuple[float, int, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as folder:
        for _ in range(repeat):
            for dashboard in (False, True):
                settle_s = SMOKE_SETTLE_S if args.smoke else SETTLE_S
                results[dashboard].append(start_head(dashboard, Path(folder), settle_s))
    print(f"Ray head, 2 CPUs, 300 MB object store; median of {repeat} start(s) of each kind")
    print(f"  {'':18} {'start_s':>8} {'processes':>10} {'pss_mb':>8}")
    medians = {}
    for dashboard, label in ((False, "without dashboard"), (True, "with dashboard")):
        runs = results[dashboard]
        medians[dashboard] = tuple(statistics.median(run[i] for run in runs) for i in range(3))
        start_s, processes, pss = medians[dashboard]
        print(f"  {label:18} {start_s:8.2f} {processes:10.0f} {pss:8.0f}")
    (base_s, base_n, base_mb), (dash_s, dash_n, dash_mb) = medians[False], medians[True]
    print(
        f"  dashboard / without: start {dash_s / base_s:.2f}x, processes {dash_n / base_n:.2f}x, pss {dash_mb / base_mb:.2f}x"
    )


if __name__ == "__main__":
    main()
