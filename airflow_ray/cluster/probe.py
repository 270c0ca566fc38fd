"""Probe a Ray cluster from a child process: what ``RayHook.test_connection`` reports.

``test_connection`` runs in Airflow's API server (the UI's Test button). Connecting that process
to Ray would leave it a Ray driver for good, and Ray's core ends a driver's process 60 s after
its cluster stops: the UI and the execution API would go down with a Ray cluster. So the probe
connects in a child interpreter (``python -m airflow_ray.cluster.probe``) under a deadline, and
the calling process never loads Ray's core nor changes its environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from airflow_ray.cluster.address import AddressKind
from airflow_ray.exceptions import AirflowRayError, RayConnectionError

# Starting the child interpreter and importing Airflow and Ray, on top of the connect timeout.
START_ALLOWANCE = 30.0
_MARKER = "airflow-ray-probe: "


@dataclass(frozen=True)
class ClusterSummary:
    """What a cluster offers, as the probe saw it."""

    ray_version: str
    nodes: int
    cpus: float
    gpus: float

    def __str__(self) -> str:
        return f"{self.nodes} node(s), {self.cpus:g} CPU, {self.gpus:g} GPU"


def probe(
    address: str,
    kind: AddressKind,
    *,
    token: str | None,
    namespace: str,
    init_kwargs: dict[str, Any],
    where: str,
    timeout: float,
) -> ClusterSummary:
    """Connect to the cluster in a child process and return what it offers.

    :param address: what ``ray.init`` takes (``host:port``, ``ray://host:port``, ``auto``).
    :param timeout: seconds the child may take to connect (it gets :data:`START_ALLOWANCE` more
        to start); it is killed after that.
    :raises RayConnectionError: with the reason the child gave, or when it gave none in time.
    """
    request = {
        "address": address,
        "kind": kind.value,
        "token": token,
        "namespace": namespace,
        "init_kwargs": init_kwargs,
        "where": where,
        "timeout": timeout,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "airflow_ray.cluster.probe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Its own session, so that a kill at the deadline reaches anything it started.
        start_new_session=True,
    )
    try:
        out, err = child.communicate(json.dumps(request).encode(), timeout=timeout + START_ALLOWANCE)
    except subprocess.TimeoutExpired:
        _kill_session(child.pid)
        child.communicate()
        raise RayConnectionError(
            f"Probing the Ray cluster of {where} did not finish within {timeout + START_ALLOWANCE:.0f} s. "
            f"The cluster may be overloaded or behind a firewall; raise [ray] connect_timeout if it "
            f"is only slow."
        ) from None
    finally:
        if child.poll() is None:
            _kill_session(child.pid)
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(_MARKER):
            answer = json.loads(line[len(_MARKER) :])
            if "error" in answer:
                raise RayConnectionError(answer["error"])
            return ClusterSummary(**answer["summary"])
    tail = "\n".join(err.decode(errors="replace").splitlines()[-10:])
    raise RayConnectionError(
        f"Probing the Ray cluster of {where} failed: the probe process exited with code "
        f"{child.returncode} and no answer. Its output ends with:\n{tail}"
    )


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _connect_and_describe(request: dict[str, Any]) -> ClusterSummary:
    from airflow_ray.cluster import connect

    init_kwargs = {
        "namespace": request["namespace"],
        "log_to_driver": False,
        **request["init_kwargs"],
    }
    connect.attach(
        request["address"],
        AddressKind(request["kind"]),
        token=request["token"],
        init_kwargs=init_kwargs,
        where=request["where"],
        timeout=float(request["timeout"]),
    )
    import ray

    resources = ray.cluster_resources()
    return ClusterSummary(
        ray_version=ray.__version__,
        nodes=len([node for node in ray.nodes() if node.get("Alive")]),
        cpus=float(resources.get("CPU", 0)),
        gpus=float(resources.get("GPU", 0)),
    )


def main() -> None:
    """The child: read the request from stdin, answer one marked JSON line on stdout."""
    request = json.loads(sys.stdin.read())
    try:
        answer: dict[str, Any] = {"summary": asdict(_connect_and_describe(request))}
    except AirflowRayError as err:
        answer = {"error": str(err)}
    sys.stdout.write(_MARKER + json.dumps(answer) + "\n")
    sys.stdout.flush()
    # Not ray.shutdown(): the answer is out, and nothing here needs a clean disconnect.
    os._exit(0)


if __name__ == "__main__":
    main()
