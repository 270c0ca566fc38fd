"""``airflow-ray``: manage the embedded local Ray cluster.

.. code-block:: console

    $ airflow-ray local start     # start it (or report the one running)
    $ airflow-ray local status    # exit code 0 when it runs, 3 when not
    $ airflow-ray local stop      # stop it, and only it
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from airflow_ray.exceptions import AirflowRayError


def _cluster(state_dir: str | None):  # type: ignore[no-untyped-def]
    from airflow_ray.cluster.local import EmbeddedCluster

    if state_dir:
        from airflow_ray import config

        return EmbeddedCluster(
            Path(state_dir),
            num_cpus=config.embedded_num_cpus(),
            object_store_memory=config.embedded_object_store_memory(),
        )
    return EmbeddedCluster.from_config()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="airflow-ray", description="Manage airflow-ray's embedded Ray cluster."
    )
    commands = parser.add_subparsers(dest="group", required=True)
    local = commands.add_parser("local", help="the embedded local Ray cluster")
    local.add_argument("action", choices=["start", "status", "stop"])
    local.add_argument("--dir", help="state directory (default: [ray] embedded_dir, or $AIRFLOW_HOME/ray)")
    args = parser.parse_args(argv)

    try:
        cluster = _cluster(args.dir)
        if args.action == "start":
            running = cluster.status()
            head = running or cluster.ensure_running()
            verb = "already running" if running else "started"
            print(
                f"Embedded Ray cluster {verb}: {head.gcs_address} (pid {head.pid}, state {cluster.state_dir})"
            )
            return 0
        if args.action == "status":
            head = cluster.status()
            if head is None:
                print(f"No embedded Ray cluster runs for {cluster.state_dir}")
                return 3
            print(
                f"Embedded Ray cluster running: {head.gcs_address} (pid {head.pid}, Ray {head.ray_version}, "
                f"client {head.client_address}, state {cluster.state_dir})"
            )
            return 0
        stopped = cluster.stop()
        print(
            "Embedded Ray cluster stopped"
            if stopped
            else f"No embedded Ray cluster ran for {cluster.state_dir}"
        )
        return 0
    except AirflowRayError as err:
        print(f"airflow-ray: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
